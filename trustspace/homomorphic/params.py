"""Encryption parameters and the 128-bit security check.

The caps are the HomomorphicEncryption.org security standard (Albrecht et al., 2018,
table "classical, ternary secret, 128-bit"), which Microsoft SEAL also enforces by default:
the total coefficient modulus may be at most 109 bits for N = 4096, 218 for 8192,
438 for 16384 and 881 for 32768.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import HomomorphicRefused, RefusalReason

#: Maximum total coefficient-modulus bits for 128-bit classical security, by degree N.
#: Degrees below 4096 are refused outright: their caps (27/54 bits) leave no usable depth.
MAX_COEFF_MODULUS_BITS_128: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


class Scheme(enum.Enum):
    CKKS = "ckks"
    BFV = "bfv"


@dataclass(frozen=True)
class ContextParams:
    """What the provider needs to know about a consumer's context."""

    scheme: Scheme
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    plain_modulus: int | None  # BFV only

    @property
    def total_coeff_modulus_bits(self) -> int:
        return sum(self.coeff_modulus_bits)

    @property
    def slot_count(self) -> int:
        """Usable slots of one ciphertext: N/2 for CKKS; for BFV we use one batching row
        (N/2) too, because TenSEAL's rotate-and-sum fails on a full N-slot BFV vector."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Number of rescalings (CKKS) available: primes minus the special prime minus one."""
        return max(len(self.coeff_modulus_bits) - 2, 0)


def check_security(params: ContextParams, *, allowed_schemes: frozenset[Scheme]) -> None:
    """Raise HomomorphicRefused unless ``params`` give 128-bit security and an allowed scheme."""
    if params.scheme not in allowed_schemes:
        raise HomomorphicRefused(
            RefusalReason.SCHEME_NOT_ALLOWED, f"scheme {params.scheme.value} not allowed"
        )
    n = params.poly_modulus_degree
    cap = MAX_COEFF_MODULUS_BITS_128.get(n)
    if cap is None:
        raise HomomorphicRefused(
            RefusalReason.INSECURE_PARAMETERS,
            f"poly modulus degree {n} not in {sorted(MAX_COEFF_MODULUS_BITS_128)}",
        )
    total = params.total_coeff_modulus_bits
    if total > cap:
        raise HomomorphicRefused(
            RefusalReason.INSECURE_PARAMETERS,
            f"coefficient modulus {total} bits exceeds the 128-bit cap {cap} for N={n}",
        )

"""Provider-side checks on what a consumer sends: its public context and its ciphertexts.

Every check runs before the expensive or risky step it guards: the byte-size limit before
any parsing, the secret-key and parameter checks before TenSEAL loads the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _tenseal
from .errors import HomomorphicRefused, RefusalReason
from .params import ContextParams, Scheme, check_security

ALL_SCHEMES = frozenset(Scheme)

#: SEAL's per-ciphertext framing and TenSEAL's protobuf wrapping, generously.
_CIPHERTEXT_OVERHEAD = 4096


@dataclass(frozen=True)
class PublicContext:
    """A consumer's public context, checked: no secret key, 128-bit parameters."""

    params: ContextParams
    ts: _tenseal.TsContext

    @property
    def has_galois_keys(self) -> bool:
        return self.ts.has_galois_keys()

    @property
    def has_relin_keys(self) -> bool:
        return self.ts.has_relin_keys()


def _check_size(data: bytes, max_bytes: int, what: str) -> None:
    if len(data) > max_bytes:
        raise HomomorphicRefused(
            RefusalReason.TOO_LARGE, f"{what} is {len(data)} bytes, limit {max_bytes}"
        )


def load_public_context(
    data: bytes, *, max_bytes: int, allowed_schemes: frozenset[Scheme] = ALL_SCHEMES
) -> PublicContext:
    """Parse a consumer's public context or raise HomomorphicRefused."""
    _check_size(data, max_bytes, "context")
    try:
        params, has_secret = _tenseal.peek_context(data)
    except ValueError as e:
        raise HomomorphicRefused(RefusalReason.MALFORMED, str(e)) from None
    if has_secret:
        raise HomomorphicRefused(RefusalReason.SECRET_KEY, "context carries a secret key")
    check_security(params, allowed_schemes=allowed_schemes)
    try:
        ctx = _tenseal.context_from(data)
    except ValueError as e:
        raise HomomorphicRefused(RefusalReason.MALFORMED, str(e)) from None
    # Belt and braces: what TenSEAL loaded must be what we checked.
    if ctx.is_private():
        raise HomomorphicRefused(RefusalReason.SECRET_KEY, "context carries a secret key")
    if ctx.loaded_degree_and_bits() != (
        params.poly_modulus_degree,
        params.total_coeff_modulus_bits,
    ):
        raise HomomorphicRefused(RefusalReason.MALFORMED, "parameters changed while loading")
    return PublicContext(params, ctx)


def ciphertext_byte_limit(params: ContextParams) -> int:
    """Bytes of one uncompressed fresh ciphertext (2 polynomials × N × primes × 8) plus framing:
    a sensible ``max_bytes`` for :func:`load_ciphertext`."""
    primes = len(params.coeff_modulus_bits)
    return 2 * params.poly_modulus_degree * primes * 8 + _CIPHERTEXT_OVERHEAD


def load_ciphertext(
    ctx: PublicContext, data: bytes, *, max_bytes: int, expected_size: int
) -> _tenseal.TsVector:
    """Parse one CKKS/BFV vector under ``ctx`` or raise HomomorphicRefused."""
    _check_size(data, max_bytes, "ciphertext")
    if not data:
        raise HomomorphicRefused(RefusalReason.MALFORMED, "empty ciphertext")
    try:
        vec = _tenseal.vector_from(ctx.ts, ctx.params.scheme, data)
    except ValueError as e:
        raise HomomorphicRefused(RefusalReason.MALFORMED, str(e)) from None
    if vec.size() != expected_size:
        raise HomomorphicRefused(
            RefusalReason.WRONG_SIZE, f"vector size {vec.size()}, expected {expected_size}"
        )
    return vec

"""A small typed wrapper around TenSEAL (which ships no type stubs).

Everything that touches ``tenseal`` lives here; the rest of the package sees typed objects.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts  # type: ignore[import-untyped]
import tenseal.sealapi as sealapi  # type: ignore[import-untyped]

from .params import ContextParams, Scheme

_PARSE_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError)


# --- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ------------------
# TenSEALContextProto: 1 encryption_parameters (bytes), 2 public_context, 3 private_context,
# 4 encryption_type; TenSEALPrivateProto: 1 secret_key (bytes).  See tenseal/proto/*.proto.


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError("varint too long")


def _fields(data: bytes) -> dict[int, list[bytes]]:
    """Top-level length-delimited fields of a protobuf message (others skipped)."""
    out: dict[int, list[bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            out.setdefault(number, []).append(data[pos : pos + length])
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(data):
        raise ValueError("truncated message")
    return out


def peek_context(data: bytes) -> tuple[ContextParams, bool]:
    """Read a serialized TenSEAL context's parameters and whether it carries a secret key,
    without loading its keys.  Raises ValueError on malformed bytes."""
    top = _fields(data)
    if len(top.get(1, [])) != 1:
        raise ValueError("no encryption parameters")
    has_secret = any(_fields(p).get(1, [b""])[0] for p in top.get(3, []))
    return _parameters(top[1][0]), has_secret


@functools.lru_cache(maxsize=64)
def _parameters(blob: bytes) -> ContextParams:
    """SEAL's reading of an encryption-parameter blob. Remembered by its bytes: every context
    made for one catalog program carries the same ~85 bytes, and SEAL's load re-checks each
    modulus for primality with random draws (~5 ms on a VM whose RDSEED is slow). Failures
    raise and are not remembered."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.NONE)
    fd, path = tempfile.mkstemp(prefix="ts-parms-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        try:
            parms.load(path)  # SEAL's loader validates header and sizes
        except _PARSE_ERRORS as e:
            raise ValueError(f"encryption parameters: {e}") from e
    finally:
        os.unlink(path)
    scheme_raw = parms.scheme()
    if scheme_raw == sealapi.SCHEME_TYPE.CKKS:
        scheme, plain = Scheme.CKKS, None
    elif scheme_raw == sealapi.SCHEME_TYPE.BFV:
        scheme, plain = Scheme.BFV, int(parms.plain_modulus().value())
    else:
        raise ValueError(f"unsupported scheme {scheme_raw}")
    bits = tuple(int(m.bit_count()) for m in parms.coeff_modulus())
    return ContextParams(scheme, int(parms.poly_modulus_degree()), bits, plain)


class TsContext:
    """A TenSEAL context (public or private)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def raw(self) -> Any:
        return self._raw

    def is_private(self) -> bool:
        return bool(self._raw.is_private())

    def has_galois_keys(self) -> bool:
        return bool(self._raw.has_galois_keys())

    def has_relin_keys(self) -> bool:
        return bool(self._raw.has_relin_keys())

    def loaded_degree_and_bits(self) -> tuple[int, int]:
        """Degree and total modulus bits as TenSEAL actually loaded them."""
        key = self._raw.data.seal_context().key_context_data()
        return int(key.parms().poly_modulus_degree()), int(key.total_coeff_modulus_bit_count())

    def serialize(self, *, secret_key: bool, galois_keys: bool, relin_keys: bool) -> bytes:
        return bytes(
            self._raw.serialize(
                save_public_key=True,
                save_secret_key=secret_key,
                save_galois_keys=galois_keys,
                save_relin_keys=relin_keys,
            )
        )


class TsVector:
    """A CKKS or BFV encrypted vector."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def size(self) -> int:
        return int(self._raw.size())

    def mul_plain(self, values: Sequence[float] | Sequence[int] | npt.NDArray[Any]
                  ) -> TsVector:
        # NumPy arrays go through as they are (TenSEAL reads them without a Python list)
        return TsVector(self._raw * (values if isinstance(values, np.ndarray) else list(values)))

    def add(self, other: TsVector) -> TsVector:
        return TsVector(self._raw + other._raw)

    def add_plain(self, values: Sequence[float] | Sequence[int] | npt.NDArray[Any]
                  ) -> TsVector:
        return TsVector(self._raw + (values if isinstance(values, np.ndarray) else list(values)))

    def polyval(self, coefficients: Sequence[float]) -> TsVector:
        return TsVector(self._raw.polyval(list(coefficients)))

    def sum(self) -> TsVector:
        return TsVector(self._raw.sum())

    def serialize(self) -> bytes:
        return bytes(self._raw.serialize())

    def decrypt(self) -> list[float]:
        return [float(x) for x in self._raw.decrypt()]


def context_from(data: bytes) -> TsContext:
    try:
        return TsContext(ts.context_from(data))
    except _PARSE_ERRORS as e:
        raise ValueError(f"context: {e}") from e


def new_ckks(degree: int, bits: Sequence[int], scale_bits: int, *, galois: bool) -> TsContext:
    raw = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=list(bits))
    raw.global_scale = 2.0**scale_bits
    if galois:
        raw.generate_galois_keys()
    return TsContext(raw)


def new_bfv(degree: int, plain_modulus: int, *, galois: bool) -> TsContext:
    raw = ts.context(ts.SCHEME_TYPE.BFV, degree, plain_modulus)
    if galois:
        raw.generate_galois_keys()
    return TsContext(raw)


def encrypt(ctx: TsContext, scheme: Scheme,
            values: Sequence[float] | Sequence[int] | npt.NDArray[Any]) -> TsVector:
    if scheme is Scheme.CKKS:
        return TsVector(ts.ckks_vector(ctx.raw, [float(v) for v in values]))
    return TsVector(ts.bfv_vector(ctx.raw, [int(v) for v in values]))


def vector_from(ctx: TsContext, scheme: Scheme, data: bytes) -> TsVector:
    try:
        if scheme is Scheme.CKKS:
            return TsVector(ts.ckks_vector_from(ctx.raw, data))
        return TsVector(ts.bfv_vector_from(ctx.raw, data))
    except _PARSE_ERRORS as e:
        raise ValueError(f"ciphertext: {e}") from e

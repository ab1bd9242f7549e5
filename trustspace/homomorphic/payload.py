"""The bytes a homomorphic job carries: a frame of blobs, read without TenSEAL.

    request = pack([public_context, *input_ciphertexts])   # the job's "code", consumer -> provider
    result = pack([header_json, *result_ciphertexts])      # the sealed result, provider -> consumer

Layout: ``TSHE1\\n``, the number of blobs (u32, big-endian), then each blob as its length (u64)
and its bytes. Nothing is parsed but the lengths, and every length is checked against the limits
and the bytes actually present before anything is sliced: a crafted frame costs no memory.
This module imports nothing but the standard library and `errors`, because it also runs inside
the sandbox next to the evaluator.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from .errors import HomomorphicRefused, RefusalReason

MAGIC = b"TSHE1\n"
_COUNT = struct.Struct(">I")
_LENGTH = struct.Struct(">Q")


def pack(blobs: Sequence[bytes]) -> bytes:
    parts = [MAGIC, _COUNT.pack(len(blobs))]
    for blob in blobs:
        parts += [_LENGTH.pack(len(blob)), bytes(blob)]
    return b"".join(parts)


def unpack(data: bytes, *, max_blobs: int, max_blob_bytes: int) -> list[bytes]:
    """The blobs of a frame, or HomomorphicRefused (malformed, too_large)."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < len(MAGIC) + _COUNT.size:
        raise HomomorphicRefused(RefusalReason.MALFORMED, "not a trustspace homomorphic frame")
    (count,) = _COUNT.unpack_from(view, len(MAGIC))
    if count > max_blobs:
        raise HomomorphicRefused(RefusalReason.TOO_LARGE, f"{count} blobs, at most {max_blobs}")
    pos = len(MAGIC) + _COUNT.size
    blobs = []
    for i in range(count):
        if pos + _LENGTH.size > len(view):
            raise HomomorphicRefused(RefusalReason.MALFORMED, f"blob {i}: truncated length")
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += _LENGTH.size
        if size > max_blob_bytes:
            raise HomomorphicRefused(RefusalReason.TOO_LARGE,
                                     f"blob {i} is {size} bytes, limit {max_blob_bytes}")
        if pos + size > len(view):
            raise HomomorphicRefused(RefusalReason.MALFORMED, f"blob {i}: truncated")
        blobs.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(view):
        raise HomomorphicRefused(RefusalReason.MALFORMED, "bytes after the last blob")
    return blobs


def digest(blob: bytes) -> str:
    """``sm3:<hex>`` of a blob, as job parameters and receipts name contexts and ciphertexts
    (hashlib's SM3, from OpenSSL: this module must not need trustspace.crypto)."""
    return "sm3:" + hashlib.new("sm3", blob).hexdigest()

"""SM3 hash (GB/T 32905-2016), HMAC-SM3 (RFC 2104 with SM3) and the SM3 KDF (GB/T 32918.4 §5.4.3).

Hashing runs in OpenSSL through pyca/cryptography (~360 MB/s here); see
docs/decisions/0001-crypto-implementation.md.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _crypto_hmac

DIGEST_SIZE = 32
_CHUNK = 1 << 20
# Copying an initialised context costs less than half of building one (measured in
# bench/crypto.py), which matters for the many short inputs the node hashes.
_EMPTY = hashes.Hash(hashes.SM3())


def _new() -> hashes.Hash:
    return _EMPTY.copy()


class SM3:
    """Incremental SM3, for data that arrives in pieces."""

    digest_size = DIGEST_SIZE

    def __init__(self, data: bytes = b"") -> None:
        self._hash = _new()
        if data:
            self._hash.update(data)

    def update(self, data: bytes) -> SM3:
        self._hash.update(data)
        return self

    def copy(self) -> SM3:
        clone = SM3.__new__(SM3)
        clone._hash = self._hash.copy()
        return clone

    def digest(self) -> bytes:
        """The digest so far; the hasher can still be updated afterwards."""
        return self._hash.copy().finalize()

    def hexdigest(self) -> str:
        return self.digest().hex()


def sm3(data: bytes) -> bytes:
    """SM3 of `data` (32 bytes)."""
    h = _new()
    h.update(data)
    return h.finalize()


def sm3_chunks(chunks: Iterable[bytes]) -> bytes:
    h = _new()
    for chunk in chunks:
        h.update(chunk)
    return h.finalize()


def sm3_stream(stream: BinaryIO, chunk_size: int = _CHUNK) -> bytes:
    """SM3 of everything left in a binary stream, read in bounded chunks."""
    return sm3_chunks(iter(lambda: stream.read(chunk_size), b""))


def sm3_file(path: str | Path, chunk_size: int = _CHUNK) -> bytes:
    """SM3 of a file of any size, in constant memory."""
    with open(path, "rb") as stream:
        return sm3_stream(stream, chunk_size)


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    mac = _crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def hmac_sm3_verify(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time comparison of an HMAC-SM3 tag; True only on an exact match."""
    return _hmac.compare_digest(hmac_sm3(key, data), tag)


def sm3_kdf(z: bytes, klen: int) -> bytes:
    """Key derivation function of GB/T 32918.4-2016 §5.4.3: SM3(Z ‖ ct) for ct = 1, 2, ...

    `klen` is in bytes (the standard counts bits; every use here is whole bytes).
    """
    if klen < 0:
        raise ValueError("klen must be non-negative")
    if klen > (2**32 - 1) * DIGEST_SIZE:
        raise ValueError("klen too large for the SM3 KDF")
    out = bytearray()
    counter = 1
    while len(out) < klen:
        out += sm3(z + counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:klen])

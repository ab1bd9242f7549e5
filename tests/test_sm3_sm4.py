"""SM3 streaming, HMAC-SM3, the KDF; SM4 modes and their failures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustspace.crypto import (
    SM3,
    DecryptionFailed,
    hmac_sm3,
    hmac_sm3_verify,
    sm3,
    sm3_file,
    sm3_kdf,
    sm3_stream,
    sm4,
)


@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_streaming_equals_one_shot(chunks: list[bytes]) -> None:
    h = SM3()
    for c in chunks:
        h.update(c)
    whole = b"".join(chunks)
    assert h.digest() == sm3(whole) == sm3_stream(io.BytesIO(whole), chunk_size=7)
    assert h.hexdigest() == sm3(whole).hex()
    assert h.copy().update(b"x").digest() == sm3(whole + b"x")


def test_large_file_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big"
    block = bytes(range(256)) * 4096  # 1 MiB
    with path.open("wb") as f:
        for _ in range(8):
            f.write(block)
    assert sm3_file(path) == sm3(block * 8)


def test_hmac_sm3() -> None:
    tag = hmac_sm3(b"key", b"message")
    assert len(tag) == 32 and tag != hmac_sm3(b"key2", b"message")
    assert hmac_sm3_verify(b"key", b"message", tag)
    assert not hmac_sm3_verify(b"key", b"message!", tag)
    # RFC 2104 keys longer than the 64-byte block are hashed first.
    assert hmac_sm3(b"k" * 100, b"m") == hmac_sm3(sm3(b"k" * 100), b"m")


def test_kdf_is_sm3_of_z_and_counter() -> None:
    z = b"shared secret"
    assert sm3_kdf(z, 32) == sm3(z + b"\x00\x00\x00\x01")
    out = sm3_kdf(z, 70)
    assert out == sm3(z + b"\x00\x00\x00\x01") + sm3(z + b"\x00\x00\x00\x02") + \
        sm3(z + b"\x00\x00\x00\x03")[:6]
    assert sm3_kdf(z, 0) == b""
    with pytest.raises(ValueError):
        sm3_kdf(z, -1)


def test_gcm_failures_are_typed() -> None:
    key, nonce = sm4.new_key(), bytes(12)
    ct = sm4.gcm_encrypt(key, nonce, b"patient counts", b"aad")
    assert sm4.gcm_decrypt(key, nonce, ct, b"aad") == b"patient counts"
    with pytest.raises(DecryptionFailed, match="tag"):
        sm4.gcm_decrypt(key, nonce, ct[:-1] + bytes([ct[-1] ^ 1]), b"aad")  # wrong tag
    with pytest.raises(DecryptionFailed, match="tag"):
        sm4.gcm_decrypt(sm4.new_key(), nonce, ct, b"aad")
    with pytest.raises(DecryptionFailed, match="tag"):
        sm4.gcm_decrypt(key, nonce, ct, b"other aad")
    with pytest.raises(DecryptionFailed, match="shorter"):
        sm4.gcm_decrypt(key, nonce, ct[:10], b"aad")
    with pytest.raises(DecryptionFailed, match="truncated"):
        sm4.unseal(key, b"short")
    with pytest.raises(ValueError, match="16 bytes"):
        sm4.gcm_encrypt(b"short", nonce, b"x")


def test_seal_uses_a_fresh_nonce() -> None:
    key = sm4.new_key()
    assert sm4.seal(key, b"x") != sm4.seal(key, b"x")


@given(data=st.binary(max_size=200))
def test_cbc_and_ctr_round_trip(data: bytes) -> None:
    key, iv = sm4.new_key(), bytes(range(16))
    assert sm4.cbc_decrypt(key, iv, sm4.cbc_encrypt(key, iv, data)) == data
    assert sm4.ctr_crypt(key, iv, sm4.ctr_crypt(key, iv, data)) == data


def test_cbc_failures() -> None:
    key, iv = sm4.new_key(), bytes(16)
    with pytest.raises(DecryptionFailed, match="whole number"):
        sm4.cbc_decrypt(key, iv, b"123")
    ct = sm4.cbc_encrypt(key, iv, b"hello")
    with pytest.raises(DecryptionFailed, match="padding"):
        sm4.cbc_decrypt(sm4.new_key(), iv, ct)

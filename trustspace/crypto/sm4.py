"""SM4 (GB/T 32907-2016) modes.

SM4-GCM (authenticated) is what the node uses for everything it encrypts. CBC (PKCS#7 padding)
and CTR exist only for interoperability with systems that speak nothing else; they give no
integrity, so pair them with an HMAC-SM3 or a signature.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import DecryptionFailed

KEY_SIZE = 16
BLOCK_SIZE = 16
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"SM4 key must be {KEY_SIZE} bytes, got {len(key)}")


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """SM4-GCM: returns ciphertext ‖ 16-byte tag. Never reuse a nonce with the same key."""
    _check_key(key)
    if len(nonce) != GCM_NONCE_SIZE:
        raise ValueError(f"SM4-GCM nonce must be {GCM_NONCE_SIZE} bytes")
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    if aad:
        enc.authenticate_additional_data(aad)
    body = enc.update(plaintext) + enc.finalize()
    return body + enc.tag


def gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes | memoryview,
                aad: bytes = b"") -> bytes:
    """Inverse of `gcm_encrypt`; raises DecryptionFailed on any tampering or truncation."""
    _check_key(key)
    if len(nonce) != GCM_NONCE_SIZE:
        raise DecryptionFailed("SM4-GCM nonce must be 12 bytes")
    if len(ciphertext) < GCM_TAG_SIZE:
        raise DecryptionFailed("ciphertext shorter than the GCM tag")
    view = memoryview(ciphertext)  # no copy of a large payload
    body, tag = view[:-GCM_TAG_SIZE], bytes(view[-GCM_TAG_SIZE:])
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    if aad:
        dec.authenticate_additional_data(aad)
    try:
        return dec.update(body) + dec.finalize()
    except InvalidTag:
        raise DecryptionFailed("GCM tag mismatch: wrong key, or data tampered") from None


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """SM4-GCM with a fresh random nonce: nonce ‖ ciphertext ‖ tag."""
    nonce = os.urandom(GCM_NONCE_SIZE)
    return nonce + gcm_encrypt(key, nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    if len(sealed) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
        raise DecryptionFailed("sealed data truncated")
    view = memoryview(sealed)
    return gcm_decrypt(key, bytes(view[:GCM_NONCE_SIZE]), view[GCM_NONCE_SIZE:], aad)


def cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """SM4-CBC with PKCS#7 padding (interoperability only: no integrity)."""
    _check_key(key)
    padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    _check_key(key)
    if not ciphertext or len(ciphertext) % BLOCK_SIZE:
        raise DecryptionFailed("SM4-CBC ciphertext is not a whole number of blocks")
    dec = Cipher(algorithms.SM4(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed("bad PKCS#7 padding: wrong key or data tampered") from None


def ctr_crypt(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """SM4-CTR; the same call encrypts and decrypts (interoperability only: no integrity)."""
    _check_key(key)
    enc = Cipher(algorithms.SM4(key), modes.CTR(counter_block)).encryptor()
    return enc.update(data) + enc.finalize()


def ecb_encrypt_block(key: bytes, block: bytes) -> bytes:
    """One raw SM4 block encryption: only for the standard's known-answer tests."""
    _check_key(key)
    if len(block) != BLOCK_SIZE:
        raise ValueError("SM4 block must be 16 bytes")
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305 - KAT only
    return enc.update(block) + enc.finalize()

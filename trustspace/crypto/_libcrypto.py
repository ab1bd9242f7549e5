"""A thin ctypes binding to OpenSSL 3's libcrypto for SM2 private-key operations.

Why OpenSSL: its SM2 scalar multiplications are constant-time native code and it runs at the
speed `openssl speed sm2` reports; pyca/cryptography has no SM2. See
docs/decisions/0001-crypto-implementation.md. Only this module touches raw pointers; every call
that fails raises `_OpenSSLError` carrying OpenSSL's error queue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_ulong, c_void_p
from typing import Any

_REQUIRED_VERSION = 0x30000000  # OpenSSL 3.0.0


class _OpenSSLError(Exception):
    pass


def _load() -> ctypes.CDLL:
    candidates = [ctypes.util.find_library("crypto"), "libcrypto.so.3"]
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.OpenSSL_version_num.restype = c_ulong
        if lib.OpenSSL_version_num() >= _REQUIRED_VERSION:
            return lib
    raise ImportError("trustspace needs OpenSSL 3 libcrypto (libcrypto.so.3) for SM2")


_lib = _load()


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_VP = c_void_p
_PVP = POINTER(c_void_p)
_PSIZE = POINTER(c_size_t)

ERR_get_error = _fn("ERR_get_error", c_ulong)
ERR_error_string_n = _fn("ERR_error_string_n", None, c_ulong, c_char_p, c_size_t)
ERR_clear_error = _fn("ERR_clear_error", None)
OpenSSL_version = _fn("OpenSSL_version", c_char_p, c_int)
CRYPTO_free = _fn("CRYPTO_free", None, _VP, c_char_p, c_int)

EVP_PKEY_free = _fn("EVP_PKEY_free", None, _VP)
EVP_PKEY_is_a = _fn("EVP_PKEY_is_a", c_int, _VP, c_char_p)
EVP_PKEY_CTX_new_from_name = _fn("EVP_PKEY_CTX_new_from_name", _VP, _VP, c_char_p, c_char_p)
EVP_PKEY_CTX_new_from_pkey = _fn("EVP_PKEY_CTX_new_from_pkey", _VP, _VP, _VP, c_char_p)
EVP_PKEY_CTX_free = _fn("EVP_PKEY_CTX_free", None, _VP)
EVP_PKEY_keygen_init = _fn("EVP_PKEY_keygen_init", c_int, _VP)
EVP_PKEY_generate = _fn("EVP_PKEY_generate", c_int, _VP, _PVP)
EVP_PKEY_sign_init = _fn("EVP_PKEY_sign_init", c_int, _VP)
EVP_PKEY_sign = _fn("EVP_PKEY_sign", c_int, _VP, c_char_p, _PSIZE, c_char_p, c_size_t)
EVP_PKEY_verify_init = _fn("EVP_PKEY_verify_init", c_int, _VP)
EVP_PKEY_verify = _fn("EVP_PKEY_verify", c_int, _VP, c_char_p, c_size_t, c_char_p, c_size_t)
EVP_PKEY_encrypt_init = _fn("EVP_PKEY_encrypt_init", c_int, _VP)
EVP_PKEY_encrypt = _fn("EVP_PKEY_encrypt", c_int, _VP, c_char_p, _PSIZE, c_char_p, c_size_t)
EVP_PKEY_decrypt_init = _fn("EVP_PKEY_decrypt_init", c_int, _VP)
EVP_PKEY_decrypt = _fn("EVP_PKEY_decrypt", c_int, _VP, c_char_p, _PSIZE, c_char_p, c_size_t)

d2i_PUBKEY = _fn("d2i_PUBKEY", _VP, _PVP, POINTER(c_char_p), ctypes.c_long)
i2d_PUBKEY = _fn("i2d_PUBKEY", c_int, _VP, _PVP)
EVP_PKEY2PKCS8 = _fn("EVP_PKEY2PKCS8", _VP, _VP)
PKCS8_PRIV_KEY_INFO_free = _fn("PKCS8_PRIV_KEY_INFO_free", None, _VP)
i2d_PKCS8_PRIV_KEY_INFO = _fn("i2d_PKCS8_PRIV_KEY_INFO", c_int, _VP, _PVP)
EVP_sm4_cbc = _fn("EVP_sm4_cbc", _VP)
OBJ_txt2nid = _fn("OBJ_txt2nid", c_int, c_char_p)
PKCS5_pbe2_set_iv = _fn("PKCS5_pbe2_set_iv", _VP, _VP, c_int, c_char_p, c_int, c_char_p, c_int)
X509_ALGOR_free = _fn("X509_ALGOR_free", None, _VP)
PKCS8_set0_pbe = _fn("PKCS8_set0_pbe", _VP, c_char_p, c_int, _VP, _VP)
X509_SIG_free = _fn("X509_SIG_free", None, _VP)
i2d_X509_SIG = _fn("i2d_X509_SIG", c_int, _VP, _PVP)

OSSL_DECODER_CTX_new_for_pkey = _fn(
    "OSSL_DECODER_CTX_new_for_pkey", _VP, _PVP, c_char_p, c_char_p, c_char_p, c_int, _VP, c_char_p
)
OSSL_DECODER_CTX_set_passphrase = _fn(
    "OSSL_DECODER_CTX_set_passphrase", c_int, _VP, c_char_p, c_size_t
)
OSSL_DECODER_from_data = _fn("OSSL_DECODER_from_data", c_int, _VP, POINTER(c_char_p), _PSIZE)
OSSL_DECODER_CTX_free = _fn("OSSL_DECODER_CTX_free", None, _VP)

_SELECT_KEYPAIR = 0x87  # EVP_PKEY_KEYPAIR: private + public + parameters
_NID_HMAC_SHA256 = OBJ_txt2nid(b"hmacWithSHA256")


def version() -> str:
    return (OpenSSL_version(0) or b"").decode()


def _error_text(default: str) -> str:
    messages = []
    while code := ERR_get_error():
        buf = ctypes.create_string_buffer(256)
        ERR_error_string_n(code, buf, len(buf))
        messages.append(buf.value.decode(errors="replace"))
    return "; ".join(messages) or default


def _fail(what: str) -> _OpenSSLError:
    return _OpenSSLError(f"{what}: {_error_text('unknown OpenSSL error')}")


class PKey:
    """Owns one EVP_PKEY* holding an SM2 key; freed when the object is collected."""

    __slots__ = ("ptr", "has_private", "__weakref__")

    def __init__(self, ptr: int, has_private: bool) -> None:
        if not EVP_PKEY_is_a(ptr, b"SM2"):
            EVP_PKEY_free(ptr)
            ERR_clear_error()
            raise _OpenSSLError("not an SM2 key")
        self.ptr = ptr
        self.has_private = has_private
        weakref.finalize(self, EVP_PKEY_free, ptr)


def generate() -> PKey:
    ctx = EVP_PKEY_CTX_new_from_name(None, b"SM2", None)
    if not ctx:
        raise _fail("SM2 key context")
    try:
        pkey = c_void_p()
        if EVP_PKEY_keygen_init(ctx) != 1 or EVP_PKEY_generate(ctx, byref(pkey)) != 1:
            raise _fail("SM2 key generation")
        if not pkey.value:
            raise _fail("SM2 key generation")
        return PKey(pkey.value, has_private=True)
    finally:
        EVP_PKEY_CTX_free(ctx)


def load_private(data: bytes, fmt: str, password: bytes | None) -> PKey:
    """Decode a PKCS#8 private key (PEM or DER, encrypted or not) with OpenSSL's decoders."""
    ERR_clear_error()
    pkey = c_void_p()
    dctx = OSSL_DECODER_CTX_new_for_pkey(
        byref(pkey), fmt.encode(), None, None, _SELECT_KEYPAIR, None, None
    )
    if not dctx:
        raise _fail("decoder")
    try:
        # Always set a passphrase so OpenSSL never falls back to prompting on a terminal.
        pw = password if password is not None else b""
        if OSSL_DECODER_CTX_set_passphrase(dctx, pw, len(pw)) != 1:
            raise _fail("decoder passphrase")
        buf = c_char_p(data)
        size = c_size_t(len(data))
        if OSSL_DECODER_from_data(dctx, byref(buf), byref(size)) != 1 or not pkey.value:
            raise _fail("cannot decode private key")
    finally:
        OSSL_DECODER_CTX_free(dctx)
    return PKey(pkey.value, has_private=True)


def load_public_spki(der: bytes) -> PKey:
    ERR_clear_error()
    buf = c_char_p(der)
    ptr = d2i_PUBKEY(None, byref(buf), len(der))
    if not ptr:
        raise _fail("cannot decode SubjectPublicKeyInfo")
    return PKey(ptr, has_private=False)


def _i2d(func: Any, obj: int, what: str) -> bytes:
    n = func(obj, None)
    if n <= 0:
        raise _fail(what)
    buf = ctypes.create_string_buffer(n)
    cursor = ctypes.cast(buf, c_void_p)
    if func(obj, byref(cursor)) != n:
        raise _fail(what)
    return buf.raw


def spki_der(key: PKey) -> bytes:
    return _i2d(i2d_PUBKEY, key.ptr, "encode public key")


def pkcs8_der(key: PKey, password: bytes | None, iterations: int) -> bytes:
    """PKCS#8 PrivateKeyInfo, or EncryptedPrivateKeyInfo (PBES2: PBKDF2-HMAC-SHA256 + SM4-CBC)."""
    p8 = EVP_PKEY2PKCS8(key.ptr)
    if not p8:
        raise _fail("encode private key")
    try:
        if password is None:
            return _i2d(i2d_PKCS8_PRIV_KEY_INFO, p8, "encode private key")
        # OpenSSL 3.0 knows no hmacWithSM3 PBKDF2 PRF; SHA-256 keeps the file readable by
        # `openssl pkey`. The cipher protecting the key is SM4.
        alg = PKCS5_pbe2_set_iv(EVP_sm4_cbc(), iterations, None, 0, None, _NID_HMAC_SHA256)
        if not alg:
            raise _fail("PBES2 parameters")
        sig = PKCS8_set0_pbe(password, len(password), p8, alg)
        if not sig:
            X509_ALGOR_free(alg)
            raise _fail("encrypt private key")
        try:
            return _i2d(i2d_X509_SIG, sig, "encode encrypted private key")
        finally:
            X509_SIG_free(sig)
    finally:
        PKCS8_PRIV_KEY_INFO_free(p8)


def _op(key: PKey, init: Any, op: Any, data: bytes, out_hint: int, what: str) -> bytes:
    ERR_clear_error()
    ctx = EVP_PKEY_CTX_new_from_pkey(None, key.ptr, None)
    if not ctx:
        raise _fail(what)
    try:
        if init(ctx) != 1:
            raise _fail(what)
        size = c_size_t(out_hint)
        out = ctypes.create_string_buffer(out_hint)
        if op(ctx, out, byref(size), data, len(data)) != 1:
            raise _fail(what)
        return out.raw[: size.value]
    finally:
        EVP_PKEY_CTX_free(ctx)


def sign_digest(key: PKey, e: bytes) -> bytes:
    """SM2 signature (DER r, s) of e = SM3(Z ‖ M), computed by the caller (GB/T 32918.2 §6.1 A1-A2).

    OpenSSL's SM2 signature provider treats the to-be-signed input as e when no digest is set.
    """
    return _op(key, EVP_PKEY_sign_init, EVP_PKEY_sign, e, 80, "SM2 sign")


def verify_digest(key: PKey, e: bytes, signature: bytes) -> bool:
    ERR_clear_error()
    ctx = EVP_PKEY_CTX_new_from_pkey(None, key.ptr, None)
    if not ctx:
        raise _fail("SM2 verify")
    try:
        if EVP_PKEY_verify_init(ctx) != 1:
            raise _fail("SM2 verify")
        ok: int = EVP_PKEY_verify(ctx, signature, len(signature), e, len(e))
        ERR_clear_error()
        return ok == 1
    finally:
        EVP_PKEY_CTX_free(ctx)


def encrypt(key: PKey, plaintext: bytes) -> bytes:
    """SM2 public-key encryption; OpenSSL emits the GM/T 0009 DER C1C3C2 form (SM3)."""
    return _op(key, EVP_PKEY_encrypt_init, EVP_PKEY_encrypt, plaintext, len(plaintext) + 160,
               "SM2 encrypt")


def decrypt(key: PKey, ciphertext: bytes) -> bytes:
    return _op(key, EVP_PKEY_decrypt_init, EVP_PKEY_decrypt, ciphertext, len(ciphertext),
               "SM2 decrypt")

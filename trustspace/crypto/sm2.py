"""SM2 public-key cryptography (GB/T 32918-2016, GM/T 0009-2012) on the recommended curve.

Private-key arithmetic runs in OpenSSL 3's constant-time native code (`_libcrypto`). What runs in
Python here touches only public data: the Z value and message digest e, point checks, and the
DER/raw conversions of signatures and ciphertexts.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass

from . import _der, _libcrypto
from .errors import DecryptionFailed, InvalidPoint, KeyFormatError, SignatureInvalid
from .sm3 import sm3, sm3_chunks

# GB/T 32918.5-2017 recommended curve parameters.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_USER_ID = b"1234567812345678"  # GM/T 0009-2012 §10
PBKDF2_ITERATIONS = 200_000

# SubjectPublicKeyInfo of an SM2 key: id-ecPublicKey with the SM2 curve OID
# (1.2.156.10197.1.301), then a 66-byte BIT STRING holding the uncompressed point.
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
# PKCS#8 AlgorithmIdentifier for the same.
_PKCS8_ALG = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")

_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)


def _int32(n: int) -> bytes:
    return n.to_bytes(32, "big")


def is_on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def decode_point(data: bytes) -> bytes:
    """Validate an encoded SM2 point (04‖x‖y, 02/03‖x, or bare x‖y); return 04‖x‖y."""
    if len(data) == 64:
        data = b"\x04" + data
    if len(data) == 65 and data[0] == 4:
        x, y = int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big")
    elif len(data) == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        if x >= P:
            raise InvalidPoint("x coordinate out of range")
        y = pow((x * x * x + A * x + B) % P, (P + 1) // 4, P)  # P ≡ 3 (mod 4)
        if y & 1 != data[0] & 1:
            y = P - y
    else:
        raise InvalidPoint(f"not an encoded SM2 point ({len(data)} bytes)")
    if not is_on_curve(x, y):
        raise InvalidPoint("point is not on the SM2 curve")
    return b"\x04" + _int32(x) + _int32(y)


def z_value(point: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA), GB/T 32918.2-2016 §5.5."""
    entl = len(user_id) * 8
    if entl >= 1 << 16:
        raise ValueError("SM2 user ID longer than 8191 bytes")
    q = decode_point(point)
    return sm3(
        entl.to_bytes(2, "big") + user_id + _int32(A) + _int32(B) + _int32(GX) + _int32(GY) + q[1:]
    )


# ---- PEM -------------------------------------------------------------------------------------

def pem_encode(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        f"-----BEGIN {label}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {label}-----\n".encode()
    )


def pem_decode(data: bytes, labels: tuple[str, ...]) -> tuple[str, bytes]:
    """The first PEM block whose label is one of `labels`: (label, DER)."""
    for match in _PEM_RE.finditer(data):
        label = match.group(1).decode()
        if label in labels:
            body = b"".join(match.group(2).split())
            try:
                return label, base64.b64decode(body, validate=True)
            except binascii.Error:
                raise KeyFormatError(f"PEM block {label!r} is not valid base64") from None
    raise KeyFormatError("no PEM block labelled " + " or ".join(repr(lb) for lb in labels))


# ---- signatures ----------------------------------------------------------------------------

def signature_to_rs(signature: bytes) -> tuple[int, int]:
    """Parse a DER SM2 signature strictly (GM/T 0009 §7.2: SEQUENCE { r INTEGER, s INTEGER })."""
    try:
        body = _der.read_sequence(signature)
        r, pos = _der.read_integer(body, 0)
        s, pos = _der.read_integer(body, pos)
    except ValueError as exc:
        raise SignatureInvalid(f"malformed DER signature: {exc}") from None
    if pos != len(body):
        raise SignatureInvalid("malformed DER signature: trailing bytes")
    return r, s


def rs_to_signature(r: int, s: int) -> bytes:
    return _der.sequence(_der.integer(r), _der.integer(s))


# ---- ciphertexts ---------------------------------------------------------------------------

class CiphertextForm(enum.Enum):
    """How an SM2 ciphertext is laid out on the wire."""

    DER = "der"  # GM/T 0009-2012 §7.2: SEQUENCE { x, y, hash OCTET STRING, ciphertext }
    C1C3C2 = "c1c3c2"  # raw: 04 ‖ x ‖ y ‖ C3 ‖ C2 (GB/T 32918.4-2016)
    C1C2C3 = "c1c2c3"  # raw, the pre-2016 order some old systems still use


@dataclass(frozen=True)
class SM2Ciphertext:
    c1: bytes  # 04 ‖ x ‖ y
    c3: bytes  # SM3 hash, 32 bytes
    c2: bytes  # masked plaintext

    @classmethod
    def parse(cls, data: bytes, form: CiphertextForm) -> SM2Ciphertext:
        try:
            if form is CiphertextForm.DER:
                body = _der.read_sequence(data)
                x, pos = _der.read_integer(body, 0)
                y, pos = _der.read_integer(body, pos)
                c3, pos = _der.read_tlv(body, pos, _der.OCTET_STRING)
                c2, pos = _der.read_tlv(body, pos, _der.OCTET_STRING)
                if pos != len(body):
                    raise ValueError("trailing bytes")
                if x >= 1 << 256 or y >= 1 << 256:
                    raise ValueError("C1 coordinate too large")
                c1 = b"\x04" + _int32(x) + _int32(y)
            else:
                if len(data) < 65 + 32 + 1 or data[0] != 4:
                    raise ValueError("too short or C1 not uncompressed")
                c1 = data[:65]
                if form is CiphertextForm.C1C3C2:
                    c3, c2 = data[65:97], data[97:]
                else:
                    c2, c3 = data[65:-32], data[-32:]
        except ValueError as exc:
            raise DecryptionFailed(f"malformed SM2 ciphertext: {exc}") from None
        if len(c3) != 32 or not c2:
            raise DecryptionFailed("malformed SM2 ciphertext: bad C3 or empty C2")
        try:
            decode_point(c1)
        except InvalidPoint:
            raise DecryptionFailed("C1 is not a point on the SM2 curve") from None
        return cls(c1, c3, c2)

    def encode(self, form: CiphertextForm) -> bytes:
        if form is CiphertextForm.DER:
            x, y = int.from_bytes(self.c1[1:33], "big"), int.from_bytes(self.c1[33:], "big")
            return _der.sequence(
                _der.integer(x),
                _der.integer(y),
                _der.tlv(_der.OCTET_STRING, self.c3),
                _der.tlv(_der.OCTET_STRING, self.c2),
            )
        if form is CiphertextForm.C1C3C2:
            return self.c1 + self.c3 + self.c2
        return self.c1 + self.c2 + self.c3


# ---- keys ----------------------------------------------------------------------------------

class SM2PublicKey:
    """An SM2 public key: verify signatures and encrypt to its holder."""

    __slots__ = ("_pkey", "_der", "_point", "_key_id", "_z_cache")

    def __init__(self, pkey: _libcrypto.PKey, der: bytes) -> None:
        self._pkey = pkey
        self._der = der
        self._point = der[-65:]
        self._key_id = sm3(der).hex()  # asked for on every signature a document carries
        self._z_cache: dict[bytes, bytes] = {}

    @classmethod
    def from_point(cls, point: bytes) -> SM2PublicKey:
        """From 04‖x‖y, a compressed point or bare x‖y; raises InvalidPoint off the curve."""
        return cls.from_der(_SPKI_PREFIX + decode_point(point))

    @classmethod
    def from_der(cls, der: bytes) -> SM2PublicKey:
        """From a DER SubjectPublicKeyInfo."""
        if len(der) == len(_SPKI_PREFIX) + 65 and der.startswith(_SPKI_PREFIX):
            decode_point(der[len(_SPKI_PREFIX) :])  # a clear InvalidPoint before OpenSSL sees it
        try:
            pkey = _libcrypto.load_public_spki(der)
        except _libcrypto._OpenSSLError as exc:
            raise KeyFormatError(f"not an SM2 public key: {exc}") from None
        return cls._canonical(pkey)

    @classmethod
    def _canonical(cls, pkey: _libcrypto.PKey) -> SM2PublicKey:
        """One key, one encoding: RFC 5480 allows a compressed point in the SPKI, but the key id,
        the Z value and equality must not depend on how a file happened to encode it."""
        der = _libcrypto.spki_der(pkey)
        if len(der) == len(_SPKI_PREFIX) + 65 and der.startswith(_SPKI_PREFIX):
            return cls(pkey, der)
        try:
            alg_and_key = _der.read_sequence(der)
            _, pos = _der.read_tlv(alg_and_key, 0, _der.SEQUENCE)
            bits, _ = _der.read_tlv(alg_and_key, pos, 0x03)  # BIT STRING
        except ValueError as exc:
            raise KeyFormatError(f"unexpected SubjectPublicKeyInfo: {exc}") from None
        if not bits or bits[0] != 0:
            raise KeyFormatError("unexpected SubjectPublicKeyInfo: bad BIT STRING")
        uncompressed = _SPKI_PREFIX + decode_point(bits[1:])
        return cls(_libcrypto.load_public_spki(uncompressed), uncompressed)

    @classmethod
    def from_pem(cls, data: bytes | str) -> SM2PublicKey:
        raw = data.encode() if isinstance(data, str) else data
        _, der = pem_decode(raw, ("PUBLIC KEY",))
        return cls.from_der(der)

    def to_der(self) -> bytes:
        return self._der

    def to_pem(self) -> bytes:
        return pem_encode("PUBLIC KEY", self._der)

    @property
    def point(self) -> bytes:
        """The uncompressed point 04‖x‖y."""
        return self._point

    @property
    def key_id(self) -> str:
        """SM3 of the SubjectPublicKeyInfo DER, lowercase hex: names this key everywhere."""
        return self._key_id

    def z(self, user_id: bytes = DEFAULT_USER_ID) -> bytes:
        z = self._z_cache.get(user_id)
        if z is None:
            z = z_value(self._point, user_id)
            if len(self._z_cache) < 16:
                self._z_cache[user_id] = z
        return z

    def message_digest(self, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
        """e = SM3(Z ‖ M), GB/T 32918.2-2016 §6.1 steps A1-A2."""
        return sm3_chunks((self.z(user_id), message))  # no copy of a large message

    def verify(self, signature: bytes, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> None:
        """Raise SignatureInvalid unless `signature` is this key's SM2 signature of `message`."""
        r, s = signature_to_rs(signature)
        if not (1 <= r < N):
            raise SignatureInvalid("r out of range [1, n-1]", self.key_id)
        if not (1 <= s < N):
            raise SignatureInvalid("s out of range [1, n-1]", self.key_id)
        if not _libcrypto.verify_digest(self._pkey, self.message_digest(message, user_id),
                                        signature):
            raise SignatureInvalid(
                "does not match this message, key and user ID", self.key_id
            )

    def encrypt(self, plaintext: bytes, form: CiphertextForm = CiphertextForm.DER) -> bytes:
        """SM2 encryption (GB/T 32918.4-2016 §6.1) with a fresh random k."""
        if not plaintext:
            raise ValueError("SM2 cannot encrypt an empty message")
        der = _libcrypto.encrypt(self._pkey, plaintext)
        if form is CiphertextForm.DER:
            return der
        return SM2Ciphertext.parse(der, CiphertextForm.DER).encode(form)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SM2PublicKey) and other._der == self._der

    def __hash__(self) -> int:
        return hash(self._der)

    def __repr__(self) -> str:
        return f"SM2PublicKey(key_id={self.key_id[:16]}…)"


class SM2PrivateKey:
    """An SM2 key pair held in memory; it is both a `Signer` and a `Decrypter`."""

    __slots__ = ("_pkey", "public_key")

    def __init__(self, pkey: _libcrypto.PKey) -> None:
        self._pkey = pkey
        self.public_key = SM2PublicKey._canonical(pkey)

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        return cls(_libcrypto.generate())

    @classmethod
    def from_der(cls, der: bytes, password: bytes | None = None) -> SM2PrivateKey:
        """From PKCS#8 DER (PrivateKeyInfo, or EncryptedPrivateKeyInfo with `password`)."""
        try:
            return cls(_libcrypto.load_private(der, "DER", password))
        except _libcrypto._OpenSSLError as exc:
            if b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x05\x0d" in der[:32]:  # PBES2 OID
                if password is None:
                    raise KeyFormatError("private key is password-protected: give its password") \
                        from None
                raise KeyFormatError("wrong password, or encrypted key damaged") from None
            raise KeyFormatError(f"not an SM2 private key: {exc}") from None

    @classmethod
    def from_pem(cls, data: bytes | str, password: bytes | None = None) -> SM2PrivateKey:
        raw = data.encode() if isinstance(data, str) else data
        label, der = pem_decode(raw, ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"))
        if label == "ENCRYPTED PRIVATE KEY" and password is None:
            raise KeyFormatError("private key is password-protected: give its password")
        return cls.from_der(der, password if label == "ENCRYPTED PRIVATE KEY" else None)

    @classmethod
    def from_private_value(cls, d: int) -> SM2PrivateKey:
        """From the private scalar d ∈ [1, n-2] (GB/T 32918.1 §6.1): test vectors, key import."""
        if not 1 <= d <= N - 2:
            raise KeyFormatError("SM2 private value out of range [1, n-2]")
        ec_private_key = _der.sequence(_der.integer(1), _der.tlv(_der.OCTET_STRING, _int32(d)))
        pkcs8 = _der.sequence(
            _der.integer(0), _PKCS8_ALG, _der.tlv(_der.OCTET_STRING, ec_private_key)
        )
        return cls.from_der(pkcs8)

    def to_der(self, password: bytes | None = None,
               iterations: int = PBKDF2_ITERATIONS) -> bytes:
        """PKCS#8 DER; with a password, PBES2 (PBKDF2-HMAC-SHA256, SM4-CBC)."""
        if password is not None and not password:
            raise ValueError("empty password: omit it to write an unencrypted key")
        return _libcrypto.pkcs8_der(self._pkey, password, iterations)

    def to_pem(self, password: bytes | None = None,
               iterations: int = PBKDF2_ITERATIONS) -> bytes:
        label = "PRIVATE KEY" if password is None else "ENCRYPTED PRIVATE KEY"
        return pem_encode(label, self.to_der(password, iterations))

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def sign(self, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
        """SM2 signature of `message` with Z over `user_id` (GB/T 32918.2-2016 §6.1), DER (r, s)."""
        return _libcrypto.sign_digest(self._pkey, self.public_key.message_digest(message, user_id))

    def decrypt(self, ciphertext: bytes, form: CiphertextForm = CiphertextForm.DER) -> bytes:
        """SM2 decryption (GB/T 32918.4-2016 §7.1); checks C1 on the curve and the C3 hash."""
        parsed = SM2Ciphertext.parse(ciphertext, form)
        der = ciphertext if form is CiphertextForm.DER else parsed.encode(CiphertextForm.DER)
        try:
            return _libcrypto.decrypt(self._pkey, der)
        except _libcrypto._OpenSSLError:
            raise DecryptionFailed("C3 check failed: wrong key, or ciphertext tampered") from None

    def __repr__(self) -> str:
        return f"SM2PrivateKey(key_id={self.key_id[:16]}…)"

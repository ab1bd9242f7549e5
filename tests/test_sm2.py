"""SM2 keys, signatures and encryption: round trips, formats, and every failure a typed error."""

from __future__ import annotations

import pytest

from trustspace.crypto import (
    CiphertextForm,
    DecryptionFailed,
    InvalidPoint,
    KeyFormatError,
    SignatureInvalid,
    SM2PrivateKey,
    SM2PublicKey,
    sm3,
)
from trustspace.crypto.sm2 import N, P, decode_point, rs_to_signature, signature_to_rs

MESSAGE = b"the hospital's monthly statistics"


def test_sign_verify_with_default_and_custom_id(keys: list[SM2PrivateKey]) -> None:
    key = keys[0]
    key.public_key.verify(key.sign(MESSAGE), MESSAGE)
    sig = key.sign(MESSAGE, b"alice@hospital.example")
    key.public_key.verify(sig, MESSAGE, b"alice@hospital.example")
    assert key.sign(MESSAGE) != key.sign(MESSAGE)  # fresh random k each time


def test_wrong_id_is_refused(keys: list[SM2PrivateKey]) -> None:
    sig = keys[0].sign(MESSAGE, b"alice")
    with pytest.raises(SignatureInvalid) as err:
        keys[0].public_key.verify(sig, MESSAGE, b"bob")
    assert err.value.key_id == keys[0].key_id
    with pytest.raises(SignatureInvalid):
        keys[0].public_key.verify(sig, MESSAGE, b"")  # OpenSSL CLI's default: empty ID


def test_wrong_key_and_wrong_message_are_refused(keys: list[SM2PrivateKey]) -> None:
    sig = keys[0].sign(MESSAGE)
    with pytest.raises(SignatureInvalid, match="does not match"):
        keys[1].public_key.verify(sig, MESSAGE)
    with pytest.raises(SignatureInvalid):
        keys[0].public_key.verify(sig, MESSAGE + b".")


def test_tampered_and_malformed_signatures_name_the_reason(keys: list[SM2PrivateKey]) -> None:
    pub = keys[0].public_key
    r, s = signature_to_rs(keys[0].sign(MESSAGE))
    cases = {
        "r out of range": rs_to_signature(0, s),
        "s out of range": rs_to_signature(r, N),
        "malformed DER": keys[0].sign(MESSAGE)[:-1],
        "trailing": keys[0].sign(MESSAGE) + b"\x00",
    }
    for expected, sig in cases.items():
        with pytest.raises(SignatureInvalid, match=expected):
            pub.verify(sig, MESSAGE)
    with pytest.raises(SignatureInvalid, match="does not match"):
        pub.verify(rs_to_signature(r, (s + 1) % N or 1), MESSAGE)
    with pytest.raises(SignatureInvalid, match="malformed"):
        pub.verify(b"", MESSAGE)
    # A non-minimal INTEGER encoding of the same (r, s) is refused: DER is strict.
    body = b"\x02\x21\x00" + r.to_bytes(32, "big") + b"\x02\x21\x00" + s.to_bytes(32, "big")
    if r >> 255 == 0:
        with pytest.raises(SignatureInvalid, match="non-minimal"):
            pub.verify(b"\x30" + bytes([len(body)]) + body, MESSAGE)


@pytest.mark.parametrize("form", list(CiphertextForm))
def test_encrypt_decrypt_in_every_form(keys: list[SM2PrivateKey], form: CiphertextForm) -> None:
    ct = keys[0].public_key.encrypt(MESSAGE, form)
    assert keys[0].decrypt(ct, form) == MESSAGE
    expected = {CiphertextForm.DER: None, CiphertextForm.C1C3C2: 97 + len(MESSAGE),
                CiphertextForm.C1C2C3: 97 + len(MESSAGE)}[form]
    if expected:
        assert len(ct) == expected and ct[0] == 4


def test_decrypt_failures_are_typed(keys: list[SM2PrivateKey]) -> None:
    ct = keys[0].public_key.encrypt(MESSAGE)
    with pytest.raises(DecryptionFailed, match="C3 check failed"):
        keys[1].decrypt(ct)  # wrong key
    for cut in (1, 10, len(ct) // 2, len(ct) - 1):
        with pytest.raises(DecryptionFailed):
            keys[0].decrypt(ct[:cut])  # truncated
    raw = bytearray(keys[0].public_key.encrypt(MESSAGE, CiphertextForm.C1C3C2))
    raw[-1] ^= 1  # C2 tampered
    with pytest.raises(DecryptionFailed, match="C3"):
        keys[0].decrypt(bytes(raw), CiphertextForm.C1C3C2)
    raw[-1] ^= 1
    raw[40] ^= 1  # C1 moved off the curve
    with pytest.raises(DecryptionFailed, match="not a point on the SM2 curve"):
        keys[0].decrypt(bytes(raw), CiphertextForm.C1C3C2)
    with pytest.raises(DecryptionFailed, match="malformed"):
        keys[0].decrypt(b"\x04" + bytes(20), CiphertextForm.C1C3C2)
    with pytest.raises(ValueError, match="empty"):
        keys[0].public_key.encrypt(b"")


def test_key_id_is_sm3_of_spki(keys: list[SM2PrivateKey]) -> None:
    pub = keys[0].public_key
    assert pub.key_id == sm3(pub.to_der()).hex() == keys[0].key_id
    assert len(pub.to_der()) == 91 and pub.point == pub.to_der()[-65:]


def test_keys_round_trip_through_pem_and_der(keys: list[SM2PrivateKey]) -> None:
    key = keys[0]
    for loaded in (SM2PrivateKey.from_pem(key.to_pem()), SM2PrivateKey.from_der(key.to_der())):
        assert loaded.public_key == key.public_key
        key.public_key.verify(loaded.sign(MESSAGE), MESSAGE)
    assert SM2PublicKey.from_pem(key.public_key.to_pem()) == key.public_key
    assert SM2PublicKey.from_der(key.public_key.to_der()) == key.public_key
    assert SM2PublicKey.from_point(key.public_key.point) == key.public_key
    assert SM2PublicKey.from_point(key.public_key.point[1:]) == key.public_key


def test_compressed_points_decode(keys: list[SM2PrivateKey]) -> None:
    for key in keys:
        point = key.public_key.point
        y_odd = point[-1] & 1
        compressed = bytes([2 + y_odd]) + point[1:33]
        assert decode_point(compressed) == point


def test_password_protected_private_key(keys: list[SM2PrivateKey]) -> None:
    pem = keys[0].to_pem(b"correct horse", iterations=1000)
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert SM2PrivateKey.from_pem(pem, b"correct horse").public_key == keys[0].public_key
    with pytest.raises(KeyFormatError, match="wrong password"):
        SM2PrivateKey.from_pem(pem, b"wrong horse")
    with pytest.raises(KeyFormatError, match="password-protected"):
        SM2PrivateKey.from_pem(pem)
    der = keys[0].to_der(b"pw", iterations=1000)
    with pytest.raises(KeyFormatError, match="password-protected"):
        SM2PrivateKey.from_der(der)
    with pytest.raises(ValueError, match="empty password"):
        keys[0].to_pem(b"")


@pytest.mark.parametrize("bad", [
    b"",
    b"not a key",
    b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAE\n-----END PUBLIC KEY-----\n",
])
def test_malformed_pem_is_a_key_format_error(bad: bytes) -> None:
    with pytest.raises(KeyFormatError):
        SM2PrivateKey.from_pem(bad)
    with pytest.raises(KeyFormatError):
        SM2PublicKey.from_pem(bad)


def test_a_non_sm2_key_is_refused(tmp_path: object) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p256 = ec.generate_private_key(ec.SECP256R1())
    pem = p256.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    with pytest.raises(KeyFormatError):
        SM2PrivateKey.from_pem(pem)
    pub = p256.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyFormatError):
        SM2PublicKey.from_pem(pub)


def test_invalid_curve_points_are_refused(keys: list[SM2PrivateKey]) -> None:
    point = bytearray(keys[0].public_key.point)
    point[-1] ^= 1
    with pytest.raises(InvalidPoint):
        SM2PublicKey.from_point(bytes(point))
    with pytest.raises(InvalidPoint):  # same, inside a SubjectPublicKeyInfo
        SM2PublicKey.from_der(keys[0].public_key.to_der()[:-65] + bytes(point))
    with pytest.raises(InvalidPoint):
        SM2PublicKey.from_point(b"\x04" + P.to_bytes(32, "big") + bytes(32))
    with pytest.raises(InvalidPoint):
        SM2PublicKey.from_point(bytes(65))
    with pytest.raises(InvalidPoint):
        SM2PublicKey.from_point(b"\x05" + bytes(64))
    assert issubclass(InvalidPoint, KeyFormatError)


@pytest.mark.parametrize("d", [0, N - 1, N, 2**256])
def test_private_value_out_of_range_is_refused(d: int) -> None:
    with pytest.raises(KeyFormatError, match="out of range"):
        SM2PrivateKey.from_private_value(d)


def test_concurrent_signing_from_threads(keys: list[SM2PrivateKey]) -> None:
    """The OpenSSL binding holds no shared per-call state: threads can sign at once."""
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> None:
        message = f"message {i}".encode()
        for _ in range(50):
            keys[i % 2].public_key.verify(keys[i % 2].sign(message), message)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(8)))

"""Interoperability with the pure-Python `gmssl` package (3.2.2).

gmssl is an independent implementation but NOT a production one (Python `random` nonces, no C3
check on decryption); it serves here as a second opinion on the arithmetic and the formats.
Its conventions, which these tests adapt to:

* hex strings everywhere; signatures are raw r‖s hex (or DER hex with asn1=True);
* the signature Z value always uses the GM/T 0009 default ID 1234567812345678;
* ciphertexts omit the 04 prefix of C1; mode=0 is C1C2C3 (its default), mode=1 is C1C3C2;
  `encrypt` returns None when the KDF output is all zero (see `gm_encrypt`);
* `CryptSM2` strips a "04" prefix from the public key with `str.lstrip("04")`, which also eats
  any leading 0/4 hex digits of x: we always pass the bare x‖y hex, and only keys whose hex does
  not itself start with "04".
"""

from __future__ import annotations

import os
import secrets

import pytest
from Cryptodome.Util.asn1 import DerOctetString, DerSequence
from gmssl import sm2 as gmssl_sm2
from gmssl import sm3 as gmssl_sm3
from gmssl import sm4 as gmssl_sm4
from hypothesis import given, settings
from hypothesis import strategies as st

from trustspace.crypto import (
    DEFAULT_USER_ID,
    CiphertextForm,
    DecryptionFailed,
    SignatureInvalid,
    SM2PrivateKey,
    SM2PublicKey,
    sm3,
    sm3_kdf,
    sm4,
)
from trustspace.crypto.sm2 import N, rs_to_signature, signature_to_rs

pytestmark = pytest.mark.interop

# GB/T 32918.5-2017 (= GM/T 0003.5) example on the recommended curve.
STD_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
STD_K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
STD_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
STD_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
STD_PUB = ("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
           "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
STD_CT_C1C3C2 = bytes.fromhex(
    "04" "04ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e149a73"
    "e858f9d81e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0"
    "59983c18f809e262923c53aec295d30383b54e39d609d160afcb1908d0bd8766"
    "21886ca989ca9c7d58087307ca93092d651efa"
)
MODES = {0: CiphertextForm.C1C2C3, 1: CiphertextForm.C1C3C2}


# ---- helpers -------------------------------------------------------------------------------

def octets(der: object) -> bytes:
    """The content of a DER OCTET STRING (pycryptodome's parser)."""
    assert isinstance(der, bytes)
    value = DerOctetString().decode(der).payload
    assert isinstance(value, bytes)
    return value


def private_scalar(key: SM2PrivateKey) -> int:
    """d, read back out of our PKCS#8 encoding by an independent DER parser (pycryptodome)."""
    pkcs8 = DerSequence().decode(key.to_der())
    ec_private_key = DerSequence().decode(octets(pkcs8[2]))
    assert ec_private_key[0] == 1
    return int.from_bytes(octets(ec_private_key[1]), "big")


def gmssl_key() -> tuple[SM2PrivateKey, str, str]:
    """A fresh key of ours, with gmssl's (private hex, public x‖y hex); see the module note."""
    while True:
        key = SM2PrivateKey.generate()
        pub_hex = key.public_key.point[1:].hex()
        if not pub_hex.startswith("04"):
            return key, f"{private_scalar(key):064x}", pub_hex


def crypt(priv_hex: str, pub_hex: str, mode: int = 1, asn1: bool = False
          ) -> gmssl_sm2.CryptSM2:
    return gmssl_sm2.CryptSM2(private_key=priv_hex, public_key=pub_hex, mode=mode, asn1=asn1)


def gm_encrypt(gm: gmssl_sm2.CryptSM2, plaintext: bytes) -> bytes:
    """gmssl returns None when the KDF output t is all zero (likely for 1-byte messages: 1 in
    256) instead of picking a new k as GB/T 32918.4 §6.1 A5 says: do that step for it."""
    for _ in range(64):
        ciphertext: bytes | None = gm.encrypt(plaintext)
        if ciphertext is not None:
            return ciphertext
    raise AssertionError("gmssl kept returning None")


def gm_hash(data: bytes) -> bytes:
    return bytes.fromhex(gmssl_sm3.sm3_hash(list(data)))  # sm3_hash appends to its argument


def sm4_cipher(key: bytes, mode: int) -> gmssl_sm4.CryptSM4:
    cipher = gmssl_sm4.CryptSM4()
    cipher.set_key(key, mode)
    return cipher


@pytest.fixture(scope="module")
def pair() -> tuple[SM2PrivateKey, str, str]:
    return gmssl_key()


def test_private_scalar_helper_reads_our_pkcs8() -> None:
    assert private_scalar(SM2PrivateKey.from_private_value(STD_D)) == STD_D


# ---- SM3 and the SM3 KDF ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"abc", b"abcd" * 16, b"x" * 55, b"x" * 56, b"x" * 64,
                                  bytes(range(256))])
def test_sm3_matches_gmssl(data: bytes) -> None:
    assert sm3(data) == gm_hash(data)


def test_sm3_standard_example_through_gmssl() -> None:
    expected = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert gm_hash(b"abc").hex() == expected == sm3(b"abc").hex()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_sm3_random_messages_match_gmssl(data: bytes) -> None:
    assert sm3(data) == gm_hash(data)


@pytest.mark.parametrize("klen", [1, 16, 31, 32, 33, 64, 100, 257])
def test_sm3_kdf_matches_gmssl(klen: int) -> None:
    z = os.urandom(64)
    ours = sm3_kdf(z, klen)
    assert len(ours) == klen
    assert ours.hex() == gmssl_sm3.sm3_kdf(z.hex().encode(), klen)


# ---- SM4 ----------------------------------------------------------------------------------

def test_sm4_standard_example_through_gmssl() -> None:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    # PKCS#7 adds a whole block; the first block is the bare GB/T 32907 example.
    assert sm4_cipher(key, gmssl_sm4.SM4_ENCRYPT).crypt_ecb(key)[:16].hex() \
        == "681edf34d206965e86b3e94f536e4246" == sm4.ecb_encrypt_block(key, key).hex()


@pytest.mark.parametrize("size", [0, 1, 16, 33, 200])
def test_sm4_ecb_matches_gmssl(size: int) -> None:
    key, plaintext = os.urandom(16), os.urandom(size)
    pad = 16 - size % 16
    padded = plaintext + bytes([pad]) * pad
    ours = b"".join(sm4.ecb_encrypt_block(key, padded[i : i + 16])
                    for i in range(0, len(padded), 16))
    assert sm4_cipher(key, gmssl_sm4.SM4_ENCRYPT).crypt_ecb(plaintext) == ours
    assert sm4_cipher(key, gmssl_sm4.SM4_DECRYPT).crypt_ecb(ours) == plaintext


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 200])
def test_sm4_cbc_matches_gmssl_both_ways(size: int) -> None:
    key, iv, plaintext = os.urandom(16), os.urandom(16), os.urandom(size)
    ours = sm4.cbc_encrypt(key, iv, plaintext)
    theirs = sm4_cipher(key, gmssl_sm4.SM4_ENCRYPT).crypt_cbc(iv, plaintext)
    assert ours == theirs
    assert sm4_cipher(key, gmssl_sm4.SM4_DECRYPT).crypt_cbc(iv, ours) == plaintext
    assert sm4.cbc_decrypt(key, iv, theirs) == plaintext


# ---- SM2 signatures ------------------------------------------------------------------------

def test_gmssl_reproduces_standard_signature_and_we_verify_it() -> None:
    key = SM2PrivateKey.from_private_value(STD_D)
    assert key.public_key.point == bytes.fromhex("04" + STD_PUB)
    gm = crypt(f"{STD_D:064x}", STD_PUB)
    # gmssl derives the same public key from d, and the same e = SM3(Z ‖ M).
    assert gm._kg(STD_D, gm.ecc_table["g"]) == STD_PUB.lower()
    assert gm._sm3_z(b"message digest") == key.public_key.message_digest(b"message digest").hex()
    signature_hex = gm.sign_with_sm3(b"message digest", STD_K)
    assert signature_hex == f"{STD_R:064x}{STD_S:064x}"
    signature = rs_to_signature(int(signature_hex[:64], 16), int(signature_hex[64:], 16))
    key.public_key.verify(signature, b"message digest")
    key.public_key.verify(signature, b"message digest", DEFAULT_USER_ID)
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(signature, b"message digesT")
    # The standard's signature, signed anew by us, is checked by gmssl too.
    r, s = signature_to_rs(key.sign(b"message digest"))
    assert gm.verify_with_sm3(f"{r:064x}{s:064x}", b"message digest")


@pytest.mark.parametrize("message", [b"", b"abc", os.urandom(1000)], ids=["empty", "abc", "1k"])
def test_we_verify_gmssl_signatures(pair: tuple[SM2PrivateKey, str, str], message: bytes
                                    ) -> None:
    key, priv_hex, pub_hex = pair
    signature_hex = crypt(priv_hex, pub_hex).sign_with_sm3(message)
    r, s = int(signature_hex[:64], 16), int(signature_hex[64:], 16)
    assert 1 <= r < N and 1 <= s < N
    key.public_key.verify(rs_to_signature(r, s), message)
    # gmssl's Z uses the default ID: under any other ID the signature is refused.
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(rs_to_signature(r, s), message, b"alice@example.com")
    with pytest.raises(SignatureInvalid):
        key.public_key.verify(rs_to_signature(r, s), message + b"?")
    # asn1=True: gmssl writes DER, which we take as is.
    der_hex = crypt(priv_hex, pub_hex, asn1=True).sign_with_sm3(message)
    key.public_key.verify(bytes.fromhex(der_hex), message)


@pytest.mark.parametrize("message", [b"", b"abc", os.urandom(1000)], ids=["empty", "abc", "1k"])
def test_gmssl_verifies_our_signatures(pair: tuple[SM2PrivateKey, str, str], message: bytes
                                       ) -> None:
    key, priv_hex, pub_hex = pair
    gm = crypt(priv_hex, pub_hex)
    signature = key.sign(message)
    r, s = signature_to_rs(signature)
    assert gm.verify_with_sm3(f"{r:064x}{s:064x}", message)
    assert crypt(priv_hex, pub_hex, asn1=True).verify_with_sm3(signature.hex(), message)
    assert not gm.verify_with_sm3(f"{r:064x}{s:064x}", message + b"?")
    # A signature under another ID does not pass gmssl's fixed default-ID Z.
    r2, s2 = signature_to_rs(key.sign(message, b"alice@example.com"))
    assert not gm.verify_with_sm3(f"{r2:064x}{s2:064x}", message)


def test_gmssl_public_key_works_with_our_key_import(pair: tuple[SM2PrivateKey, str, str]
                                                    ) -> None:
    key, priv_hex, pub_hex = pair
    gm = crypt(priv_hex, pub_hex)
    assert gm._kg(int(priv_hex, 16), gm.ecc_table["g"]) == pub_hex
    assert SM2PublicKey.from_point(bytes.fromhex(pub_hex)) == key.public_key
    assert SM2PrivateKey.from_private_value(int(priv_hex, 16)).key_id == key.key_id


# ---- SM2 encryption ------------------------------------------------------------------------

def test_gmssl_decrypts_standard_ciphertext() -> None:
    gm = crypt(f"{STD_D:064x}", STD_PUB, mode=1)
    assert gm.decrypt(STD_CT_C1C3C2[1:]) == b"encryption standard"
    key = SM2PrivateKey.from_private_value(STD_D)
    assert key.decrypt(STD_CT_C1C3C2, CiphertextForm.C1C3C2) == b"encryption standard"


@pytest.mark.parametrize("mode", [1, 0], ids=["C1C3C2", "C1C2C3"])
@pytest.mark.parametrize("size", [1, 19, 32, 100])
def test_we_decrypt_gmssl_ciphertext(pair: tuple[SM2PrivateKey, str, str], mode: int,
                                     size: int) -> None:
    key, priv_hex, pub_hex = pair
    plaintext = secrets.token_bytes(size)
    ciphertext = gm_encrypt(crypt(priv_hex, pub_hex, mode=mode), plaintext)
    assert len(ciphertext) == 64 + 32 + size  # C1 without its 04 prefix
    # We check C3, so this proves gmssl's C3 = SM3(x2 ‖ M ‖ y2) too.
    assert key.decrypt(b"\x04" + ciphertext, MODES[mode]) == plaintext
    with pytest.raises(DecryptionFailed):
        key.decrypt(b"\x04" + ciphertext, MODES[1 - mode])  # the other order: C3 check fails


@pytest.mark.parametrize("mode", [1, 0], ids=["C1C3C2", "C1C2C3"])
@pytest.mark.parametrize("size", [1, 19, 32, 100])
def test_gmssl_decrypts_our_ciphertext(pair: tuple[SM2PrivateKey, str, str], mode: int,
                                       size: int) -> None:
    key, priv_hex, pub_hex = pair
    plaintext = secrets.token_bytes(size)
    ciphertext = key.public_key.encrypt(plaintext, MODES[mode])
    assert ciphertext[0] == 4 and len(ciphertext) == 65 + 32 + size
    assert crypt(priv_hex, pub_hex, mode=mode).decrypt(ciphertext[1:]) == plaintext


def test_gmssl_does_not_detect_wrong_order_but_we_do(pair: tuple[SM2PrivateKey, str, str]
                                                     ) -> None:
    """gmssl skips the C3 check: fed the wrong layout it returns garbage without complaint."""
    key, priv_hex, pub_hex = pair
    plaintext = b"sixteen byte key" * 3
    c1c2c3 = key.public_key.encrypt(plaintext, CiphertextForm.C1C2C3)
    garbage = crypt(priv_hex, pub_hex, mode=1).decrypt(c1c2c3[1:])
    assert garbage != plaintext
    with pytest.raises(DecryptionFailed):
        key.decrypt(c1c2c3, CiphertextForm.C1C3C2)


def test_we_never_emit_an_all_zero_kdf_mask(pair: tuple[SM2PrivateKey, str, str]) -> None:
    """GB/T 32918.4 §6.1 A5: if t = KDF(x2 ‖ y2, klen) is all zero, pick another k; gmssl's
    decrypt returns None on such a ciphertext. With a 1-byte message t = 0 means C2 = M, which
    an unchecked implementation would emit about once in 256 encryptions."""
    key, priv_hex, pub_hex = pair
    for _ in range(2000):
        assert key.public_key.encrypt(b"\x5a", CiphertextForm.C1C3C2)[-1] != 0x5A
    ciphertext = key.public_key.encrypt(b"\x5a", CiphertextForm.C1C3C2)
    assert crypt(priv_hex, pub_hex, mode=1).decrypt(ciphertext[1:]) == b"\x5a"

"""Interoperability with the OpenSSL 3 command line (`openssl dgst`, `pkeyutl`, `pkey`, `enc`, ...).

Everything OpenSSL writes is read by trustspace and everything trustspace writes is read by
OpenSSL: SM2 signatures (default, custom and empty user IDs), SM2 ciphertexts (GM/T 0009 DER),
PKCS#8 keys (plain and password-protected), SM3, HMAC-SM3, SM4-CBC/CTR/ECB, and the `trustspace`
command line itself. The openssl CLI runs in a subprocess inside a per-test temporary directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trustspace.crypto import (
    SM3,
    CiphertextForm,
    DecryptionFailed,
    KeyFormatError,
    SignatureInvalid,
    SM2PrivateKey,
    SM2PublicKey,
    hmac_sm3,
    sm3,
    sm3_file,
    sm3_stream,
    sm4,
)
from trustspace.crypto.sm2 import SM2Ciphertext

pytestmark = pytest.mark.interop

OPENSSL = "/usr/bin/openssl"
TRUSTSPACE = Path(sys.executable).with_name("trustspace")
DEFAULT_ID = "1234567812345678"
CUSTOM_ID = "alice@data-space.example"
UNICODE_ID = "张三@例子.cn"
MESSAGES = [b"", b"abc", b"hello, data space\n", bytes(range(256)) * 40]


# ---- helpers -------------------------------------------------------------------------------

def run(argv: list[str | Path], cwd: Path, stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, input=stdin, capture_output=True,
                          check=False, timeout=60)


def openssl(cwd: Path, *args: str | Path, stdin: bytes | None = None) -> bytes:
    """Run `openssl args...`; fail the test with OpenSSL's stderr unless it exits 0."""
    result = run([OPENSSL, *args], cwd, stdin)
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(map(str, args))} exited {result.returncode}: "
                    + result.stderr.decode(errors="replace"))
    return result.stdout


def openssl_rc(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return run([OPENSSL, *args], cwd)


def trustspace(cwd: Path, *args: str | Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(TRUSTSPACE), *map(str, args)], cwd=cwd, capture_output=True,
                          check=False, timeout=60, env={**os.environ, **(env or {})})


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def openssl_verify(cwd: Path, pub: Path, sig: Path, msg: Path, distid: str | None
                   ) -> bool:
    """`openssl dgst -sm3 -verify`; distid None means the CLI's own default (empty ID)."""
    opts: list[str | Path] = [] if distid is None else ["-sigopt", f"distid:{distid}"]
    result = openssl_rc(cwd, "dgst", "-sm3", "-verify", pub, *opts, "-signature", sig, msg)
    out = result.stdout.decode()
    # "Verified OK" / "Verification failure": check both the text and the exit code agree.
    assert (result.returncode == 0) == ("Verified OK" in out), (result.returncode, out)
    return result.returncode == 0


def openssl_sign(cwd: Path, key: Path, msg: Path, distid: str | None, out: str) -> bytes:
    opts: list[str | Path] = [] if distid is None else ["-sigopt", f"distid:{distid}"]
    openssl(cwd, "dgst", "-sm3", "-sign", key, *opts, "-out", out, msg)
    return (cwd / out).read_bytes()


def pkey_text_public_point(cwd: Path, *args: str | Path) -> bytes:
    """The 'pub:' hex block of `openssl pkey -text -noout`."""
    text = openssl(cwd, "pkey", *args, "-text", "-noout").decode()
    match = re.search(r"pub:\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert match, text
    return bytes.fromhex(re.sub(r"[\s:]", "", match.group(1)))


def pkey_text_private_value(cwd: Path, *args: str | Path) -> int:
    text = openssl(cwd, "pkey", *args, "-text", "-noout").decode()
    match = re.search(r"priv:\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert match, text
    return int(re.sub(r"[\s:]", "", match.group(1)), 16)


@pytest.fixture(scope="module")
def ossl_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An SM2 key pair made by `openssl genpkey`: (key.pem, pub.pem)."""
    d = tmp_path_factory.mktemp("ossl_key")
    openssl(d, "genpkey", "-algorithm", "SM2", "-out", "key.pem")
    openssl(d, "pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem")
    return d / "key.pem", d / "pub.pem"


@pytest.fixture(scope="module")
def our_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[SM2PrivateKey, Path, Path]:
    """An SM2 key pair made by trustspace, written as key.pem (PKCS#8) and pub.pem."""
    d = tmp_path_factory.mktemp("our_key")
    key = SM2PrivateKey.generate()
    return (key, write(d / "key.pem", key.to_pem()),
            write(d / "pub.pem", key.public_key.to_pem()))


# ---- SM2 signatures: OpenSSL verifies ours ---------------------------------------------------

@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "abc", "line", "10KiB"])
def test_openssl_verifies_our_signature_with_default_id(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path], message: bytes) -> None:
    key, _, pub = our_key
    msg = write(tmp_path / "msg", message)
    sig = write(tmp_path / "sig", key.sign(message))
    assert openssl_verify(tmp_path, pub, sig, msg, DEFAULT_ID)
    # The openssl CLI's own default is the EMPTY ID, not GM/T 0009's: without distid it refuses.
    assert not openssl_verify(tmp_path, pub, sig, msg, None)
    tampered = write(tmp_path / "tampered", message + b"!")
    assert not openssl_verify(tmp_path, pub, sig, tampered, DEFAULT_ID)


@pytest.mark.parametrize("user_id", [CUSTOM_ID, UNICODE_ID, "x"])
def test_openssl_verifies_our_signature_with_custom_id(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path], user_id: str) -> None:
    key, _, pub = our_key
    message = b"contract #42: k-anonymity >= 10"
    msg = write(tmp_path / "msg", message)
    sig = write(tmp_path / "sig", key.sign(message, user_id.encode()))
    assert openssl_verify(tmp_path, pub, sig, msg, user_id)
    assert not openssl_verify(tmp_path, pub, sig, msg, DEFAULT_ID)
    assert not openssl_verify(tmp_path, pub, sig, msg, None)
    # hexdistid names the same bytes.
    result = openssl_rc(tmp_path, "dgst", "-sm3", "-verify", pub, "-sigopt",
                        f"hexdistid:{user_id.encode().hex()}", "-signature", sig, msg)
    assert result.returncode == 0, result.stderr
    # And a default-ID signature does not pass as the custom ID.
    sig_default = write(tmp_path / "sig_default", key.sign(message))
    assert not openssl_verify(tmp_path, pub, sig_default, msg, user_id)


def test_openssl_verifies_our_signature_with_empty_id(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path]) -> None:
    key, _, pub = our_key
    msg = write(tmp_path / "msg", b"empty user id")
    sig = write(tmp_path / "sig", key.sign(b"empty user id", b""))
    assert openssl_verify(tmp_path, pub, sig, msg, None)
    assert not openssl_verify(tmp_path, pub, sig, msg, DEFAULT_ID)


# ---- SM2 signatures: we verify OpenSSL's --------------------------------------------------

@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "abc", "line", "10KiB"])
def test_we_verify_openssl_signature_with_default_id(
        tmp_path: Path, ossl_key: tuple[Path, Path], message: bytes) -> None:
    key_pem, pub_pem = ossl_key
    msg = write(tmp_path / "msg", message)
    signature = openssl_sign(tmp_path, key_pem, msg, DEFAULT_ID, "sig")
    public = SM2PublicKey.from_pem(pub_pem.read_bytes())
    public.verify(signature, message)
    SM2PrivateKey.from_pem(key_pem.read_bytes()).public_key.verify(signature, message)
    with pytest.raises(SignatureInvalid):
        public.verify(signature, message + b"\x00")
    with pytest.raises(SignatureInvalid):
        public.verify(signature, message, b"")


def test_we_verify_openssl_signature_with_custom_and_empty_ids(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    public = SM2PublicKey.from_pem(pub_pem.read_bytes())
    message = b"delivery receipt 7"
    msg = write(tmp_path / "msg", message)
    for user_id in (CUSTOM_ID, UNICODE_ID):
        signature = openssl_sign(tmp_path, key_pem, msg, user_id, "sig")
        public.verify(signature, message, user_id.encode())
        with pytest.raises(SignatureInvalid):
            public.verify(signature, message)  # default ID
        with pytest.raises(SignatureInvalid):
            public.verify(signature, message, user_id.encode() + b"x")
    # No distid: the CLI signs with an empty ID, which we verify only when told so.
    signature = openssl_sign(tmp_path, key_pem, msg, None, "sig_empty")
    public.verify(signature, message, b"")
    with pytest.raises(SignatureInvalid):
        public.verify(signature, message)


def test_openssl_signature_tampered_is_refused(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    public = SM2PublicKey.from_pem(pub_pem.read_bytes())
    msg = write(tmp_path / "msg", b"x" * 100)
    signature = openssl_sign(tmp_path, key_pem, msg, DEFAULT_ID, "sig")
    for i in (len(signature) - 1, len(signature) // 2):
        bad = bytearray(signature)
        bad[i] ^= 0x01
        with pytest.raises(SignatureInvalid):
            public.verify(bytes(bad), b"x" * 100)


# ---- SM2 encryption ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 16, 32, 33, 1000])
def test_openssl_decrypts_our_ciphertext(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path], size: int) -> None:
    key, key_pem, _ = our_key
    plaintext = os.urandom(size)
    ciphertext = key.public_key.encrypt(plaintext)  # default form: GM/T 0009 DER
    assert ciphertext == SM2Ciphertext.parse(ciphertext, CiphertextForm.DER).encode(
        CiphertextForm.DER)
    write(tmp_path / "ct", ciphertext)
    assert openssl(tmp_path, "pkeyutl", "-decrypt", "-inkey", key_pem, "-in", "ct") == plaintext
    # The explicit DER form is the same thing OpenSSL reads.
    write(tmp_path / "ct2", key.public_key.encrypt(plaintext, CiphertextForm.DER))
    assert openssl(tmp_path, "pkeyutl", "-decrypt", "-inkey", key_pem, "-in", "ct2") == plaintext


@pytest.mark.parametrize("size", [1, 19, 32, 1000])
def test_we_decrypt_openssl_ciphertext(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path], size: int) -> None:
    key, _, pub = our_key
    plaintext = os.urandom(size)
    write(tmp_path / "pt", plaintext)
    openssl(tmp_path, "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", "pt", "-out", "ct")
    ciphertext = (tmp_path / "ct").read_bytes()
    assert ciphertext[0] == 0x30  # a DER SEQUENCE
    assert key.decrypt(ciphertext, CiphertextForm.DER) == plaintext
    # The same ciphertext laid out raw C1C3C2 / C1C2C3 decrypts too.
    parsed = SM2Ciphertext.parse(ciphertext, CiphertextForm.DER)
    assert len(parsed.c2) == size
    for form in (CiphertextForm.C1C3C2, CiphertextForm.C1C2C3):
        assert key.decrypt(parsed.encode(form), form) == plaintext
    # Tampering with C2 or C3 is detected (C3 check), never silently decrypted.
    for tampered in (parsed.c1 + parsed.c3 + bytes([parsed.c2[0] ^ 1]) + parsed.c2[1:],
                     parsed.c1 + bytes([parsed.c3[0] ^ 1]) + parsed.c3[1:] + parsed.c2):
        with pytest.raises(DecryptionFailed):
            key.decrypt(tampered, CiphertextForm.C1C3C2)


def test_we_decrypt_openssl_ciphertext_with_openssl_key(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    write(tmp_path / "pt", b"wrapped content key 0123456789ab")
    openssl(tmp_path, "pkeyutl", "-encrypt", "-pubin", "-inkey", pub_pem, "-in", "pt",
            "-out", "ct")
    key = SM2PrivateKey.from_pem(key_pem.read_bytes())
    assert key.decrypt((tmp_path / "ct").read_bytes()) == b"wrapped content key 0123456789ab"
    # And OpenSSL's key decrypts what we encrypt to its public key.
    write(tmp_path / "ct2", SM2PublicKey.from_pem(pub_pem.read_bytes()).encrypt(b"reply"))
    assert openssl(tmp_path, "pkeyutl", "-decrypt", "-inkey", key_pem, "-in", "ct2") == b"reply"
    # A different key cannot decrypt OpenSSL's ciphertext.
    with pytest.raises(DecryptionFailed):
        SM2PrivateKey.generate().decrypt((tmp_path / "ct").read_bytes())


# ---- keys ----------------------------------------------------------------------------------

def test_openssl_reads_our_plain_private_key(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path]) -> None:
    key, key_pem, pub = our_key
    assert key_pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert openssl(tmp_path, "pkey", "-in", key_pem, "-pubout") == key.public_key.to_pem()
    assert pkey_text_public_point(tmp_path, "-in", key_pem) == key.public_key.point
    text = openssl(tmp_path, "pkey", "-in", key_pem, "-text", "-noout").decode()
    assert "ASN1 OID: SM2" in text
    # The private scalar OpenSSL sees rebuilds the very same key.
    d = pkey_text_private_value(tmp_path, "-in", key_pem)
    assert SM2PrivateKey.from_private_value(d).public_key == key.public_key
    # Our public key file: OpenSSL reads it and sees the same point.
    assert pkey_text_public_point(tmp_path, "-pubin", "-in", pub) == key.public_key.point
    assert openssl(tmp_path, "pkey", "-pubin", "-in", pub, "-outform", "DER") \
        == key.public_key.to_der()


def test_openssl_reads_our_password_protected_key(tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    pem = key.to_pem(password=b"s3cret pass", iterations=1000)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    write(tmp_path / "enc.pem", pem)
    out = openssl(tmp_path, "pkey", "-in", "enc.pem", "-passin", "pass:s3cret pass", "-pubout")
    assert out == key.public_key.to_pem()
    assert openssl_rc(tmp_path, "pkey", "-in", "enc.pem", "-passin", "pass:wrong",
                      "-pubout").returncode != 0
    # What OpenSSL decrypts is the same key: it decrypts our ciphertext with it.
    write(tmp_path / "ct", key.public_key.encrypt(b"for the holder"))
    assert openssl(tmp_path, "pkeyutl", "-decrypt", "-inkey", "enc.pem", "-passin",
                   "pass:s3cret pass", "-in", "ct") == b"for the holder"
    # The documented protection: PBES2 with PBKDF2-HMAC-SHA256 and SM4-CBC, fresh salt.
    structure = openssl(tmp_path, "asn1parse", "-in", "enc.pem").decode()
    for name in ("PBES2", "PBKDF2", "hmacWithSHA256", "sm4-cbc"):
        assert f":{name}" in structure, structure
    assert ":03E8" in structure  # 1000 iterations
    assert key.to_pem(password=b"s3cret pass", iterations=1000) != pem


def test_openssl_reads_our_key_with_default_iterations(tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    write(tmp_path / "enc.pem", key.to_pem(password=b"pw"))
    assert ":030D40" in openssl(tmp_path, "asn1parse", "-in", "enc.pem").decode()  # 200000
    assert openssl(tmp_path, "pkey", "-in", "enc.pem", "-passin", "pass:pw", "-pubout") \
        == key.public_key.to_pem()


def test_we_read_openssl_plain_keys(tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    key = SM2PrivateKey.from_pem(key_pem.read_bytes())
    public = SM2PublicKey.from_pem(pub_pem.read_bytes())
    assert key.public_key == public
    assert public.point == pkey_text_public_point(tmp_path, "-in", key_pem)
    assert pkey_text_private_value(tmp_path, "-in", key_pem) > 0
    assert SM2PrivateKey.from_private_value(
        pkey_text_private_value(tmp_path, "-in", key_pem)).key_id == key.key_id
    # Key id = SM3 of the SubjectPublicKeyInfo DER, as OpenSSL computes it.
    spki = openssl(tmp_path, "pkey", "-pubin", "-in", pub_pem, "-outform", "DER")
    assert public.to_der() == spki
    digest = openssl(tmp_path, "dgst", "-sm3", "-binary", stdin=spki)
    assert public.key_id == digest.hex()
    # Our re-encodings are the ones OpenSSL writes.
    assert public.to_pem() == pub_pem.read_bytes()
    assert key.to_pem() == openssl(tmp_path, "pkey", "-in", key_pem)
    # DER forms too: SPKI, PKCS#8 and the traditional form genpkey writes with -outform DER.
    assert SM2PublicKey.from_der(spki) == public
    pkcs8 = openssl(tmp_path, "pkcs8", "-topk8", "-nocrypt", "-in", key_pem, "-outform", "DER")
    assert SM2PrivateKey.from_der(pkcs8).key_id == key.key_id
    openssl(tmp_path, "genpkey", "-algorithm", "SM2", "-outform", "DER", "-out", "k.der")
    der_key = SM2PrivateKey.from_der((tmp_path / "k.der").read_bytes())
    assert der_key.public_key.point == pkey_text_public_point(
        tmp_path, "-inform", "DER", "-in", "k.der")


@pytest.mark.parametrize("cipher", ["sm4-cbc", "aes-256-cbc"])
def test_we_read_openssl_password_protected_key(
        tmp_path: Path, ossl_key: tuple[Path, Path], cipher: str) -> None:
    key_pem, pub_pem = ossl_key
    openssl(tmp_path, "pkcs8", "-topk8", "-v2", cipher, "-passout", "pass:correct horse",
            "-in", key_pem, "-out", "enc.pem")
    pem = (tmp_path / "enc.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = SM2PrivateKey.from_pem(pem, b"correct horse")
    assert key.public_key == SM2PublicKey.from_pem(pub_pem.read_bytes())
    with pytest.raises(KeyFormatError, match="password"):
        SM2PrivateKey.from_pem(pem)
    with pytest.raises(KeyFormatError, match="password"):
        SM2PrivateKey.from_pem(pem, b"wrong horse")
    # The key we loaded signs something OpenSSL verifies against its own public key.
    write(tmp_path / "msg", b"signed with an imported key")
    write(tmp_path / "sig", key.sign(b"signed with an imported key"))
    assert openssl_verify(tmp_path, pub_pem, tmp_path / "sig", tmp_path / "msg", DEFAULT_ID)


def test_traditional_sec1_key_needs_pkcs8_conversion(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    """We read PKCS#8 PEM only; `openssl ec` writes SEC1 ('SM2 PRIVATE KEY'): convert first."""
    key_pem, _ = ossl_key
    openssl(tmp_path, "ec", "-in", key_pem, "-out", "sec1.pem")
    sec1 = (tmp_path / "sec1.pem").read_bytes()
    assert sec1.startswith(b"-----BEGIN SM2 PRIVATE KEY-----")
    with pytest.raises(KeyFormatError):
        SM2PrivateKey.from_pem(sec1)
    converted = openssl(tmp_path, "pkcs8", "-topk8", "-nocrypt", "-in", "sec1.pem")
    assert SM2PrivateKey.from_pem(converted).key_id == \
        SM2PrivateKey.from_pem(key_pem.read_bytes()).key_id


def test_we_read_openssl_compressed_public_key(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    """RFC 5480 allows a compressed point in the SPKI; `openssl ec -conv_form compressed`
    writes one. It is the same key: same point, same key id, and it verifies OpenSSL's
    signature."""
    key_pem, pub_pem = ossl_key
    uncompressed = SM2PublicKey.from_pem(pub_pem.read_bytes())
    openssl(tmp_path, "ec", "-pubin", "-in", pub_pem, "-pubout", "-conv_form", "compressed",
            "-out", "pubc.pem")
    compressed_pem = (tmp_path / "pubc.pem").read_bytes()
    spki = openssl(tmp_path, "pkey", "-pubin", "-in", "pubc.pem", "-outform", "DER")
    assert len(spki) == 26 + 33  # the BIT STRING holds 02/03 ‖ x
    msg = write(tmp_path / "msg", b"compressed")
    signature = openssl_sign(tmp_path, key_pem, msg, DEFAULT_ID, "sig")
    public = SM2PublicKey.from_pem(compressed_pem)  # accepted...
    public.verify(signature, b"compressed")  # ...so it must work as the same key
    assert public.point == uncompressed.point
    assert public.key_id == uncompressed.key_id
    assert public == uncompressed


def test_we_sign_with_openssl_key_holding_compressed_point(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    """A PKCS#8 key whose ECPrivateKey carries the public point compressed (openssl ec
    -conv_form compressed, then pkcs8 -topk8) is a valid SM2 key: it must sign like any other."""
    key_pem, pub_pem = ossl_key
    openssl(tmp_path, "ec", "-in", key_pem, "-conv_form", "compressed", "-out", "keyc.pem")
    openssl(tmp_path, "pkcs8", "-topk8", "-nocrypt", "-in", "keyc.pem", "-out", "keyc8.pem")
    key = SM2PrivateKey.from_pem((tmp_path / "keyc8.pem").read_bytes())  # accepted...
    msg = write(tmp_path / "msg", b"signed by a compressed-point key")
    write(tmp_path / "sig", key.sign(b"signed by a compressed-point key"))  # ...so it signs
    assert openssl_verify(tmp_path, pub_pem, tmp_path / "sig", msg, DEFAULT_ID)
    assert key.key_id == SM2PublicKey.from_pem(pub_pem.read_bytes()).key_id


# ---- SM3 and HMAC-SM3 ----------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"abc", b"abcd" * 16, bytes(range(256)) * 3 + b"x"],
                         ids=["empty", "abc", "abcd*16", "769B"])
def test_sm3_matches_openssl(tmp_path: Path, data: bytes) -> None:
    write(tmp_path / "f", data)
    expected = openssl(tmp_path, "dgst", "-sm3", "-binary", "f")
    assert len(expected) == 32
    assert sm3(data) == expected
    assert SM3(data).digest() == expected
    assert sm3_file(tmp_path / "f") == expected
    text = openssl(tmp_path, "dgst", "-sm3", "f").decode()
    assert text.strip().endswith("= " + expected.hex())


def test_sm3_multi_megabyte_file_matches_openssl(tmp_path: Path) -> None:
    size = 5 * (1 << 20) + 12345  # not a whole number of chunks or blocks
    data = os.urandom(size)
    path = write(tmp_path / "big.bin", data)
    expected = openssl(tmp_path, "dgst", "-sm3", "-binary", "big.bin")
    assert sm3_file(path) == expected
    assert sm3_file(path, chunk_size=4096 + 3) == expected
    with open(path, "rb") as stream:
        assert sm3_stream(stream) == expected
    incremental = SM3()
    for i in range(0, size, 1_000_003):
        incremental.update(data[i : i + 1_000_003])
    assert incremental.digest() == expected
    assert sm3(data[:-1]) != expected


@pytest.mark.parametrize("key", [b"KEY", b"k" * 64, b"a much longer key " * 6],
                         ids=["short", "block", "long"])
def test_hmac_sm3_matches_openssl(tmp_path: Path, key: bytes) -> None:
    data = b"The quick brown fox jumps over the lazy dog" * 7
    write(tmp_path / "m", data)
    by_mac = openssl(tmp_path, "mac", "-digest", "SM3", "-macopt", f"hexkey:{key.hex()}",
                     "-binary", "-in", "m", "HMAC")
    assert len(by_mac) == 32
    assert hmac_sm3(key, data) == by_mac
    by_dgst = openssl(tmp_path, "dgst", "-sm3", "-hmac", key.decode(), "-binary", "m")
    assert by_dgst == by_mac
    assert hmac_sm3(key + b"x", data) != by_mac


# ---- SM4 ---------------------------------------------------------------------------------

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


def openssl_enc(cwd: Path, cipher: str, key: bytes, iv: bytes | None, data: bytes,
                decrypt: bool = False, nopad: bool = False) -> bytes:
    write(cwd / "enc_in", data)
    args: list[str | Path] = ["enc", f"-{cipher}", "-K", key.hex()]
    if iv is not None:
        args += ["-iv", iv.hex()]
    if decrypt:
        args.append("-d")
    if nopad:
        args.append("-nopad")
    return openssl(cwd, *args, "-in", "enc_in")


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_sm4_cbc_matches_openssl(tmp_path: Path, size: int) -> None:
    key, iv, plaintext = os.urandom(16), os.urandom(16), os.urandom(size)
    ours = sm4.cbc_encrypt(key, iv, plaintext)
    assert len(ours) == (size // 16 + 1) * 16  # PKCS#7 always adds a block's worth at most
    assert openssl_enc(tmp_path, "sm4-cbc", key, iv, plaintext) == ours
    assert openssl_enc(tmp_path, "sm4-cbc", key, iv, ours, decrypt=True) == plaintext
    assert sm4.cbc_decrypt(key, iv, ours) == plaintext


@pytest.mark.parametrize("counter", ["00000000000000000000000000000000",
                                     "0123456789abcdef0123456789abcdef",
                                     "0000000000000000fffffffffffffffe",
                                     "fffffffffffffffffffffffffffffffe"],
                         ids=["zero", "random", "carry64", "wrap128"])
def test_sm4_ctr_matches_openssl(tmp_path: Path, counter: str) -> None:
    block = bytes.fromhex(counter)
    key, data = os.urandom(16), os.urandom(100)  # 7 blocks: crosses the carry/wrap
    ours = sm4.ctr_crypt(key, block, data)
    assert ours != data
    assert openssl_enc(tmp_path, "sm4-ctr", key, block, data) == ours
    assert sm4.ctr_crypt(key, block, ours) == data


def test_sm4_block_matches_openssl_ecb(tmp_path: Path) -> None:
    # GB/T 32907-2016 example 1, then random blocks.
    assert openssl_enc(tmp_path, "sm4-ecb", SM4_KEY, None, SM4_KEY, nopad=True).hex() \
        == "681edf34d206965e86b3e94f536e4246"
    key = os.urandom(16)
    blocks = os.urandom(64)
    ossl = openssl_enc(tmp_path, "sm4-ecb", key, None, blocks, nopad=True)
    ours = b"".join(sm4.ecb_encrypt_block(key, blocks[i : i + 16]) for i in range(0, 64, 16))
    assert ours == ossl


# ---- the trustspace command line ------------------------------------------------------------

def test_cli_sign_is_verified_by_openssl(
        tmp_path: Path, our_key: tuple[SM2PrivateKey, Path, Path]) -> None:
    key, key_pem, pub = our_key
    msg = write(tmp_path / "report.csv", b"region,count\nnorth,12\nsouth,40\n")
    result = trustspace(tmp_path, "sign", "--key", key_pem, msg, "--out", "report.sig")
    assert result.returncode == 0, result.stderr
    assert key.key_id in result.stdout.decode()
    assert openssl_verify(tmp_path, pub, tmp_path / "report.sig", msg, DEFAULT_ID)
    result = trustspace(tmp_path, "sign", "--key", key_pem, msg, "--out", "custom.sig",
                        "--id", UNICODE_ID)
    assert result.returncode == 0, result.stderr
    assert openssl_verify(tmp_path, pub, tmp_path / "custom.sig", msg, UNICODE_ID)
    assert not openssl_verify(tmp_path, pub, tmp_path / "custom.sig", msg, DEFAULT_ID)


def test_cli_keys_new_with_password_are_read_by_openssl(tmp_path: Path) -> None:
    write(tmp_path / "pw.txt", b"file password\n")
    result = trustspace(tmp_path, "keys", "new", "alice.pem", "--password-file", "pw.txt")
    assert result.returncode == 0, result.stderr
    pub = openssl(tmp_path, "pkey", "-in", "alice.pem", "-passin", "file:pw.txt", "-pubout")
    assert pub == (tmp_path / "alice.pub.pem").read_bytes()
    key_id = re.search(r"key id ([0-9a-f]{64})", result.stdout.decode())
    assert key_id
    assert key_id.group(1) == SM2PublicKey.from_pem(pub).key_id
    msg = write(tmp_path / "m", b"by alice")
    result = trustspace(tmp_path, "sign", "--key", "alice.pem", "--password-env", "ALICE_PW",
                        msg, "--out", "m.sig", env={"ALICE_PW": "file password"})
    assert result.returncode == 0, result.stderr
    assert openssl_verify(tmp_path, tmp_path / "alice.pub.pem", tmp_path / "m.sig", msg,
                          DEFAULT_ID)


def test_cli_raw_encryption_is_decrypted_by_openssl(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    plaintext = os.urandom(300)
    write(tmp_path / "data.bin", plaintext)
    result = trustspace(tmp_path, "encrypt", "--to", pub_pem, "--raw", "data.bin",
                        "--out", "data.sm2")
    assert result.returncode == 0, result.stderr
    assert openssl(tmp_path, "pkeyutl", "-decrypt", "-inkey", key_pem, "-in",
                   "data.sm2") == plaintext
    # And the other way: trustspace decrypts what openssl pkeyutl encrypted.
    openssl(tmp_path, "pkeyutl", "-encrypt", "-pubin", "-inkey", pub_pem, "-in", "data.bin",
            "-out", "ossl.sm2")
    result = trustspace(tmp_path, "decrypt", "--key", key_pem, "ossl.sm2", "--out", "back.bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == plaintext


def test_cli_verifies_openssl_signature_and_refuses_tampered_file(
        tmp_path: Path, ossl_key: tuple[Path, Path]) -> None:
    key_pem, pub_pem = ossl_key
    msg = write(tmp_path / "doc.txt", b"usage policy: aggregate only\n")
    openssl_sign(tmp_path, key_pem, msg, DEFAULT_ID, "doc.sig")
    ok = trustspace(tmp_path, "verify", "--pub", pub_pem, "--sig", "doc.sig", "doc.txt")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode().startswith("OK: valid signature by key ")

    write(tmp_path / "doc.txt", b"usage policy: aggregate ONLY\n")
    bad = trustspace(tmp_path, "verify", "--pub", pub_pem, "--sig", "doc.sig", "doc.txt")
    assert bad.returncode == 1
    assert bad.stdout == b""
    lines = bad.stderr.decode().splitlines()
    assert len(lines) == 1, bad.stderr
    assert lines[0].startswith("refused:")

    # With a custom ID: right ID exits 0, the default ID is refused.
    write(tmp_path / "doc.txt", b"usage policy: aggregate only\n")
    openssl_sign(tmp_path, key_pem, msg, CUSTOM_ID, "custom.sig")
    ok = trustspace(tmp_path, "verify", "--pub", pub_pem, "--sig", "custom.sig", "--id",
                    CUSTOM_ID, "doc.txt")
    assert ok.returncode == 0, ok.stderr
    bad = trustspace(tmp_path, "verify", "--pub", pub_pem, "--sig", "custom.sig", "doc.txt")
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("refused:")

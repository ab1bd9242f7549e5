"""The standards' own examples: GB/T 32905 (SM3), GB/T 32907 (SM4), GB/T 32918 (SM2)."""

from __future__ import annotations

import pytest

from tests.unsafe_sm2_reference import Curve
from tests.vectors import load_blocks
from trustspace.crypto import CiphertextForm, SM2PrivateKey, SM2PublicKey, sm3, sm4, z_value
from trustspace.crypto.sm2 import rs_to_signature

SM3_VECTORS = load_blocks("sm3.txt")
SM4_VECTORS = load_blocks("sm4.txt")
SM2_BLOCKS = load_blocks("sm2.txt")
CURVES = {b["section"].split()[1]: Curve.from_block(b) for b in SM2_BLOCKS
          if b["section"].startswith("curve ")}
SIGN = [b for b in SM2_BLOCKS if b["section"].startswith("sign ")]
ENCRYPT = [b for b in SM2_BLOCKS if b["section"].startswith("encrypt ")]


def _id(block: dict[str, str]) -> str:
    return block.get("name", block.get("section", "?"))


def _h(block: dict[str, str], key: str) -> bytes:
    return bytes.fromhex(block[key])


def _i(block: dict[str, str], key: str) -> int:
    return int(block[key], 16)


def test_vector_files_are_loaded() -> None:
    assert len(SM3_VECTORS) == 2 and len(SM4_VECTORS) == 2
    assert set(CURVES) == {"fp256-example", "sm2p256v1"} and len(SIGN) == 2 and len(ENCRYPT) == 2


@pytest.mark.parametrize("v", SM3_VECTORS, ids=_id)
def test_sm3_standard_examples(v: dict[str, str]) -> None:
    assert sm3(_h(v, "message")).hex() == v["digest"]


@pytest.mark.parametrize("v", SM4_VECTORS, ids=_id)
def test_sm4_standard_examples(v: dict[str, str]) -> None:
    key, block = _h(v, "key"), _h(v, "plaintext")
    for _ in range(int(v["rounds"])):
        block = sm4.ecb_encrypt_block(key, block)
    assert block.hex() == v["ciphertext"]


def test_recommended_curve_constants_match_the_standard() -> None:
    from trustspace.crypto import sm2

    c = CURVES["sm2p256v1"]
    assert (c.p, c.a, c.b, c.gx, c.gy, c.n) == (sm2.P, sm2.A, sm2.B, sm2.GX, sm2.GY, sm2.N)


@pytest.mark.parametrize("v", SIGN, ids=_id)
def test_sm2_signature_examples_reproduced_with_the_fixed_k(v: dict[str, str]) -> None:
    curve = CURVES[v["curve"]]
    d, user_id, message = _i(v, "d"), _h(v, "id"), _h(v, "message")
    assert curve.public(d) == (_i(v, "px"), _i(v, "py"))
    if "za" in v:
        assert curve.z(user_id, curve.public(d)).hex() == v["za"]
        assert sm3(_h(v, "za") + message).hex() == v["e"]
    assert curve.sign(d, message, user_id, _i(v, "k")) == (_i(v, "r"), _i(v, "s"))
    assert curve.verify(curve.public(d), message, user_id, _i(v, "r"), _i(v, "s"))


@pytest.mark.parametrize("v", ENCRYPT, ids=_id)
def test_sm2_encryption_examples_reproduced_with_the_fixed_k(v: dict[str, str]) -> None:
    curve = CURVES[v["curve"]]
    d, message = _i(v, "d"), _h(v, "message")
    assert curve.encrypt(curve.public(d), message, _i(v, "k")).hex() == v["ciphertext"]
    assert curve.decrypt(d, _h(v, "ciphertext")) == message


RECOMMENDED_SIGN = [v for v in SIGN if v["curve"] == "sm2p256v1"]
RECOMMENDED_ENCRYPT = [v for v in ENCRYPT if v["curve"] == "sm2p256v1"]


@pytest.mark.parametrize("v", RECOMMENDED_SIGN, ids=_id)
def test_production_sm2_verifies_the_standard_signature(v: dict[str, str]) -> None:
    key = SM2PrivateKey.from_private_value(_i(v, "d"))
    point = b"\x04" + _h(v, "px") + _h(v, "py")
    assert key.public_key.point == point
    public = SM2PublicKey.from_point(point)
    curve = CURVES["sm2p256v1"]
    assert z_value(point, _h(v, "id")) == curve.z(_h(v, "id"), (_i(v, "px"), _i(v, "py")))
    public.verify(rs_to_signature(_i(v, "r"), _i(v, "s")), _h(v, "message"), _h(v, "id"))
    # And our own random-k signatures verify under the independent reference.
    sig = key.sign(_h(v, "message"), _h(v, "id"))
    from trustspace.crypto.sm2 import signature_to_rs

    r, s = signature_to_rs(sig)
    assert curve.verify((_i(v, "px"), _i(v, "py")), _h(v, "message"), _h(v, "id"), r, s)


@pytest.mark.parametrize("v", RECOMMENDED_ENCRYPT, ids=_id)
def test_production_sm2_decrypts_the_standard_ciphertext(v: dict[str, str]) -> None:
    key = SM2PrivateKey.from_private_value(_i(v, "d"))
    ct = _h(v, "ciphertext")
    assert key.decrypt(ct, CiphertextForm.C1C3C2) == _h(v, "message")
    der = key.public_key.encrypt(_h(v, "message"))
    # Our (random-k) ciphertext decrypts under the reference, so both follow the same standard.
    raw = key.public_key.encrypt(_h(v, "message"), CiphertextForm.C1C3C2)
    assert CURVES["sm2p256v1"].decrypt(_i(v, "d"), raw) == _h(v, "message")
    assert key.decrypt(der) == _h(v, "message")

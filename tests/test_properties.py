"""Property-based: round trips for arbitrary inputs, and any single flipped bit is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustspace.crypto import (
    CiphertextForm,
    CryptoError,
    SignatureInvalid,
    SM2PrivateKey,
    open_sealed,
    seal,
    sign_document,
    sm4,
    verify_document,
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(), json_values, max_size=5)
user_ids = st.binary(max_size=64)


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(message=st.binary(max_size=2048), user_id=user_ids, signer=st.integers(0, 4))
def test_sign_verify_round_trip(keys: list[SM2PrivateKey], message: bytes, user_id: bytes,
                                signer: int) -> None:
    key = keys[signer]
    key.public_key.verify(key.sign(message, user_id), message, user_id)


@given(message=st.binary(max_size=256), bit=st.integers(min_value=0))
def test_any_flipped_signature_bit_is_refused(keys: list[SM2PrivateKey], message: bytes,
                                              bit: int) -> None:
    sig = keys[0].sign(message)
    with pytest.raises(SignatureInvalid):
        keys[0].public_key.verify(flip(sig, bit), message)


@given(message=st.binary(min_size=1, max_size=512), bit=st.integers(min_value=0))
def test_any_flipped_message_bit_is_refused(keys: list[SM2PrivateKey], message: bytes,
                                            bit: int) -> None:
    sig = keys[0].sign(message)
    with pytest.raises(SignatureInvalid):
        keys[0].public_key.verify(sig, flip(message, bit))


@given(plaintext=st.binary(min_size=1, max_size=1024), form=st.sampled_from(CiphertextForm))
def test_encrypt_decrypt_round_trip(keys: list[SM2PrivateKey], plaintext: bytes,
                                    form: CiphertextForm) -> None:
    ct = keys[1].public_key.encrypt(plaintext, form)
    assert keys[1].decrypt(ct, form) == plaintext


@given(plaintext=st.binary(min_size=1, max_size=256), form=st.sampled_from(CiphertextForm),
       bit=st.integers(min_value=0))
def test_any_flipped_ciphertext_bit_is_refused(keys: list[SM2PrivateKey], plaintext: bytes,
                                               form: CiphertextForm, bit: int) -> None:
    ct = keys[1].public_key.encrypt(plaintext, form)
    with pytest.raises(CryptoError):
        keys[1].decrypt(flip(ct, bit), form)


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64),
       bit=st.integers(min_value=0))
def test_sm4_gcm_round_trip_and_tamper(plaintext: bytes, aad: bytes, bit: int) -> None:
    key = sm4.new_key()
    sealed = sm4.seal(key, plaintext, aad)
    assert sm4.unseal(key, sealed, aad) == plaintext
    with pytest.raises(CryptoError):
        sm4.unseal(key, flip(sealed, bit), aad)


@given(body=bodies, doc_type=st.text(min_size=1, max_size=40), n_signers=st.integers(1, 3))
def test_document_round_trip(keys: list[SM2PrivateKey], body: dict[str, object], doc_type: str,
                             n_signers: int) -> None:
    doc = sign_document(doc_type, body, keys[0])
    for key in keys[1:n_signers]:
        doc = doc.countersign(key)
    out = verify_document(doc.to_bytes(), [k.public_key for k in keys],
                          required_signers=[k.key_id for k in keys[:n_signers]])
    assert out.body == body and out.type == doc_type


@given(body=bodies, bit=st.integers(min_value=0))
def test_any_flipped_document_bit_is_refused(keys: list[SM2PrivateKey], body: dict[str, object],
                                             bit: int) -> None:
    signed = sign_document("trustspace.test", body, keys[0]).countersign(keys[1])
    try:
        accepted = verify_document(flip(signed.to_bytes(), bit),
                                   [keys[0].public_key, keys[1].public_key])
    except CryptoError:
        return
    # A flip may only be accepted where it does not change the document: JSON spells some
    # strings two ways ("\u001f" and "\u001F"), and what is signed, stored and logged is the
    # canonical form, which such a flip leaves as it was.
    assert accepted.to_bytes() == signed.to_bytes()


recipient_sets = st.sets(st.integers(0, 4), min_size=1, max_size=5)


@given(plaintext=st.binary(max_size=2048), who=recipient_sets, aad=st.binary(max_size=32))
def test_envelope_round_trip(keys: list[SM2PrivateKey], plaintext: bytes, who: set[int],
                             aad: bytes) -> None:
    env = seal(plaintext, [keys[i].public_key for i in who], aad).to_bytes()
    for i in range(5):
        if i in who:
            assert open_sealed(env, keys[i], aad) == plaintext
        else:
            with pytest.raises(CryptoError):
                open_sealed(env, keys[i], aad)


@given(plaintext=st.binary(max_size=256), who=recipient_sets, bit=st.integers(min_value=0),
       opener=st.integers(0, 4))
def test_any_flipped_envelope_bit_is_refused(keys: list[SM2PrivateKey], plaintext: bytes,
                                             who: set[int], bit: int, opener: int) -> None:
    env = seal(plaintext, [keys[i].public_key for i in who]).to_bytes()
    with pytest.raises(CryptoError):
        open_sealed(flip(env, bit), keys[opener])


def test_every_single_bit_flip_of_a_document_and_an_envelope_is_refused(
        keys: list[SM2PrivateKey]) -> None:
    """Exhaustive, not sampled: each of the ~10,000 one-bit variants is refused."""
    doc = sign_document("trustspace.agreement", {"uses": 3, "k": "10"}, keys[0], role="p")
    data = doc.countersign(keys[1]).to_bytes()
    trusted = [keys[0].public_key, keys[1].public_key]
    for bit in range(len(data) * 8):
        with pytest.raises(CryptoError):
            verify_document(flip(data, bit), trusted)
    env = seal(b"policy", [keys[0].public_key, keys[1].public_key]).to_bytes()
    for bit in range(len(env) * 8):
        with pytest.raises(CryptoError):
            open_sealed(flip(env, bit), keys[bit % 2])


any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(any_json)
def test_canonical_json_fast_path_writes_rfc8785_bytes(value: object) -> None:
    """The fast path (orjson) and the rfc8785 package agree on every value both take
    (surrogates, astral keys, floats and big integers fall back to rfc8785)."""
    import rfc8785

    from trustspace.crypto import canonical_json

    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, UnicodeEncodeError):
        with pytest.raises((ValueError, UnicodeEncodeError)):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_canonical_json_orders_astral_keys_by_utf16() -> None:
    from trustspace.crypto import canonical_json

    # U+1F600 sorts after U+FF5E by code point, before it by UTF-16 unit (0xD83D < 0xFF5E).
    assert canonical_json({"\uff5e": 1, "\U0001f600": 2}) == \
        '{"\U0001f600":2,"\uff5e":1}'.encode()
    assert canonical_json({"a": "\u2028\x7f\x1f"}) == b'{"a":"\xe2\x80\xa8\x7f\\u001f"}'


@given(body=st.dictionaries(st.text(), any_json, max_size=5),
       doc_type=st.text(min_size=1, max_size=20), role=st.none() | st.text(max_size=10),
       tamper=st.booleans())
def test_the_canonical_form_is_to_bytes_and_intact(body: dict[str, object], doc_type: str,
                                                    role: str | None, tamper: bool) -> None:
    """`SignedDocument.canonical()` splices the body's canonical JSON into the rest of the
    document: the bytes of `to_bytes()` and the verdict of `intact`, for every value (through
    the rfc8785 path too), or the same refusal."""
    from trustspace.crypto import SignedDocument
    from trustspace.crypto.document import Signature, _digest_of

    try:
        digest = _digest_of(doc_type, body)
    except ValueError:
        digest = "sm3:" + "00" * 32
    if tamper:
        digest = "sm3:" + "11" * 32
    doc = SignedDocument(doc_type, body, digest,
                         (Signature("ab" * 32, b"\x01\x02", role, "2026-11-26T12:00:00Z"),))
    try:
        expected = (doc.intact, doc.to_bytes())
    except ValueError:
        with pytest.raises(ValueError):
            canonical = doc.canonical()
            _ = (canonical.intact, canonical.to_bytes())
        return
    canonical = doc.canonical()
    assert (canonical.intact, canonical.to_bytes()) == expected


def test_canonical_json_of_values_nested_deeper_than_orjson_goes() -> None:
    import rfc8785

    from trustspace.crypto import canonical_json

    value: object = {"a": "\u00e9", "b": [1, None]}
    for _ in range(300):  # orjson refuses more than 255 levels
        value = [value]
    assert canonical_json(value) == rfc8785.dumps(value)

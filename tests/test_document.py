"""Signed documents and envelopes: format, verification failures by name, recipients."""

from __future__ import annotations

import json

import pytest

from trustspace.crypto import (
    DecryptionFailed,
    DocumentInvalid,
    Envelope,
    NotARecipient,
    SignedDocument,
    SM2PrivateKey,
    canonical_json,
    open_sealed,
    seal,
    sign_document,
    sm3,
    verify_document,
)

BODY = {"agreement": "urn:ts:agreement:1", "uses": 3, "purpose": ["research"], "k": 10}


def _pair(keys: list[SM2PrivateKey]) -> SignedDocument:
    doc = sign_document("trustspace.agreement", BODY, keys[0], role="provider",
                        signed_at="2026-11-26T12:00:00Z")
    return doc.countersign(keys[1], role="consumer")


def test_document_shape_and_digest(keys: list[SM2PrivateKey]) -> None:
    doc = _pair(keys)
    wire = json.loads(doc.to_bytes())
    assert set(wire) == {"format", "type", "body", "digest", "signatures"}
    assert wire["format"] == "trustspace.signed/1"
    expected = sm3(canonical_json({"format": "trustspace.signed/1",
                                   "type": "trustspace.agreement", "body": BODY}))
    assert wire["digest"] == "sm3:" + expected.hex()
    assert [s["keyId"] for s in wire["signatures"]] == [keys[0].key_id, keys[1].key_id]
    assert doc.to_bytes() == canonical_json(wire)  # sent in canonical form


def test_verify_accepts_all_key_forms(keys: list[SM2PrivateKey]) -> None:
    doc = _pair(keys)
    pubs = [keys[0].public_key, keys[1].public_key]
    by_id = {k.key_id: k for k in pubs}
    for trusted in (pubs, by_id, by_id.get):
        out = verify_document(doc.to_bytes(), trusted, expected_type="trustspace.agreement",
                              required_signers=[keys[0].key_id, keys[1].key_id])
        assert out.body == BODY and out.signer_ids == (keys[0].key_id, keys[1].key_id)


def _refusal(doc: object, trusted: object, **kw: object) -> DocumentInvalid:
    with pytest.raises(DocumentInvalid) as err:
        verify_document(doc, trusted, **kw)  # type: ignore[arg-type]
    return err.value


def test_each_failure_is_named(keys: list[SM2PrivateKey]) -> None:
    doc = _pair(keys)
    pubs = [keys[0].public_key, keys[1].public_key]
    wire = doc.to_json()

    changed = {**wire, "body": {**BODY, "uses": 4}}
    assert _refusal(changed, pubs).reason == "digest-mismatch"

    assert _refusal(doc, [keys[0].public_key]).reason == "unknown-signer"
    assert _refusal(doc, [keys[0].public_key]).key_id == keys[1].key_id

    role_changed = json.loads(doc.to_bytes())
    role_changed["signatures"][1]["role"] = "provider"
    err = _refusal(role_changed, pubs)
    assert (err.reason, err.key_id) == ("signature-invalid", keys[1].key_id)

    swapped = json.loads(doc.to_bytes())
    swapped["signatures"][0]["sig"] = swapped["signatures"][1]["sig"]
    assert _refusal(swapped, pubs).reason == "signature-invalid"

    assert _refusal({**wire, "signatures": []}, pubs).reason == "unsigned"
    assert _refusal(doc, pubs, expected_type="trustspace.receipt").reason == "wrong-type"
    err = _refusal(doc, pubs, required_signers=[keys[2].key_id])
    assert (err.reason, err.key_id) == ("missing-signature", keys[2].key_id)

    dup = json.loads(doc.to_bytes())
    dup["signatures"].append(dup["signatures"][0])
    assert _refusal(dup, pubs).reason == "duplicate-signer"

    assert _refusal({**wire, "format": "trustspace.signed/2"}, pubs).reason == \
        "unsupported-format"
    assert _refusal({**wire, "extra": 1}, pubs).reason == "malformed"
    assert _refusal(b"{not json", pubs).reason == "malformed"
    assert _refusal(b"\xff\xfe", pubs).reason == "malformed"
    bad_alg = json.loads(doc.to_bytes())
    bad_alg["signatures"][0]["alg"] = "ECDSA-SHA256"
    assert _refusal(bad_alg, pubs).reason == "unsupported-algorithm"
    upper = {**wire, "digest": wire["digest"].upper()}
    assert _refusal(upper, pubs).reason == "malformed"


def test_lying_resolver_is_refused(keys: list[SM2PrivateKey]) -> None:
    doc = sign_document("t", BODY, keys[0])
    assert _refusal(doc, lambda _kid: keys[1].public_key).reason == "unknown-signer"


def test_countersign_rules(keys: list[SM2PrivateKey]) -> None:
    doc = sign_document("t", BODY, keys[0])
    with pytest.raises(ValueError, match="already signed"):
        doc.countersign(keys[0])
    forged = SignedDocument(doc.type, {**BODY, "uses": 99}, doc.digest, doc.signatures)
    with pytest.raises(DocumentInvalid, match="digest-mismatch"):
        forged.countersign(keys[1])


def test_values_without_canonical_json_are_refused(keys: list[SM2PrivateKey]) -> None:
    with pytest.raises(ValueError, match="canonical"):
        sign_document("t", {"x": float("nan")}, keys[0])
    with pytest.raises(ValueError, match="canonical"):
        sign_document("t", {"x": 2**60}, keys[0])


def test_jcs_orders_keys_and_numbers_as_rfc8785() -> None:
    # RFC 8785 §3.2.3: keys sorted by UTF-16 code units; numbers in ECMAScript form.
    assert canonical_json({"b": 1, "a": [1.0, 1e21, 0.1], "\u20ac": "", "\U0001f600": 0}) == \
        '{"a":[1,1e+21,0.1],"b":1,"\u20ac":"","\U0001f600":0}'.encode()


def test_envelope_opens_for_each_recipient_only(keys: list[SM2PrivateKey]) -> None:
    provider, consumer, regulator, outsider = keys[:4]
    env = seal(b"policy text", [provider.public_key, consumer.public_key, regulator.public_key,
                                consumer.public_key], associated_data=b"receipt-42")
    assert len(env.recipients) == 3  # duplicates collapse
    for party in (provider, consumer, regulator):
        assert open_sealed(env.to_bytes(), party, b"receipt-42") == b"policy text"
    with pytest.raises(NotARecipient):
        open_sealed(env, outsider, b"receipt-42")
    with pytest.raises(DecryptionFailed):
        open_sealed(env, provider, b"receipt-43")  # bound to its context


def test_envelope_recipient_list_is_authenticated(keys: list[SM2PrivateKey]) -> None:
    env = seal(b"x", [keys[0].public_key, keys[1].public_key])
    dropped = Envelope(env.recipients[:1], env.nonce, env.ciphertext)
    with pytest.raises(DecryptionFailed, match="tag"):
        open_sealed(dropped, keys[0] if env.recipients[0][0] == keys[0].key_id else keys[1])
    with pytest.raises(ValueError, match="at least one"):
        seal(b"x", [])


def test_envelope_parsing_is_strict(keys: list[SM2PrivateKey]) -> None:
    wire = seal(b"x", [keys[0].public_key]).to_json()
    for bad in ({**wire, "alg": "AES-GCM"}, {**wire, "recipients": []}, {**wire, "nonce": "AA"},
                {**wire, "format": "x"}, {k: v for k, v in wire.items() if k != "nonce"},
                {**wire, "ciphertext": wire["ciphertext"] + "="}):
        with pytest.raises(DocumentInvalid):
            open_sealed(bad, keys[0])

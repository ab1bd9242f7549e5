"""Signed documents: the format of every message, agreement and receipt trustspace signs.

Wire form (a JSON object, exchanged in RFC 8785 canonical form)::

    {"format": "trustspace.signed/1",
     "type": "<what the body is, e.g. trustspace.agreement>",
     "body": {...},
     "digest": "sm3:<hex SM3 of JCS({format, type, body})>",
     "signatures": [{"alg": "SM2-SM3", "keyId": "<SM3 of the signer's SPKI>",
                     "role": "provider", "signedAt": "2026-11-26T12:00:00Z",
                     "sig": "<base64url DER (r, s)>"}]}

Each signature signs JCS of its own entry without "sig" (so its key id, role and time are
protected too), which names the digest; SM2 with the GM/T 0009 default user ID. Verification
raises `DocumentInvalid` with a reason code naming the first thing that failed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import DocumentInvalid, SignatureInvalid
from .jcs import b64u_decode, b64u_encode, canonical_json, load_json, versioned_object
from .signer import Signer
from .sm2 import SM2PublicKey
from .sm3 import sm3

FORMAT = "trustspace.signed/1"
ALG = "SM2-SM3"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DOC_FIELDS = {"format", "type", "body", "digest", "signatures"}
_SIG_REQUIRED = {"alg", "keyId", "sig"}
_SIG_OPTIONAL = {"role", "signedAt"}

KeyResolver = Callable[[str], SM2PublicKey | None]


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: bytes
    role: str | None = None
    signed_at: str | None = None

    def protected(self, digest: str) -> dict[str, str]:
        entry = {"alg": ALG, "digest": digest, "keyId": self.key_id}
        if self.role is not None:
            entry["role"] = self.role
        if self.signed_at is not None:
            entry["signedAt"] = self.signed_at
        return entry

    def to_json(self) -> dict[str, str]:
        entry = {"alg": ALG, "keyId": self.key_id, "sig": b64u_encode(self.value)}
        if self.role is not None:
            entry["role"] = self.role
        if self.signed_at is not None:
            entry["signedAt"] = self.signed_at
        return entry


def _digest_of(doc_type: str, body: Mapping[str, Any]) -> str:
    return "sm3:" + sm3(canonical_json({"format": FORMAT, "type": doc_type, "body": body})).hex()


def _signature(signer: Signer, digest: str, role: str | None, signed_at: str | None) -> Signature:
    unsigned = Signature(signer.key_id, b"", role, signed_at)
    value = signer.sign(canonical_json(unsigned.protected(digest)))
    return Signature(signer.key_id, value, role, signed_at)


@dataclass(frozen=True)
class SignedDocument:
    type: str
    body: Mapping[str, Any]
    digest: str
    signatures: tuple[Signature, ...]

    @property
    def signer_ids(self) -> tuple[str, ...]:
        return tuple(s.key_id for s in self.signatures)

    def countersign(self, signer: Signer, role: str | None = None,
                    signed_at: str | None = None) -> SignedDocument:
        """A copy with one more signature; the body is unchanged."""
        if signer.key_id in self.signer_ids:
            raise ValueError(f"key {signer.key_id} has already signed this document")
        if _digest_of(self.type, self.body) != self.digest:
            raise DocumentInvalid("digest-mismatch", "refusing to countersign a modified body")
        extra = _signature(signer, self.digest, role, signed_at)
        return SignedDocument(self.type, self.body, self.digest, self.signatures + (extra,))

    @property
    def intact(self) -> bool:
        """Whether `digest` is the digest of this type and body (signatures not checked)."""
        return _digest_of(self.type, self.body) == self.digest

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "type": self.type,
            "body": self.body,
            "digest": self.digest,
            "signatures": [s.to_json() for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def canonical(self) -> Canonical:
        """The body's canonical JSON, computed once, for `intact` and `to_bytes` both (the
        log needs the two for every receipt it appends)."""
        return Canonical(self, canonical_json(self.body))

    @classmethod
    def from_json(cls, obj: object) -> SignedDocument:
        """Parse strictly: unknown fields, versions and algorithms are refused."""
        obj = versioned_object(obj, "a signed document", FORMAT, _DOC_FIELDS)
        doc_type, body, digest, sigs = obj["type"], obj["body"], obj["digest"], obj["signatures"]
        if not isinstance(doc_type, str) or not doc_type:
            raise DocumentInvalid("malformed", "type must be a non-empty string")
        if not isinstance(body, dict):
            raise DocumentInvalid("malformed", "body must be a JSON object")
        if not isinstance(digest, str) or not digest.startswith("sm3:") \
                or not _HEX64.fullmatch(digest[4:]):
            raise DocumentInvalid("malformed", "digest must be 'sm3:' + 64 lowercase hex digits")
        if not isinstance(sigs, list):
            raise DocumentInvalid("malformed", "signatures must be a list")
        return cls(doc_type, body, digest, tuple(_parse_signature(s) for s in sigs))

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDocument:
        return cls.from_json(load_json(data))


class Canonical:
    """`SignedDocument.intact` and `to_bytes()` from one serialisation of the body.

    RFC 8785 writes an object's members in the order of their names, each value serialised as
    it is on its own (§3.2.3). "body" sorts first among a document's members, so the canonical
    JSON of the document, and of what its digest covers, is `{"body":` + the body's canonical
    JSON + the rest of the object written with any other body. The body's bytes are those of
    when `SignedDocument.canonical()` ran.
    """

    __slots__ = ("document", "body")

    def __init__(self, document: SignedDocument, body: bytes) -> None:
        self.document = document
        self.body = body

    def _splice(self, rest: bytes) -> bytes:
        """`rest` is the canonical JSON of the other members with `"body":0` in its place."""
        return _BODY_KEY + self.body + rest[len(_BODY_KEY) + 1:]  # rest: {"body":0,...}

    @property
    def intact(self) -> bool:
        """= `SignedDocument.intact`: the digest is SM3 of JCS({format, type, body})."""
        doc = self.document
        return "sm3:" + sm3(self._splice(_digest_rest(doc.type))).hex() == doc.digest

    def to_bytes(self) -> bytes:
        """= `SignedDocument.to_bytes()`."""
        doc = self.document
        members = {"body": 0, "digest": doc.digest, "format": FORMAT,
                   "signatures": [s.to_json() for s in doc.signatures], "type": doc.type}
        # All of these are strings: ASCII ones need no general check (see `_plain`), and a
        # sorted writer gives RFC 8785's bytes for them.
        texts = [doc.digest, doc.type]
        for sig in doc.signatures:
            texts += (sig.key_id, sig.role or "", sig.signed_at or "")
        if all(type(text) is str and text.isascii() for text in texts):
            return self._splice(orjson.dumps(members, option=orjson.OPT_SORT_KEYS))
        return self._splice(canonical_json(members))


@functools.lru_cache(maxsize=256)
def _digest_rest(doc_type: str) -> bytes:
    """What follows the body in the JSON a digest covers: the same for every document of a
    type, so computed once per type (the log checks thousands of receipts a second)."""
    return canonical_json({"body": 0, "format": FORMAT, "type": doc_type})


_BODY_KEY = b'{"body":'


def _parse_signature(entry: object) -> Signature:
    if not isinstance(entry, dict):
        raise DocumentInvalid("malformed", "a signature is a JSON object")
    fields = set(entry)
    if not fields >= _SIG_REQUIRED or fields - _SIG_REQUIRED - _SIG_OPTIONAL:
        raise DocumentInvalid("malformed", f"signature fields {sorted(fields)}")
    if entry["alg"] != ALG:
        raise DocumentInvalid("unsupported-algorithm", f"signature alg {entry['alg']!r}")
    key_id = entry["keyId"]
    if not isinstance(key_id, str) or not _HEX64.fullmatch(key_id):
        raise DocumentInvalid("malformed", "keyId must be 64 lowercase hex digits")
    for name in _SIG_OPTIONAL & fields:
        if not isinstance(entry[name], str):
            raise DocumentInvalid("malformed", f"signature {name} must be a string")
    return Signature(key_id, b64u_decode(entry["sig"], "sig"), entry.get("role"),
                     entry.get("signedAt"))


def sign_document(doc_type: str, body: Mapping[str, Any], signer: Signer,
                  role: str | None = None, signed_at: str | None = None) -> SignedDocument:
    """Sign `body` (any JSON object) as a document of `doc_type`."""
    if not doc_type:
        raise ValueError("a document needs a type")
    body = dict(body)
    digest = _digest_of(doc_type, body)
    return SignedDocument(doc_type, body, digest, (_signature(signer, digest, role, signed_at),))


def verify_document(doc: SignedDocument | Mapping[str, Any] | bytes,
                    keys: Mapping[str, SM2PublicKey] | KeyResolver | Iterable[SM2PublicKey],
                    expected_type: str | None = None,
                    required_signers: Iterable[str] = ()) -> SignedDocument:
    """Check a signed document; return it parsed, or raise `DocumentInvalid` naming the failure.

    `keys` are the trusted public keys (by key id, as a resolver, or a plain collection). Every
    signature on the document must verify against a trusted key; `required_signers` (key ids)
    must all be among them.
    """
    if isinstance(doc, bytes):
        doc = SignedDocument.from_bytes(doc)
    elif not isinstance(doc, SignedDocument):
        doc = SignedDocument.from_json(dict(doc))
    resolve = _resolver(keys)
    if expected_type is not None and doc.type != expected_type:
        raise DocumentInvalid("wrong-type", f"expected {expected_type!r}, got {doc.type!r}")
    if _digest_of(doc.type, doc.body) != doc.digest:
        raise DocumentInvalid("digest-mismatch", "body, type or format changed after signing")
    if not doc.signatures:
        raise DocumentInvalid("unsigned", "the document carries no signature")
    seen: set[str] = set()
    for sig in doc.signatures:
        if sig.key_id in seen:
            raise DocumentInvalid("duplicate-signer", key_id=sig.key_id)
        seen.add(sig.key_id)
        key = resolve(sig.key_id)
        if key is None:
            raise DocumentInvalid("unknown-signer", "no trusted key with this id",
                                  key_id=sig.key_id)
        if key.key_id != sig.key_id:
            raise DocumentInvalid("unknown-signer", "resolver returned another key",
                                  key_id=sig.key_id)
        try:
            key.verify(sig.value, canonical_json(sig.protected(doc.digest)))
        except SignatureInvalid as exc:
            raise DocumentInvalid("signature-invalid", exc.reason, key_id=sig.key_id) from None
    missing = set(required_signers) - seen
    if missing:
        raise DocumentInvalid("missing-signature", "required signer(s) absent",
                              key_id=sorted(missing)[0])
    return doc


def _resolver(keys: Mapping[str, SM2PublicKey] | KeyResolver | Iterable[SM2PublicKey]
              ) -> KeyResolver:
    if isinstance(keys, Mapping):
        return keys.get
    if callable(keys):
        return keys
    table = {k.key_id: k for k in keys}
    return table.get

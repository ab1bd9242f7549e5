"""Receipts: the signed evidence every agreement and every computation leaves behind.

A receipt is a crypto-core signed document of type `RECEIPT_TYPE`. Its body has a public part
(ids, kind, digests, times, outcome: what the ledger, the log and anyone holding the receipt
may see) and an optional confidential part (policy text, job parameters) sealed in an SM4
digital envelope to the two parties and the data space's regulators, no one else::

    {"id": "urn:uuid:...", "kind": "authorization", "provider": "...", "consumer": "...",
     "agreementId": "...", "agreementDigest": "sm3:...", "issuedAt": "...",
     "public": {...kind-specific...},
     "confidential": <trustspace.envelope/1> | null}

The envelope's associated data is the receipt id, so a confidential part cannot be moved to
another receipt. The issuer signs with its role (`_ISSUERS`: the provider for authorization,
delivery, refusal and revocation receipts; either party for a termination, the one that ended
the agreement); authorization and delivery receipts are countersigned by the consumer when it
receives them, and count only with both signatures (`verify_receipt`).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trustspace.crypto import (
    Decrypter,
    DocumentInvalid,
    Envelope,
    SignedDocument,
    Signer,
    SM2PublicKey,
    canonical_json,
    open_sealed,
    seal,
    sign_document,
    sm3,
    verify_document,
)
from trustspace.crypto.jcs import load_json

RECEIPT_TYPE = "trustspace.receipt"


class Kind(enum.StrEnum):
    AUTHORIZATION = "authorization"
    DELIVERY = "delivery"
    REFUSAL = "refusal"
    TERMINATION = "termination"
    REVOCATION = "revocation"

    @property
    def countersigned(self) -> bool:
        """Kinds both parties must sign before they count."""
        return self in (Kind.AUTHORIZATION, Kind.DELIVERY)


def digest_of(value: Any) -> str:
    """SM3 of a JSON value's canonical form, as receipts name what they refer to."""
    return "sm3:" + sm3(canonical_json(value)).hex()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Authorization:
    """Written when a negotiation is FINALIZED."""

    product_id: str
    data_digest: str
    policy: Mapping[str, Any]  # the agreed ODRL policy: confidential, its digest public
    valid_from: datetime
    valid_until: datetime | None = None
    registration_digest: str | None = None

    kind = Kind.AUTHORIZATION

    def public(self) -> dict[str, Any]:
        return {"productId": self.product_id, "dataDigest": self.data_digest,
                "policyDigest": digest_of(dict(self.policy)),
                "registrationDigest": self.registration_digest,
                "validFrom": iso(self.valid_from),
                "validUntil": iso(self.valid_until) if self.valid_until else None}

    def confidential(self) -> dict[str, Any] | None:
        return {"policy": dict(self.policy)}


@dataclass(frozen=True)
class Delivery:
    """One per computation (filled in by the sandbox, federated and homomorphic runners)."""

    job_id: str
    job_request_digest: str
    mode: str  # sandbox | federated | homomorphic
    code_digest: str
    input_digest: str
    result_digest: str | None  # None: nothing was released (the job failed)
    input_bytes: int
    result_bytes: int
    started_at: datetime
    finished_at: datetime
    outcome: str  # succeeded | failed | withheld
    rows: int | None = None
    checks: Sequence[str] = ()  # release checks passed (aggregation floor, size limit, ...)
    parameters: Mapping[str, Any] | None = None  # confidential

    kind = Kind.DELIVERY

    def public(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "jobRequestDigest": self.job_request_digest,
                "mode": self.mode, "codeDigest": self.code_digest,
                "inputDigest": self.input_digest, "resultDigest": self.result_digest,
                "inputBytes": self.input_bytes, "resultBytes": self.result_bytes,
                "rows": self.rows, "startedAt": iso(self.started_at),
                "finishedAt": iso(self.finished_at), "outcome": self.outcome,
                "checks": list(self.checks)}

    def confidential(self) -> dict[str, Any] | None:
        return None if self.parameters is None else {"parameters": dict(self.parameters)}


@dataclass(frozen=True)
class Refusal:
    """A job or request refused by policy: which rule failed and why."""

    subject_digest: str  # of the refused job request or message
    rule: str
    reason: str
    details: Mapping[str, Any] | None = None  # confidential (e.g. the request's parameters)

    kind = Kind.REFUSAL

    def public(self) -> dict[str, Any]:
        return {"subjectDigest": self.subject_digest, "rule": self.rule, "reason": self.reason}

    def confidential(self) -> dict[str, Any] | None:
        return None if self.details is None else {"details": dict(self.details)}


ENDINGS = (Kind.TERMINATION, Kind.REVOCATION)


@dataclass(frozen=True)
class Ending:
    """An agreement terminated (by either party) or revoked (by the provider), after it was
    finalized (contracts/ending.py). Public only: there is nothing confidential to seal."""

    kind: Kind  # TERMINATION or REVOCATION
    by: str  # the participant that ended it: the receipt's issuer
    code: str
    reason: str
    product_id: str | None = None  # the agreement's data product, so a product's trace shows it

    def public(self) -> dict[str, Any]:
        return {"by": self.by, "code": self.code, "reason": self.reason,
                "productId": self.product_id}

    def confidential(self) -> dict[str, Any] | None:
        return None


Content = Authorization | Delivery | Refusal | Ending


@dataclass(frozen=True)
class Parties:
    provider: str
    consumer: str
    agreement_id: str | None
    agreement_digest: str | None


def issue(content: Content, parties: Parties, issuer: Signer, role: str, now: datetime,
          recipients: Iterable[SM2PublicKey], receipt_id: str | None = None) -> SignedDocument:
    """Sign a new receipt; the confidential part (if any) is sealed to `recipients` (the two
    parties and the regulators: the issuer's own key is always added)."""
    rid = receipt_id or f"urn:uuid:{uuid.uuid4()}"
    secret = content.confidential()
    envelope = None
    if secret is not None:
        keys = [issuer.public_key, *recipients]
        envelope = seal(canonical_json(secret), keys, rid.encode()).to_json()
    body = {"id": rid, "kind": content.kind.value, "provider": parties.provider,
            "consumer": parties.consumer, "agreementId": parties.agreement_id,
            "agreementDigest": parties.agreement_digest, "issuedAt": iso(now),
            "public": content.public(), "confidential": envelope}
    return sign_document(RECEIPT_TYPE, body, issuer, role=role, signed_at=iso(now))


@dataclass(frozen=True)
class Receipt:
    """A verified receipt, with its public fields at hand."""

    document: SignedDocument

    @property
    def id(self) -> str:
        return str(self.document.body["id"])

    @property
    def kind(self) -> Kind:
        return Kind(self.document.body["kind"])

    @property
    def digest(self) -> str:
        return self.document.digest

    @property
    def provider(self) -> str:
        return str(self.document.body["provider"])

    @property
    def consumer(self) -> str:
        return str(self.document.body["consumer"])

    @property
    def agreement_id(self) -> str | None:
        value = self.document.body.get("agreementId")
        return None if value is None else str(value)

    @property
    def public(self) -> Mapping[str, Any]:
        return dict(self.document.body["public"])

    @property
    def roles(self) -> dict[str, str]:
        """Signature role -> key id."""
        return {s.role or "": s.key_id for s in self.document.signatures}

    def open(self, decrypter: Decrypter) -> dict[str, Any] | None:
        """The confidential part, for a recipient; None when the receipt has none. Raises
        NotARecipient for anyone else."""
        envelope = self.document.body.get("confidential")
        if envelope is None:
            return None
        plain = open_sealed(Envelope.from_json(envelope), decrypter, self.id.encode())
        value = load_json(plain)
        if not isinstance(value, dict):
            raise DocumentInvalid("malformed", "the confidential part is not a JSON object")
        if self.kind is Kind.AUTHORIZATION and \
                digest_of(value.get("policy")) != self.public.get("policyDigest"):
            raise DocumentInvalid("digest-mismatch", "the sealed policy is not the one named")
        return value


_BODY = {"id", "kind", "provider", "consumer", "agreementId", "agreementDigest", "issuedAt",
         "public", "confidential"}
# Who may issue each kind: the role of its one issuing signature.
_ISSUERS: dict[Kind, tuple[str, ...]] = {
    Kind.AUTHORIZATION: ("provider",), Kind.DELIVERY: ("provider",),
    Kind.REFUSAL: ("provider",),
    Kind.TERMINATION: ("provider", "consumer"),  # either party may end an agreement
    Kind.REVOCATION: ("provider",),  # the provider withdraws its data (consent withdrawn, ...)
}


def _issuer_role(kind: Kind, doc: SignedDocument) -> str:
    """The role a receipt was issued under: exactly one signature with a role its kind allows
    (a termination signed by both parties would leave open who ended the agreement)."""
    allowed = _ISSUERS[kind]
    signed = [s.role for s in doc.signatures if s.role in allowed]
    if not signed:
        raise DocumentInvalid("missing-signature", f"no {' or '.join(allowed)} signed this "
                              f"{kind.value} receipt")
    if len(signed) > 1:
        raise DocumentInvalid("wrong-issuer", f"a {kind.value} receipt has one issuer, not "
                              f"{len(signed)}")
    return str(signed[0])


def verify_receipt(doc: SignedDocument | Mapping[str, Any] | bytes,
                   keys: Mapping[str, SM2PublicKey], *, complete: bool = True) -> Receipt:
    """Check a receipt's shape and signatures. `keys` maps participant id -> public key (the
    parties' keys, from their membership credentials). With `complete`, an authorization or
    delivery receipt needs both the provider's and the consumer's signature; without it the
    issuer's alone is enough (a receipt on its way to be countersigned). An ending is signed
    by the party it names in `public.by`, in that party's role; a revocation by the provider."""
    if isinstance(doc, bytes):
        doc = SignedDocument.from_bytes(doc)
    elif not isinstance(doc, SignedDocument):
        doc = SignedDocument.from_json(dict(doc))
    if doc.type != RECEIPT_TYPE:
        raise DocumentInvalid("wrong-type", f"expected {RECEIPT_TYPE!r}, got {doc.type!r}")
    body = doc.body
    if set(body) != _BODY or not isinstance(body.get("public"), dict):
        raise DocumentInvalid("malformed", "a receipt body has exactly the fields "
                              + ", ".join(sorted(_BODY)))
    try:
        kind = Kind(body["kind"])
    except ValueError:
        raise DocumentInvalid("malformed", f"unknown receipt kind {body['kind']!r}") from None
    if not isinstance(body["id"], str) or not body["id"]:
        raise DocumentInvalid("malformed", "a receipt needs an id")
    parties = {role: str(body[role]) for role in ("provider", "consumer")}
    roles = {s.role: s.key_id for s in doc.signatures}
    if kind.countersigned:
        expected = ["provider", "consumer"] if complete else ["provider"]
    else:
        expected = [_issuer_role(kind, doc)]
    if kind in ENDINGS and body["public"].get("by") != parties[expected[0]]:
        raise DocumentInvalid("wrong-issuer", f"the receipt says {body['public'].get('by')!r} "
                              f"ended the agreement, but the {expected[0]} signed it")
    required: list[str] = []
    for role in expected:
        key = keys.get(parties[role])
        if key is None:
            raise DocumentInvalid("unknown-signer", f"no key known for the {role}")
        if roles.get(role) != key.key_id:
            raise DocumentInvalid("missing-signature", f"the {role} has not signed",
                                  key_id=key.key_id)
        required.append(key.key_id)
    trusted = {k.key_id: k for k in keys.values()}
    verify_document(doc, trusted, expected_type=RECEIPT_TYPE, required_signers=required)
    return Receipt(doc)


def countersign(doc: SignedDocument, signer: Signer, now: datetime) -> SignedDocument:
    """The consumer's signature on a receipt the provider issued."""
    return doc.countersign(signer, role="consumer", signed_at=iso(now))

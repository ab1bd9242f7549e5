"""Membership credentials and registration certificates: what the data-space authority signs.

A membership credential is shaped like a W3C Verifiable Credential (VC Data Model 2.0) and carried
as the body of a crypto-core signed document, whose SM2 signature is its proof. A registration
certificate (数据资源登记) binds a product version and its data digest to its provider. Both
verify offline with nothing but the authority's public key (the trust anchor).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trustspace.crypto import (
    DocumentInvalid,
    KeyFormatError,
    SignedDocument,
    Signer,
    SM2PublicKey,
    sign_document,
    verify_document,
)

MEMBERSHIP_TYPE = "trustspace.membership"
REGISTRATION_TYPE = "trustspace.registration"
VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
TS_VOCAB = "https://trustspace.dev/ns/v1#"
ROLES = frozenset({"authority", "provider", "consumer", "regulator"})


class CredentialInvalid(Exception):
    """A credential or certificate is refused; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f": {detail}" if detail else ""))


def iso(t: datetime) -> str:
    """RFC 3339 in UTC with a Z, second precision: the only time form trustspace signs."""
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(value: object, field: str) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise CredentialInvalid("malformed", f"{field} must be an RFC 3339 UTC time")
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise CredentialInvalid("malformed", f"{field} is not a valid time") from None


@dataclass(frozen=True)
class Membership:
    credential_id: str
    participant_id: str
    name: str
    roles: frozenset[str]
    public_key: SM2PublicKey
    endpoint_url: str
    issuer: str
    valid_from: datetime
    valid_until: datetime
    document: SignedDocument

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


def issue_membership(authority: Signer, authority_id: str, *, participant_id: str, name: str,
                     roles: Collection[str], public_key: SM2PublicKey, endpoint_url: str,
                     valid_from: datetime, valid_until: datetime,
                     credential_id: str | None = None) -> SignedDocument:
    unknown = set(roles) - ROLES
    if unknown or not roles:
        raise ValueError(f"roles must be a non-empty subset of {sorted(ROLES)}")
    if valid_until <= valid_from:
        raise ValueError("validUntil must be after validFrom")
    body = {
        "@context": [VC_CONTEXT, {"ts": TS_VOCAB}],
        "id": credential_id or f"urn:uuid:{uuid.uuid4()}",
        "type": ["VerifiableCredential", "TrustspaceMembership"],
        "issuer": authority_id,
        "validFrom": iso(valid_from),
        "validUntil": iso(valid_until),
        "credentialSubject": {
            "id": participant_id,
            "name": name,
            "ts:roles": sorted(roles),
            "ts:publicKey": public_key.to_pem().decode(),
            "ts:keyId": public_key.key_id,
            "ts:endpoint": endpoint_url,
        },
    }
    return sign_document(MEMBERSHIP_TYPE, body, authority, role="authority",
                         signed_at=iso(valid_from))


def _signed_by_authority(doc: SignedDocument | Mapping[str, Any] | bytes,
                         authority_key: SM2PublicKey, doc_type: str) -> SignedDocument:
    try:
        return verify_document(doc, [authority_key], expected_type=doc_type,
                               required_signers=[authority_key.key_id])
    except DocumentInvalid as exc:
        reason = {"unknown-signer": "untrusted-issuer", "missing-signature": "untrusted-issuer",
                  "signature-invalid": "bad-signature", "digest-mismatch": "bad-signature"}
        raise CredentialInvalid(reason.get(exc.reason, "malformed"), str(exc)) from None


def verify_membership(doc: SignedDocument | Mapping[str, Any] | bytes,
                      authority_key: SM2PublicKey, *, now: datetime,
                      is_revoked: Callable[[str], bool] = lambda _cid: False,
                      required_role: str | Collection[str] | None = None) -> Membership:
    """Check issuer signature, shape, validity window, revocation and role; raise
    CredentialInvalid naming the first failure."""
    signed = _signed_by_authority(doc, authority_key, MEMBERSHIP_TYPE)
    body = signed.body
    try:
        subject = body["credentialSubject"]
        roles = frozenset(subject["ts:roles"])
        public_key = SM2PublicKey.from_pem(subject["ts:publicKey"])
        membership = Membership(
            credential_id=str(body["id"]),
            participant_id=str(subject["id"]),
            name=str(subject["name"]),
            roles=roles,
            public_key=public_key,
            endpoint_url=str(subject["ts:endpoint"]),
            issuer=str(body["issuer"]),
            valid_from=parse_iso(body["validFrom"], "validFrom"),
            valid_until=parse_iso(body["validUntil"], "validUntil"),
            document=signed,
        )
    except (KeyError, TypeError, KeyFormatError) as exc:
        raise CredentialInvalid("malformed", f"membership credential: {exc}") from None
    if subject.get("ts:keyId") != public_key.key_id:
        raise CredentialInvalid("malformed", "ts:keyId does not match ts:publicKey")
    check_standing(membership, now=now, is_revoked=is_revoked, required_role=required_role)
    return membership


def check_standing(membership: Membership, *, now: datetime,
                   is_revoked: Callable[[str], bool] = lambda _cid: False,
                   required_role: str | Collection[str] | None = None) -> None:
    """What can change for a credential already verified: its validity window, revocation,
    and whether its roles suit the request. Raises CredentialInvalid."""
    roles = membership.roles
    if now < membership.valid_from:
        raise CredentialInvalid("not-yet-valid", f"valid from {iso(membership.valid_from)}")
    if now >= membership.valid_until:
        raise CredentialInvalid("expired", f"expired at {iso(membership.valid_until)}")
    if is_revoked(membership.credential_id):
        raise CredentialInvalid("revoked", f"credential {membership.credential_id} was revoked")
    if required_role is not None:
        wanted = {required_role} if isinstance(required_role, str) else set(required_role)
        if not wanted & roles:
            raise CredentialInvalid("wrong-role", f"needs one of {sorted(wanted)}, "
                                                  f"holder has {sorted(roles)}")


@dataclass(frozen=True)
class RegistrationCertificate:
    registration_id: str
    product_id: str
    version: int
    provider_id: str
    data_digest: str
    level: str
    category: str
    registered_at: datetime
    document: SignedDocument

    @property
    def digest(self) -> str:
        return self.document.digest


def issue_registration(authority: Signer, authority_id: str, *, provider_id: str,
                       product_id: str, version: int, data_digest: str, level: str,
                       category: str, registered_at: datetime,
                       registration_id: str | None = None) -> SignedDocument:
    body = {
        "registrationId": registration_id or f"urn:uuid:{uuid.uuid4()}",
        "issuer": authority_id,
        "provider": provider_id,
        "product": product_id,
        "version": version,
        "dataDigest": data_digest,
        "level": level,
        "category": category,
        "registeredAt": iso(registered_at),
    }
    return sign_document(REGISTRATION_TYPE, body, authority, role="authority",
                         signed_at=iso(registered_at))


def verify_registration(doc: SignedDocument | Mapping[str, Any] | bytes,
                        authority_key: SM2PublicKey) -> RegistrationCertificate:
    signed = _signed_by_authority(doc, authority_key, REGISTRATION_TYPE)
    body = signed.body
    try:
        return RegistrationCertificate(
            registration_id=str(body["registrationId"]),
            product_id=str(body["product"]),
            version=int(body["version"]),
            provider_id=str(body["provider"]),
            data_digest=str(body["dataDigest"]),
            level=str(body["level"]),
            category=str(body["category"]),
            registered_at=parse_iso(body["registeredAt"], "registeredAt"),
            document=signed,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CredentialInvalid("malformed", f"registration certificate: {exc}") from None

"""What the data-space authority does: admit members, revoke them, register product versions,
keep the federated catalog and match data demands. Plain functions over a database session;
the connector maps `RegistryError` reasons to HTTP statuses."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from trustspace.crypto import (
    DocumentInvalid,
    KeyFormatError,
    SignedDocument,
    Signer,
    SM2PublicKey,
    sign_document,
    verify_document,
)

from .credentials import (
    Membership,
    iso,
    issue_membership,
    issue_registration,
)
from .tables import CatalogEntry, Demand, Member, Registration

APPLICATION_TYPE = "trustspace.application"
REVOCATIONS_TYPE = "trustspace.revocations"
APPLICABLE_ROLES = frozenset({"provider", "consumer", "regulator"})
LEVELS = ("general", "important", "core")
MODES = ("sandbox", "federated", "homomorphic")
_SLUG = re.compile(r"[^a-z0-9]+")


class RegistryError(Exception):
    """A refused registry operation; `reason` is machine-readable, `status` the HTTP status."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        self.reason = reason
        self.detail = detail
        self.status = status
        super().__init__(f"{reason}: {detail}")


def participant_id_for(name: str) -> str:
    slug = _SLUG.sub("-", name.lower()).strip("-")
    if not slug:
        raise RegistryError("malformed", "the name must contain letters or digits")
    return f"urn:trustspace:participant:{slug}"


# ---- membership --------------------------------------------------------------------------

def make_application(signer: Signer, *, name: str, roles: Iterable[str],
                     endpoint_url: str) -> SignedDocument:
    """An applicant's self-signed application: the signature proves it holds the key."""
    return sign_document(APPLICATION_TYPE, {
        "name": name, "roles": sorted(set(roles)), "endpoint": endpoint_url,
        "publicKey": signer.public_key.to_pem().decode(),
    }, signer, role="applicant")


def submit_application(session: Session, application: object, now: datetime) -> Member:
    """Record an application (idempotent for the same key and content)."""
    try:
        doc = application if isinstance(application, SignedDocument) else \
            SignedDocument.from_json(application)
        body = doc.body
        public_key = SM2PublicKey.from_pem(str(body["publicKey"]))
        verify_document(doc, [public_key], expected_type=APPLICATION_TYPE,
                        required_signers=[public_key.key_id])
        name, roles, endpoint = body["name"], body["roles"], body["endpoint"]
    except (DocumentInvalid, KeyFormatError, KeyError, TypeError) as exc:
        raise RegistryError("malformed-application", str(exc)) from None
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise RegistryError("malformed-application", "name must be 1-100 characters")
    if not isinstance(roles, list) or not roles or not set(roles) <= APPLICABLE_ROLES:
        raise RegistryError("malformed-application",
                            f"roles must be a non-empty subset of {sorted(APPLICABLE_ROLES)}")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise RegistryError("malformed-application", "endpoint must be an http(s) URL")
    participant_id = participant_id_for(name)
    existing = session.scalar(select(Member).where(Member.key_id == public_key.key_id))
    if existing is not None:
        if existing.participant_id != participant_id or sorted(existing.roles) != sorted(roles):
            raise RegistryError("duplicate-key", "this key already applied with other details",
                                409)
        return existing
    if session.scalar(select(Member).where(Member.participant_id == participant_id)):
        raise RegistryError("duplicate-name", f"{participant_id} is taken", 409)
    member = Member(
        application_id=str(uuid.uuid4()), participant_id=participant_id, name=name,
        key_id=public_key.key_id, public_key_pem=public_key.to_pem().decode(),
        roles=sorted(set(roles)), endpoint_url=endpoint.rstrip("/"), status="pending",
        created_at=now,
    )
    session.add(member)
    session.flush()
    return member


def _member(session: Session, application_id: str) -> Member:
    member = session.get(Member, application_id, with_for_update=True)
    if member is None:
        raise RegistryError("unknown-application", application_id, 404)
    return member


def approve(session: Session, application_id: str, authority: Signer, authority_id: str,
            now: datetime, days: int) -> Member:
    member = _member(session, application_id)
    if member.status != "pending":
        raise RegistryError("not-pending", f"application is {member.status}", 409)
    doc = issue_membership(
        authority, authority_id, participant_id=member.participant_id, name=member.name,
        roles=member.roles, public_key=SM2PublicKey.from_pem(member.public_key_pem),
        endpoint_url=member.endpoint_url, valid_from=now,
        valid_until=now + timedelta(days=days),
    )
    member.status = "approved"
    member.decided_at = now
    member.credential = doc.to_json()
    member.credential_id = str(doc.body["id"])
    return member


def reject(session: Session, application_id: str, now: datetime) -> Member:
    member = _member(session, application_id)
    if member.status != "pending":
        raise RegistryError("not-pending", f"application is {member.status}", 409)
    member.status = "rejected"
    member.decided_at = now
    return member


def revoke(session: Session, participant_id: str, reason: str, now: datetime) -> Member:
    member = session.scalar(select(Member).where(Member.participant_id == participant_id)
                            .with_for_update())
    if member is None:
        raise RegistryError("unknown-participant", participant_id, 404)
    if member.status != "approved":
        raise RegistryError("not-approved", f"membership is {member.status}", 409)
    member.status = "revoked"
    member.revoked_at = now
    member.revocation_reason = reason
    return member


def revocation_list(session: Session, authority: Signer, now: datetime) -> SignedDocument:
    """The data space's status list: revoked credential ids, and the regulators' keys (every
    receipt's confidential part is sealed to them)."""
    revoked = session.scalars(select(Member.credential_id).where(Member.status == "revoked"))
    regulators = [
        {"participantId": m.participant_id, "publicKey": m.public_key_pem}
        for m in session.scalars(select(Member).where(Member.status == "approved")
                                 .order_by(Member.participant_id))
        if "regulator" in m.roles]
    return sign_document(REVOCATIONS_TYPE, {
        "issuedAt": iso(now), "revoked": sorted(cid for cid in revoked if cid),
        "regulators": regulators,
    }, authority, role="authority")


def member_by_key(session: Session, key_id: str) -> Member | None:
    return session.scalar(select(Member).where(Member.key_id == key_id))


# ---- registration (数据资源登记) -----------------------------------------------------------

def register_product(session: Session, provider: Membership, request: dict[str, Any],
                     authority: Signer, authority_id: str, now: datetime) -> dict[str, Any]:
    """Issue (or return the existing) registration certificate for a product version."""
    try:
        product_id = str(request["productId"])
        version = int(request["version"])
        digest = str(request["dataDigest"])
        level = str(request["level"])
        category = str(request["category"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError("malformed", f"registration request: {exc}") from None
    if level not in LEVELS:
        raise RegistryError("malformed", f"level must be one of {LEVELS}")
    if not re.fullmatch(r"sm3:[0-9a-f]{64}", digest):
        raise RegistryError("malformed", "dataDigest must be sm3:<64 hex>")
    if version < 1:
        raise RegistryError("malformed", "version must be >= 1")
    existing = session.scalar(select(Registration).where(
        Registration.provider_id == provider.participant_id,
        Registration.product_id == product_id, Registration.version == version))
    if existing is not None:
        if existing.data_digest != digest or existing.level != level:
            raise RegistryError("version-conflict",
                                f"{product_id} v{version} is registered with other data", 409)
        return existing.certificate
    doc = issue_registration(authority, authority_id, provider_id=provider.participant_id,
                             product_id=product_id, version=version, data_digest=digest,
                             level=level, category=category, registered_at=now)
    session.add(Registration(
        registration_id=str(doc.body["registrationId"]), provider_id=provider.participant_id,
        product_id=product_id, version=version, data_digest=digest, level=level,
        certificate=doc.to_json(), created_at=now))
    return doc.to_json()


# ---- federated catalog and demands --------------------------------------------------------

@dataclass(frozen=True)
class IndexedDataset:
    dataset_id: str
    title: str
    description: str
    keywords: Sequence[str]
    level: str
    modes: Sequence[str]
    dataset: dict[str, Any]


def index_catalog(session: Session, provider_id: str, datasets: Iterable[IndexedDataset],
                  now: datetime) -> int:
    """Replace the provider's entries in the federated catalog with what it serves now."""
    session.execute(delete(CatalogEntry).where(CatalogEntry.provider_id == provider_id))
    count = 0
    for d in datasets:
        text = " ".join([d.title, d.description, *d.keywords]).lower()
        session.add(CatalogEntry(provider_id=provider_id, dataset_id=d.dataset_id,
                                 title=d.title[:200], search_text=text, level=d.level,
                                 modes=sorted(d.modes), dataset=d.dataset, fetched_at=now))
        count += 1
    return count


def search(session: Session, *, keywords: Sequence[str] = (), provider: str | None = None,
           level: str | None = None, mode: str | None = None,
           limit: int = 100) -> list[CatalogEntry]:
    """Datasets matching every keyword (case-insensitive, in title/description/keywords)."""
    query = select(CatalogEntry)
    for word in keywords:
        escaped = word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(CatalogEntry.search_text.like(f"%{escaped}%", escape="\\"))
    if provider:
        query = query.where(CatalogEntry.provider_id == provider)
    if level:
        query = query.where(CatalogEntry.level == level)
    rows = session.scalars(query.order_by(CatalogEntry.provider_id, CatalogEntry.dataset_id)
                           .limit(limit * 4 if mode else limit)).all()
    if mode:  # JSON list membership is done here, portable across SQLite and PostgreSQL
        rows = [r for r in rows if mode in r.modes][:limit]
    return list(rows)


def add_demand(session: Session, consumer_id: str, request: dict[str, Any],
               now: datetime) -> tuple[Demand, list[CatalogEntry]]:
    try:
        title = str(request["title"])
        description = str(request.get("description", ""))
        keywords = [str(k) for k in request.get("keywords", [])]
        purpose = str(request["purpose"])
        mode = str(request["mode"])
    except (KeyError, TypeError) as exc:
        raise RegistryError("malformed", f"demand: {exc}") from None
    if mode not in MODES:
        raise RegistryError("malformed", f"mode must be one of {MODES}")
    if not 1 <= len(title) <= 200 or len(keywords) > 32 or len(description) > 5000:
        raise RegistryError("malformed", "title 1-200 chars, at most 32 keywords")
    demand = Demand(demand_id=str(uuid.uuid4()), consumer_id=consumer_id, title=title,
                    description=description, keywords=keywords, purpose=purpose, mode=mode,
                    created_at=now)
    session.add(demand)
    return demand, match_demand(session, demand)


def match_demand(session: Session, demand: Demand) -> list[CatalogEntry]:
    """Datasets offering the demanded mode that match any of its keywords (or its title)."""
    words = demand.keywords or demand.title.split()
    found: dict[tuple[str, str], CatalogEntry] = {}
    for word in words:
        for entry in search(session, keywords=[word], mode=demand.mode):
            if entry.level != "core":
                found[(entry.provider_id, entry.dataset_id)] = entry
    return list(found.values())


def demands_for(session: Session, provider_id: str) -> list[tuple[Demand, list[str]]]:
    """The demands that match at least one of this provider's datasets."""
    result = []
    for demand in session.scalars(select(Demand).order_by(Demand.created_at)):
        mine = [e.dataset_id for e in match_demand(session, demand)
                if e.provider_id == provider_id]
        if mine:
            result.append((demand, mine))
    return result

"""Contract negotiation, as plain functions over a database session: each inbound message or
operator decision is one transaction that checks the transition, moves the state, and writes the
next outgoing message to the outbox. Sending is the connector's job.

The agreement is a crypto-core signed document (type `AGREEMENT_TYPE`) that the provider signs
when it agrees and the consumer countersigns when it verifies; each side checks the other's
signature and that the agreed policy is exactly the offer under negotiation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trustspace.crypto import (
    DocumentInvalid,
    SignedDocument,
    Signer,
    SM2PublicKey,
    canonical_json,
    sign_document,
    sm3,
    verify_document,
)
from trustspace.ledger import receipts, store
from trustspace.registry.classification import ComputeMode, Level
from trustspace.registry.credentials import Membership, iso

from . import messages
from .policy import PolicyInvalid, apply_floor, compile_policy
from .states import IllegalTransition, Message, Role, State, next_state
from .tables import Agreement, InboundMessage, Negotiation, OutboxMessage

AGREEMENT_TYPE = "trustspace.agreement"
NEGOTIATION_HINT = "ts:negotiation"


class NegotiationRefused(Exception):
    """A refused message or action; rendered as a ContractNegotiationError."""

    def __init__(self, status: int, code: str, detail: str,
                 neg: Negotiation | None = None) -> None:
        self.status, self.code, self.detail = status, code, detail
        self.provider_pid = neg.provider_pid if neg else None
        self.consumer_pid = neg.consumer_pid if neg else None
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True)
class Me:
    """This node, as a negotiating party."""

    participant_id: str
    signer: Signer
    public_url: str
    regulators: tuple[SM2PublicKey, ...] = ()  # receipts' confidential parts are sealed to them


@dataclass(frozen=True)
class ProductTerms:
    """What the provider offers for a dataset, looked up when a request arrives."""

    dataset_id: str
    offers: tuple[Mapping[str, Any], ...]  # as in the catalog (each with an @id)
    data_digest: str
    registration: str | None
    manual: bool  # the operator approves each request
    level: Level
    modes: tuple[ComputeMode, ...]


ProductLookup = Callable[[str], ProductTerms | None]


def _digest(obj: Mapping[str, Any]) -> str:
    return "sm3:" + sm3(canonical_json(obj)).hex()


def _policy(offer: Mapping[str, Any]) -> dict[str, Any]:
    """The policy content of an offer, without its @type and target (so the catalog form and
    the negotiation form of one offer compare equal) and without the provider's negotiation
    hint (``ts:negotiation``: manual or automatic), which grants nothing."""
    return {k: v for k, v in offer.items() if k not in ("@type", "target", NEGOTIATION_HINT)}


def check_policy(offer: Mapping[str, Any], level: Level,
                 modes: Collection[ComputeMode]) -> None:
    """Refuse an offer the policy engine cannot read, or one granting more than the product's
    classification level and modes allow (the floor)."""
    policy = _policy(offer)
    try:
        compile_policy(policy)
        apply_floor(policy, level, modes)
    except PolicyInvalid as exc:
        where = f" at {exc.path}" if exc.path else ""
        raise NegotiationRefused(400, "policy-invalid", f"{exc.reason}{where}") from None


def _rules(policy: Mapping[str, Any]) -> dict[str, Any]:
    """What a policy grants and demands, without the ids, parties and time that differ
    between an offer and the agreement made from it."""
    return {k: v for k, v in _policy(policy).items()
            if k not in ("@id", "assigner", "assignee", "timestamp")}


def _move(neg: Negotiation, message: Message, sender: Role, now: datetime) -> None:
    try:
        neg.state = next_state(State(neg.state), message, sender).value
    except IllegalTransition as exc:
        raise NegotiationRefused(400, "illegal-transition", str(exc), neg) from None
    neg.updated_at = now


_WRITTEN = "trustspace.outbox"  # session.info key: the outbox rows this transaction wrote


def _send(session: Session, neg: Negotiation, path: str, message: dict[str, Any],
          now: datetime) -> None:
    values: dict[str, Any] = {
        "pid": neg.pid, "url": f"{neg.counterparty_url}{path}", "message": message,
        "attempts": 0, "next_attempt_at": now, "failed": False, "created_at": now}
    # One INSERT now rather than a unit-of-work flush at commit; the row given to the sender
    # is a plain copy of what was written (it only reads it).
    row_id = session.scalar(insert(OutboxMessage).values(values).returning(OutboxMessage.id))
    session.info.setdefault(_WRITTEN, []).append(OutboxMessage(id=row_id, **values))


def written(session: Session) -> list[OutboxMessage]:
    """The outbox rows this session's transaction wrote, so the caller can hand them to the
    sender once it has committed instead of having it scan for them."""
    rows: list[OutboxMessage] = session.info.get(_WRITTEN, [])
    return rows


def _first_time(session: Session, pid: str, body: Mapping[str, Any], now: datetime) -> bool:
    """Record an inbound message; False if exactly this message was applied before. One
    INSERT that skips an existing key (SQLite and PostgreSQL both have ON CONFLICT DO
    NOTHING) instead of a read and then an ORM insert: this runs for every message."""
    upsert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    # RETURNING says whether a row went in (psycopg's rowcount here is -1).
    added = session.scalar(upsert(InboundMessage).values(
        pid=pid, digest=_digest(body), received_at=now).on_conflict_do_nothing()
        .returning(InboundMessage.pid))
    return added is not None


def _own(session: Session, pid: str | None, role: Role, sender: Membership,
         other_pid: str | None) -> Negotiation:
    """The negotiation `pid` names, if it is ours in `role` and `sender` is its counterparty;
    404 otherwise (the same answer for unknown and not-yours, revealing nothing)."""
    neg = session.get(Negotiation, pid, with_for_update=True) if pid else None
    if neg is None or neg.role != role.value or neg.counterparty_id != sender.participant_id:
        raise NegotiationRefused(404, "unknown-negotiation", f"no negotiation {pid} here")
    theirs = neg.consumer_pid if role is Role.PROVIDER else neg.provider_pid
    if other_pid is not None and theirs is not None and other_pid != theirs:
        raise NegotiationRefused(400, "pid-mismatch",
                                 f"{other_pid} is not the counterparty's id here", neg)
    return neg


# ---- the consumer starts ----------------------------------------------------------------------

def start(session: Session, me: Me, *, provider_id: str, provider_url: str, dataset_id: str,
          offer: Mapping[str, Any], now: datetime) -> Negotiation:
    """The consumer requests `offer` (as the provider's catalog shows it) for `dataset_id`."""
    pid = f"urn:uuid:{uuid.uuid4()}"
    neg = Negotiation(pid=pid, role=Role.CONSUMER.value, provider_pid=None, consumer_pid=pid,
                      state=next_state(None, Message.REQUEST, Role.CONSUMER).value,
                      counterparty_id=provider_id, counterparty_url=provider_url.rstrip("/"),
                      dataset_id=dataset_id, offer={**_policy(offer), "target": dataset_id},
                      agreement=None, agreement_id=None, manual=False, termination=None,
                      created_at=now, updated_at=now)
    session.add(neg)
    _send(session, neg, "/negotiations/request",
          messages.request(pid, None, neg.offer, me.public_url), now)
    return neg


# ---- provider side ----------------------------------------------------------------------------

def on_request(session: Session, me: Me, sender: Membership, msg: messages.Parsed,
               path_pid: str | None, products: ProductLookup, now: datetime) -> Negotiation:
    """A ContractRequestMessage: opens a negotiation (no path pid) or counters our offer."""
    offer = msg.offer
    if path_pid is None:
        if msg.provider_pid is not None:
            raise NegotiationRefused(400, "malformed", "an initial request has no providerPid")
        if not msg.consumer_pid or not msg.callback:
            raise NegotiationRefused(400, "malformed",
                                     "an initial request needs consumerPid and callbackAddress")
        existing = session.scalar(select(Negotiation).where(
            Negotiation.role == Role.PROVIDER.value,
            Negotiation.consumer_pid == msg.consumer_pid,
            Negotiation.counterparty_id == sender.participant_id))
        if existing is not None:  # the consumer retried its opening request
            return existing
        terms = products(str(offer.get("target", "")))
        if terms is None:
            raise NegotiationRefused(404, "unknown-dataset",
                                     f"no dataset {offer.get('target')!r} is offered here")
        matching = [o for o in terms.offers if _policy(o) == _policy(offer)]
        if not matching:
            raise NegotiationRefused(400, "offer-mismatch",
                                     "the offer differs from every offer in the catalog")
        pid = f"urn:uuid:{uuid.uuid4()}"
        neg = Negotiation(
            pid=pid, role=Role.PROVIDER.value, provider_pid=pid, consumer_pid=msg.consumer_pid,
            state=next_state(None, Message.REQUEST, Role.CONSUMER).value,
            counterparty_id=sender.participant_id, counterparty_url=msg.callback.rstrip("/"),
            dataset_id=terms.dataset_id, offer={**_policy(offer), "target": terms.dataset_id},
            agreement=None, agreement_id=None, manual=terms.manual, termination=None,
            created_at=now, updated_at=now)
        session.add(neg)
        session.flush()
        _first_time(session, pid, msg.body, now)
        if not terms.manual:
            _agree(session, me, neg, terms, now)
        return neg
    neg = _own(session, path_pid, Role.PROVIDER, sender, msg.consumer_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.REQUEST, Role.CONSUMER, now)  # a counter-request to our offer
    neg.offer = {**_policy(offer), "target": neg.dataset_id}
    return neg


def _agree(session: Session, me: Me, neg: Negotiation, terms: ProductTerms | None,
           now: datetime) -> None:
    """Sign the agreement on the offer under negotiation and send it."""
    if terms is None:
        raise NegotiationRefused(409, "dataset-withdrawn",
                                 f"{neg.dataset_id} is no longer offered", neg)
    check_policy(neg.offer, terms.level, terms.modes)  # a counter-request may ask for more
    _move(neg, Message.AGREEMENT, Role.PROVIDER, now)
    agreement_id = f"urn:uuid:{uuid.uuid4()}"
    odrl = {**_policy(neg.offer), "@id": agreement_id, "@type": "Agreement",
            "target": neg.dataset_id, "assigner": me.participant_id,
            "assignee": neg.counterparty_id, "timestamp": iso(now)}
    body = {"agreement": odrl, "provider": me.participant_id, "consumer": neg.counterparty_id,
            "dataset": neg.dataset_id, "dataDigest": terms.data_digest,
            "registration": terms.registration, "offerDigest": _digest(neg.offer),
            "providerPid": neg.provider_pid, "consumerPid": neg.consumer_pid}
    doc = sign_document(AGREEMENT_TYPE, body, me.signer, role="provider", signed_at=iso(now))
    neg.agreement = doc.to_json()
    neg.agreement_id = agreement_id
    assert neg.provider_pid and neg.consumer_pid  # noqa: S101 - set when the request arrived
    _send(session, neg, f"/negotiations/{neg.consumer_pid}/agreement",
          messages.agreement(neg.provider_pid, neg.consumer_pid, odrl, doc.to_json()), now)


def approve(session: Session, me: Me, pid: str, products: ProductLookup,
            now: datetime) -> Negotiation:
    """The provider's operator agrees to a request waiting in REQUESTED (or ACCEPTED)."""
    neg = _local(session, pid, Role.PROVIDER)
    _agree(session, me, neg, products(neg.dataset_id), now)
    return neg


def counter_offer(session: Session, pid: str, offer: Mapping[str, Any],
                  products: ProductLookup, now: datetime) -> Negotiation:
    """The provider's operator answers a request with another offer."""
    neg = _local(session, pid, Role.PROVIDER)
    _move(neg, Message.OFFER, Role.PROVIDER, now)
    if not isinstance(offer.get("@id"), str):
        raise NegotiationRefused(400, "malformed", "an offer needs an @id", neg)
    terms = products(neg.dataset_id)
    if terms is None:
        raise NegotiationRefused(409, "dataset-withdrawn",
                                 f"{neg.dataset_id} is no longer offered", neg)
    check_policy(offer, terms.level, terms.modes)
    neg.offer = {**_policy(offer), "target": neg.dataset_id}
    assert neg.provider_pid  # noqa: S101 - a provider's negotiation always has its pid
    _send(session, neg, f"/negotiations/{neg.consumer_pid}/offers",
          messages.offer(neg.provider_pid, neg.consumer_pid, neg.offer, None), now)
    return neg


def on_accepted(session: Session, me: Me, sender: Membership, msg: messages.Parsed,
                path_pid: str, products: ProductLookup, now: datetime) -> Negotiation:
    neg = _own(session, path_pid, Role.PROVIDER, sender, msg.consumer_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.ACCEPTED, Role.CONSUMER, now)
    if not neg.manual:
        _agree(session, me, neg, products(neg.dataset_id), now)
    return neg


def on_verification(session: Session, me: Me, sender: Membership, msg: messages.Parsed,
                    path_pid: str, now: datetime) -> Negotiation:
    """The consumer countersigned: check both signatures over our exact agreement, finalize."""
    neg = _own(session, path_pid, Role.PROVIDER, sender, msg.consumer_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.VERIFICATION, Role.CONSUMER, now)
    ours = SignedDocument.from_json(neg.agreement) if neg.agreement else None
    countersigned = _verified(msg.signed_agreement, [me.signer.public_key, sender.public_key],
                              neg)
    if ours is None or countersigned.digest != ours.digest:
        raise NegotiationRefused(400, "agreement-mismatch",
                                 "the countersigned agreement is not the one we signed", neg)
    _move(neg, Message.FINALIZED, Role.PROVIDER, now)
    neg.agreement = countersigned.to_json()
    _store_agreement(session, neg, countersigned, sender.public_key, now)
    _authorize(session, me, neg, countersigned, sender.public_key, now)
    assert neg.provider_pid and neg.consumer_pid  # noqa: S101 - both known by now
    _send(session, neg, f"/negotiations/{neg.consumer_pid}/events",
          messages.event(neg.provider_pid, neg.consumer_pid, "FINALIZED"), now)
    return neg


# ---- consumer side ----------------------------------------------------------------------------

def on_offer(session: Session, sender: Membership, msg: messages.Parsed, path_pid: str | None,
             now: datetime) -> Negotiation:
    """A (counter-)offer from the provider. Provider-initiated negotiations are not opened
    here: trustspace consumers start from the catalog."""
    if path_pid is None:
        raise NegotiationRefused(400, "unsupported",
                                 "this consumer does not take unsolicited offers")
    neg = _own(session, path_pid, Role.CONSUMER, sender, msg.provider_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.OFFER, Role.PROVIDER, now)
    neg.provider_pid = neg.provider_pid or msg.provider_pid
    neg.offer = {**_policy(msg.offer), "target": neg.dataset_id}
    return neg


def accept(session: Session, pid: str, now: datetime) -> Negotiation:
    """The consumer's operator accepts the provider's (counter-)offer."""
    neg = _local(session, pid, Role.CONSUMER)
    _move(neg, Message.ACCEPTED, Role.CONSUMER, now)
    assert neg.provider_pid and neg.consumer_pid  # noqa: S101 - an offer carried both
    _send(session, neg, f"/negotiations/{neg.provider_pid}/events",
          messages.event(neg.provider_pid, neg.consumer_pid, "ACCEPTED"), now)
    return neg


def on_agreement(session: Session, me: Me, sender: Membership, msg: messages.Parsed,
                 path_pid: str, now: datetime) -> Negotiation:
    """The provider agreed: check its signature and that the policy is what we asked for,
    countersign, and send the verification."""
    neg = _own(session, path_pid, Role.CONSUMER, sender, msg.provider_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.AGREEMENT, Role.PROVIDER, now)
    neg.provider_pid = neg.provider_pid or msg.provider_pid
    signed = _verified(msg.signed_agreement, [sender.public_key], neg)
    body = signed.body
    standard = msg.body.get("agreement")
    expected = {"provider": sender.participant_id, "consumer": me.participant_id,
                "dataset": neg.dataset_id, "offerDigest": _digest(neg.offer),
                "providerPid": neg.provider_pid, "consumerPid": neg.consumer_pid}
    wrong = [k for k, v in expected.items() if body.get(k) != v]
    agreed = body.get("agreement")
    if standard != agreed or not isinstance(agreed, dict):
        wrong.append("agreement")
    else:
        if _rules(agreed) != _rules(neg.offer):
            wrong.append("policy")  # the provider may not change the policy it offered
        if (agreed.get("assigner"), agreed.get("assignee")) != (sender.participant_id,
                                                               me.participant_id):
            wrong.append("parties")
    if wrong:
        raise NegotiationRefused(400, "agreement-mismatch",
                                 f"the agreement does not match the negotiation: {wrong}", neg)
    countersigned = signed.countersign(me.signer, role="consumer", signed_at=iso(now))
    neg.agreement = countersigned.to_json()
    neg.agreement_id = str(body["agreement"]["@id"])
    _move(neg, Message.VERIFICATION, Role.CONSUMER, now)
    assert neg.provider_pid and neg.consumer_pid  # noqa: S101 - both known by now
    _send(session, neg, f"/negotiations/{neg.provider_pid}/agreement/verification",
          messages.verification(neg.provider_pid, neg.consumer_pid, countersigned.to_json()),
          now)
    return neg


def on_finalized(session: Session, sender: Membership, msg: messages.Parsed, path_pid: str,
                 now: datetime) -> Negotiation:
    neg = _own(session, path_pid, Role.CONSUMER, sender, msg.provider_pid)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    _move(neg, Message.FINALIZED, Role.PROVIDER, now)
    if neg.agreement is None:
        raise NegotiationRefused(409, "no-agreement", "finalized without an agreement", neg)
    _store_agreement(session, neg, SignedDocument.from_json(neg.agreement), sender.public_key,
                     now)
    return neg


# ---- both sides -------------------------------------------------------------------------------

def on_termination(session: Session, role: Role, sender: Membership, msg: messages.Parsed,
                   path_pid: str, now: datetime) -> Negotiation:
    other = msg.consumer_pid if role is Role.PROVIDER else msg.provider_pid
    neg = _own(session, path_pid, role, sender, other)
    if not _first_time(session, neg.pid, msg.body, now):
        return neg
    counter = Role.CONSUMER if role is Role.PROVIDER else Role.PROVIDER
    _move(neg, Message.TERMINATION, counter, now)
    neg.termination = {"by": sender.participant_id, "code": msg.body.get("code"),
                       "reason": msg.body.get("reason")}
    return neg


def terminate(session: Session, me: Me, pid: str, code: str, reason: str,
              now: datetime) -> Negotiation:
    """This side ends the negotiation (the provider's operator refusing a request, or either
    operator giving up)."""
    neg = session.get(Negotiation, pid, with_for_update=True)
    if neg is None:
        raise NegotiationRefused(404, "unknown-negotiation", pid)
    role = Role(neg.role)
    _move(neg, Message.TERMINATION, role, now)
    neg.termination = {"by": me.participant_id, "code": code, "reason": [reason]}
    path = (f"/negotiations/{neg.consumer_pid}/termination" if role is Role.PROVIDER
            else f"/negotiations/{neg.provider_pid}/termination")
    if neg.provider_pid and neg.consumer_pid:
        _send(session, neg, path,
              messages.termination(neg.provider_pid, neg.consumer_pid, code, [reason]), now)
    return neg


def _local(session: Session, pid: str, role: Role) -> Negotiation:
    neg = session.get(Negotiation, pid, with_for_update=True)
    if neg is None or neg.role != role.value:
        raise NegotiationRefused(404, "unknown-negotiation", f"no {role.value} negotiation {pid}")
    return neg


def _verified(doc: Mapping[str, Any], keys: list[SM2PublicKey],
              neg: Negotiation) -> SignedDocument:
    try:
        return verify_document(dict(doc), keys, expected_type=AGREEMENT_TYPE,
                               required_signers=[k.key_id for k in keys])
    except DocumentInvalid as exc:
        raise NegotiationRefused(400, "agreement-invalid", str(exc), neg) from None


def _store_agreement(session: Session, neg: Negotiation, doc: SignedDocument,
                     counterparty_key: SM2PublicKey, now: datetime) -> None:
    body = doc.body
    session.add(Agreement(
        agreement_id=str(body["agreement"]["@id"]), pid=neg.pid, role=neg.role,
        provider_id=str(body["provider"]), consumer_id=str(body["consumer"]),
        dataset_id=str(body["dataset"]), data_digest=str(body["dataDigest"]),
        digest=doc.digest, document=doc.to_json(), created_at=now,
        counterparty_key=counterparty_key.to_pem().decode()))


def _authorize(session: Session, me: Me, neg: Negotiation, agreement: SignedDocument,
               consumer_key: SM2PublicKey, now: datetime) -> None:
    """The authorization receipt, in the transaction that finalizes the agreement; the receipt
    worker has the consumer countersign it, then submits it to the ledger."""
    body = agreement.body
    policy = body["agreement"]
    valid_from, valid_until = validity(policy, now)
    content = receipts.Authorization(
        product_id=str(body["dataset"]), data_digest=str(body["dataDigest"]), policy=policy,
        valid_from=valid_from, valid_until=valid_until,
        registration_digest=body.get("registration"))
    parties = receipts.Parties(provider=me.participant_id, consumer=neg.counterparty_id,
                               agreement_id=str(policy["@id"]),
                               agreement_digest=agreement.digest)
    doc = receipts.issue(content, parties, me.signer, "provider", now,
                         [consumer_key, *me.regulators])
    store.keep(session, doc, status=store.COUNTERSIGN, now=now,
               counterparty_url=neg.counterparty_url, counterparty_key=consumer_key)


def validity(policy: Mapping[str, Any], now: datetime) -> tuple[datetime, datetime | None]:
    """When an agreement may be used: from its dateTime constraints (`gt`/`gteq` and
    `lt`/`lteq` bounds on any permission), else from now on without end."""
    start, end = now, None
    for permission in policy.get("permission", []) or []:
        for constraint in permission.get("constraint", []) or []:
            if str(constraint.get("leftOperand", "")).split(":")[-1] != "dateTime":
                continue
            value = constraint.get("rightOperand")
            if isinstance(value, dict):
                value = value.get("@value")
            try:
                bound = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                continue
            if bound.tzinfo is None:
                bound = bound.replace(tzinfo=UTC)
            op = str(constraint.get("operator", "")).split(":")[-1]
            if op in ("gt", "gteq"):
                start = max(start, bound)
            elif op in ("lt", "lteq"):
                end = bound if end is None else min(end, bound)
    return start, end


def next_attempt(attempts: int, now: datetime) -> datetime:
    """Backoff for a message the peer did not take: 0.2 s doubling up to one minute."""
    return now + timedelta(seconds=min(60.0, 0.2 * 2 ** max(0, attempts - 1)))

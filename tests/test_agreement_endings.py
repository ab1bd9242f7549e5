"""Ending an agreement, without nodes: who may issue a termination or revocation receipt (the
verifier refuses forged issuers), and the two parties' transactions on a real database (SQLite
and PostgreSQL): the one that ends it marks its row, keeps the receipt for the ledger and queues
the notice; the other checks the notice, marks its row and keeps the receipt once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.nodes import PostgresDatabases
from tests.test_ledger_log import CONSUMER, NOW, PROVIDER, REGULATOR, Space
from trustspace.contracts import AgreementEnded, ending, in_force
from trustspace.contracts.negotiation import Me
from trustspace.contracts.tables import Agreement, Negotiation, OutboxMessage
from trustspace.crypto import DocumentInvalid, SignedDocument, sign_document
from trustspace.db import Database
from trustspace.ledger import receipts, store
from trustspace.ledger.tables import StoredReceipt
from trustspace.registry.credentials import Membership, verify_membership

AGREEMENT = "urn:uuid:ag"
T, R = receipts.Kind.TERMINATION, receipts.Kind.REVOCATION


def ending_receipt(space: Space, kind: receipts.Kind, signer: str, role: str,
                   by: str | None = None, digest: str = "sm3:" + "cd" * 32) -> SignedDocument:
    parties = receipts.Parties(PROVIDER, CONSUMER, AGREEMENT, digest)
    return receipts.issue(receipts.Ending(kind, by or signer, "code", "why"), parties,
                          space.keys[signer], role, NOW, [])


# ---- who may issue them ----------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "signer", "role"), [
    (T, PROVIDER, "provider"), (T, CONSUMER, "consumer"), (R, PROVIDER, "provider")])
def test_a_party_ends_an_agreement_in_its_own_role(kind: receipts.Kind, signer: str,
                                                  role: str) -> None:
    space = Space()
    receipt = receipts.verify_receipt(ending_receipt(space, kind, signer, role), space.public)
    assert receipt.kind is kind and receipt.public["by"] == signer
    assert receipt.roles == {role: space.keys[signer].key_id}


@pytest.mark.parametrize(("kind", "signer", "role", "by", "reason"), [
    (R, CONSUMER, "consumer", None, "missing-signature"),  # a consumer cannot revoke
    (R, CONSUMER, "provider", PROVIDER, "missing-signature"),  # nor by posing as the provider
    (T, REGULATOR, "consumer", CONSUMER, "missing-signature"),  # a third member's key
    (T, REGULATOR, "regulator", None, "missing-signature"),  # a role that issues no ending
    (T, CONSUMER, "consumer", PROVIDER, "wrong-issuer"),  # says the other party ended it
])
def test_forged_issuers_are_refused(kind: receipts.Kind, signer: str, role: str,
                                    by: str | None, reason: str) -> None:
    space = Space()
    with pytest.raises(DocumentInvalid) as exc:
        receipts.verify_receipt(ending_receipt(space, kind, signer, role, by), space.public)
    assert exc.value.reason == reason


def test_an_ending_has_one_issuer() -> None:
    space = Space()
    doc = ending_receipt(space, T, PROVIDER, "provider")
    both = doc.countersign(space.keys[CONSUMER], role="consumer")
    with pytest.raises(DocumentInvalid) as exc:
        receipts.verify_receipt(both, space.public)
    assert exc.value.reason == "wrong-issuer"


# ---- the two parties' transactions --------------------------------------------------------------

@dataclass
class Parties:
    space: Space
    provider: Database
    consumer: Database


@pytest.fixture(params=["sqlite", "postgresql"])
def parties(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Parties]:
    """The provider's and the consumer's databases, each holding the agreement."""
    pg = PostgresDatabases() if request.param == "postgresql" else None
    space = Space()
    agreement = sign_document("trustspace.agreement", {"agreement": {"@id": AGREEMENT}},
                              space.keys[PROVIDER])
    made: dict[str, Database] = {}
    for role, other in (("provider", CONSUMER), ("consumer", PROVIDER)):
        db = Database(pg.create() if pg else f"sqlite:///{tmp_path / role}.db")
        db.migrate()
        with db.transaction() as s:
            s.add(Negotiation(pid=f"p-{role}", role=role, provider_pid="pp", consumer_pid="cp",
                              state="FINALIZED", counterparty_id=other,
                              counterparty_url=f"http://{other.rsplit(':', 1)[1]}.test",
                              dataset_id="bp-stats", offer={}, agreement=agreement.to_json(),
                              agreement_id=AGREEMENT, manual=False, termination=None,
                              created_at=NOW, updated_at=NOW))
            s.add(Agreement(agreement_id=AGREEMENT, pid=f"p-{role}", role=role,
                            provider_id=PROVIDER, consumer_id=CONSUMER, dataset_id="bp-stats",
                            data_digest="sm3:" + "ab" * 32, digest=agreement.digest,
                            document=agreement.to_json(), created_at=NOW,
                            counterparty_key=space.keys[other].public_key.to_pem().decode()))
        made[role] = db
    try:
        yield Parties(space, made["provider"], made["consumer"])
    finally:
        for db in made.values():
            db.dispose()
        if pg:
            pg.drop_all()


def me(space: Space, who: str) -> Me:
    return Me(who, space.keys[who], "http://me.test", (space.keys[REGULATOR].public_key,))


def member(space: Space, who: str) -> Membership:
    index = [PROVIDER, CONSUMER, REGULATOR].index(who)
    return verify_membership(space.credentials[index], space.authority.public_key, now=NOW)


def test_the_consumer_terminates_and_the_provider_learns_it(parties: Parties) -> None:
    space, consumer, provider = parties.space, parties.consumer, parties.provider
    with consumer.transaction() as s:
        ending.end(s, me(space, CONSUMER), AGREEMENT, T, "study-over", "done", NOW)
    with consumer.read() as s:
        row = s.get(Agreement, AGREEMENT)
        assert row is not None and ending.status(row) == "terminated"
        with pytest.raises(AgreementEnded) as exc:
            in_force(row)
        assert exc.value.code == "agreement-terminated" and "study-over" in exc.value.detail
        kept = s.get(StoredReceipt, row.end_receipt_id)
        assert kept is not None and kept.status == store.PENDING  # the issuer submits it
        sent = s.scalars(select(OutboxMessage)).one()
        assert sent.url == f"http://hospital.test/agreements/{AGREEMENT}/termination"
        message = sent.message
    receipt = receipts.verify_receipt(message["receipt"], space.public)
    assert receipt.roles.keys() == {"consumer"}
    assert (receipt.kind, receipt.public["by"]) == (T, CONSUMER)
    # A consumer does not revoke, and an ended agreement does not end twice.
    for kind, status in ((R, 403), (T, 409)):
        with pytest.raises(ending.EndingRefused) as refused, consumer.transaction() as s:
            ending.end(s, me(space, CONSUMER), AGREEMENT, kind, "again", "again", NOW)
        assert refused.value.status == status

    def deliver(sender: str = CONSUMER, body: object = message) -> None:
        with provider.transaction() as s:
            ending.on_notice(s, PROVIDER, space.keys[PROVIDER].public_key,
                             member(space, sender), AGREEMENT, body, NOW)  # type: ignore[arg-type]

    with pytest.raises(ending.EndingRefused) as refused:  # a third member sends it on
        deliver(REGULATOR)
    assert (refused.value.status, refused.value.reason) == (404, "unknown-agreement")
    deliver()
    deliver()  # the same notice again: fine, kept once
    with provider.read() as s:
        row = s.get(Agreement, AGREEMENT)
        assert row is not None and (row.ended_by, row.end_code) == (CONSUMER, "study-over")
        kept = s.scalars(select(StoredReceipt)).one()
        assert (kept.receipt_id, kept.status) == (receipt.id, store.RECEIVED)
        assert not s.scalars(select(OutboxMessage)).all()  # nothing to answer
    other = ending_receipt(space, T, CONSUMER, "consumer", digest=row.digest)
    with pytest.raises(ending.EndingRefused) as refused:  # another ending: a conflict
        deliver(body=ending.notice(other))
    assert (refused.value.status, refused.value.reason) == (409, "already-ended")


def test_forged_notices_are_refused(parties: Parties) -> None:
    space = parties.space
    digest = sign_document("trustspace.agreement", {"agreement": {"@id": AGREEMENT}},
                           space.keys[PROVIDER]).digest

    def refused(body: object, sender: str = CONSUMER) -> str:
        with pytest.raises(ending.EndingRefused) as exc, parties.provider.transaction() as s:
            ending.on_notice(s, PROVIDER, space.keys[PROVIDER].public_key,
                             member(space, sender), AGREEMENT, body, NOW)  # type: ignore[arg-type]
        return exc.value.reason

    # Signed by a third member posing as the consumer.
    forged = ending_receipt(space, T, REGULATOR, "consumer", by=CONSUMER, digest=digest)
    assert refused(ending.notice(forged)) == "receipt-invalid"
    # The provider's own revocation, sent back by the consumer.
    mine = ending_receipt(space, R, PROVIDER, "provider", digest=digest)
    assert refused(ending.notice(mine)) == "not-the-issuer"
    # Another agreement's receipt; not an ending at all; no receipt.
    other = ending_receipt(space, T, CONSUMER, "consumer")
    assert refused(ending.notice(other)) == "agreement-mismatch"
    elsewhere = receipts.issue(  # this agreement, but another product named
        receipts.Ending(T, CONSUMER, "code", "why", "other-product"),
        receipts.Parties(PROVIDER, CONSUMER, AGREEMENT, digest), space.keys[CONSUMER],
        "consumer", NOW, [])
    assert refused(ending.notice(elsewhere)) == "agreement-mismatch"
    refusal = receipts.issue(receipts.Refusal("sm3:" + "00" * 32, "r", "why"),
                             receipts.Parties(PROVIDER, CONSUMER, AGREEMENT, digest),
                             space.keys[PROVIDER], "provider", NOW, [])
    assert refused(ending.notice(refusal)) == "not-an-ending"
    assert refused({"agreementId": AGREEMENT}) == "malformed"
    with parties.provider.read() as s:
        row = s.get(Agreement, AGREEMENT)
        assert row is not None and ending.status(row) == "active"


def test_endings_that_cross_are_both_kept_on_both_sides(parties: Parties) -> None:
    """The consumer terminates while the provider revokes: each side's own ending stands for
    it, the other's receipt is kept beside it (a repeat changes nothing), and each names the
    product, so a trace by product finds them."""
    space = parties.space
    sides = {CONSUMER: (parties.consumer, T), PROVIDER: (parties.provider, R)}
    notices = {}
    for who, (db, kind) in sides.items():
        with db.transaction() as s:
            ending.end(s, me(space, who), AGREEMENT, kind, f"{kind.value}-code", "why", NOW)
            notices[who] = s.scalars(select(OutboxMessage)).one().message
    for sender, receiver in ((CONSUMER, PROVIDER), (PROVIDER, CONSUMER), (CONSUMER, PROVIDER)):
        with sides[receiver][0].transaction() as s:
            ending.on_notice(s, receiver, space.keys[receiver].public_key,
                             member(space, sender), AGREEMENT, notices[sender], NOW)
    for who, (db, kind) in sides.items():
        with db.read() as s:
            row = s.get(Agreement, AGREEMENT)
            assert row is not None and (row.ended_by, row.end_kind) == (who, kind.value)
            kept = {r.kind: (r.status, r.product_id) for r in s.scalars(select(StoredReceipt))}
        assert kept == {kind.value: (store.PENDING, "bp-stats"),
                        sides[CONSUMER if who == PROVIDER else PROVIDER][1].value:
                        (store.RECEIVED, "bp-stats")}

"""The consumer's checks before it countersigns a receipt the provider issued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_ledger_log import CONSUMER, NOW, PROVIDER, REGULATOR, Space
from trustspace.contracts.tables import Agreement
from trustspace.crypto import SignedDocument, sign_document
from trustspace.db import Database
from trustspace.ledger import receipts, store
from trustspace.ledger.countersign import ReceiptRefused, countersign_receipt
from trustspace.ledger.tables import StoredReceipt

POLICY = {"@id": "urn:uuid:ag", "permission": [{"action": "use"}]}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Database, Space, SignedDocument]]:
    space = Space()
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    db.migrate()
    agreement = sign_document("trustspace.agreement", {"agreement": POLICY}, space.keys[PROVIDER])
    with db.transaction() as s:
        s.add(Agreement(agreement_id="urn:uuid:ag", pid="p1", role="consumer",
                        provider_id=PROVIDER, consumer_id=CONSUMER, dataset_id="bp-stats",
                        data_digest="sm3:" + "ab" * 32, digest=agreement.digest,
                        document=agreement.to_json(), created_at=NOW))
    yield db, space, agreement
    db.dispose()


def issued(space: Space, agreement: SignedDocument, **changes: object) -> SignedDocument:
    content = receipts.Authorization(
        product_id=str(changes.get("product", "bp-stats")), data_digest="sm3:" + "ab" * 32,
        policy=changes.get("policy", POLICY), valid_from=NOW)  # type: ignore[arg-type]
    parties = receipts.Parties(PROVIDER, str(changes.get("consumer", CONSUMER)),
                               str(changes.get("agreement_id", "urn:uuid:ag")),
                               str(changes.get("digest", agreement.digest)))
    return receipts.issue(content, parties, space.keys[PROVIDER], "provider", NOW,
                          [space.keys[CONSUMER].public_key, space.keys[REGULATOR].public_key],
                          receipt_id=str(changes.get("rid", "urn:uuid:r1")))


def sign(db: Database, space: Space, doc: SignedDocument, provider: str = PROVIDER
         ) -> SignedDocument:
    with db.transaction() as s:
        return countersign_receipt(s, doc.to_json(), me=CONSUMER, key=space.keys[CONSUMER],
                                   provider=provider, provider_key=space.keys[provider].public_key,
                                   now=NOW)


def test_a_true_receipt_is_countersigned_once(setup: tuple[Database, Space, SignedDocument]
                                              ) -> None:
    db, space, agreement = setup
    doc = issued(space, agreement)
    first = sign(db, space, doc)
    assert receipts.verify_receipt(first, space.public).roles.keys() == {"provider", "consumer"}
    assert sign(db, space, doc).to_json() == first.to_json()  # a retry: the same answer
    with db.read() as s:
        row = s.get(StoredReceipt, "urn:uuid:r1")
        assert row is not None and row.status == store.PENDING


@pytest.mark.parametrize(("changes", "reason"), [
    ({"product": "other"}, "receipt-mismatch"),
    ({"policy": {"@id": "urn:uuid:ag", "permission": []}}, "receipt-mismatch"),
    ({"digest": "sm3:" + "00" * 32}, "agreement-mismatch"),
    ({"agreement_id": "urn:uuid:unknown"}, "unknown-agreement"),
    ({"consumer": REGULATOR}, "not-a-party"),
])
def test_a_receipt_that_misstates_the_agreement_is_refused(
        setup: tuple[Database, Space, SignedDocument], changes: dict[str, object],
        reason: str) -> None:
    db, space, agreement = setup
    with pytest.raises(ReceiptRefused) as exc:
        sign(db, space, issued(space, agreement, **changes))
    assert exc.value.reason == reason


def test_forged_conflicting_and_foreign_receipts_are_refused(
        setup: tuple[Database, Space, SignedDocument]) -> None:
    db, space, agreement = setup
    doc = issued(space, agreement)
    forged = SignedDocument(doc.type, {**doc.body, "issuedAt": "2020-01-01T00:00:00Z"},
                            doc.digest, doc.signatures)
    with pytest.raises(ReceiptRefused) as exc:
        sign(db, space, forged)
    assert exc.value.reason == "receipt-invalid"
    with pytest.raises(ReceiptRefused) as exc:  # signed by someone else than the caller
        sign(db, space, doc, provider=REGULATOR)
    assert exc.value.reason == "receipt-invalid"
    sign(db, space, doc)
    again = issued(space, agreement)  # the same id, another receipt: a replayed id
    with pytest.raises(ReceiptRefused) as exc:
        sign(db, space, again)
    assert exc.value.reason == "receipt-conflict"

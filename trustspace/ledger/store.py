"""Keeping receipts: each is written in the transaction of the state change that caused it, and
a worker (connector/receipt_worker.py) takes it from there."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from trustspace.crypto import SignedDocument, SM2PublicKey

from .receipts import Receipt
from .tables import StoredReceipt

COUNTERSIGN = "countersign"  # issued, waiting for the consumer's signature
PENDING = "pending"  # complete, to be submitted to the ledger
LOGGED = "logged"  # in the ledger, with its evidence record
REFUSED = "refused"  # the consumer would not countersign: kept, flagged for the operators
RECEIVED = "received"  # the other party issued it alone and submits it: kept as told, not resent


def keep(session: Session, doc: SignedDocument, *, status: str, now: datetime,
         counterparty_url: str | None = None,
         counterparty_key: SM2PublicKey | None = None) -> StoredReceipt:
    """Add a receipt to this node's store (in the caller's transaction)."""
    receipt = Receipt(doc)
    public = receipt.public
    row = StoredReceipt(
        receipt_id=receipt.id, kind=receipt.kind.value, agreement_id=receipt.agreement_id,
        product_id=public.get("productId"), provider_id=receipt.provider,
        consumer_id=receipt.consumer, digest=doc.digest, document=doc.to_json(),
        status=status, counterparty_url=counterparty_url,
        counterparty_key=counterparty_key.to_pem().decode() if counterparty_key else None,
        attempts=0, next_attempt_at=now,
        created_at=now)
    session.add(row)
    return row

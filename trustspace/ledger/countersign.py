"""The consumer's side of a receipt: check that a receipt the provider issued tells the truth
about our agreement, then countersign and keep it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustspace.contracts.tables import Agreement
from trustspace.crypto import DocumentInvalid, SignedDocument, SM2PrivateKey, SM2PublicKey

from . import store
from .receipts import Kind, countersign, digest_of, verify_receipt
from .tables import StoredReceipt


class ReceiptRefused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail
        super().__init__(f"{reason}: {detail}")


def countersign_receipt(session: Session, document: Mapping[str, Any], *, me: str,
                        key: SM2PrivateKey, provider: str, provider_key: SM2PublicKey,
                        now: datetime) -> SignedDocument:
    """Countersign a receipt `provider` issued to us (`me`), once: a retry gets the same
    countersigned document back."""
    try:
        receipt = verify_receipt(document, {provider: provider_key, me: key.public_key},
                                 complete=False)
    except DocumentInvalid as exc:
        raise ReceiptRefused(400, "receipt-invalid", str(exc)) from None
    if receipt.provider != provider or receipt.consumer != me:
        raise ReceiptRefused(403, "not-a-party", "the receipt is not between you and us")
    if not receipt.kind.countersigned:
        raise ReceiptRefused(400, "not-countersigned", f"{receipt.kind} receipts are not "
                             "countersigned")
    stored = session.get(StoredReceipt, receipt.id, with_for_update=True)
    if stored is not None:
        if stored.digest != receipt.digest:
            raise ReceiptRefused(409, "receipt-conflict",
                                 "another receipt with this id was countersigned before")
        return SignedDocument.from_json(stored.document)
    agreement = session.get(Agreement, receipt.agreement_id or "")
    if agreement is None or agreement.consumer_id != me or agreement.provider_id != provider:
        raise ReceiptRefused(404, "unknown-agreement", f"no agreement {receipt.agreement_id}")
    if agreement.digest != receipt.document.body.get("agreementDigest"):
        raise ReceiptRefused(400, "agreement-mismatch", "the receipt names another agreement")
    try:
        secret = receipt.open(key)
    except Exception as exc:  # we must be able to read what we sign for
        raise ReceiptRefused(400, "confidential-unreadable", str(exc)) from None
    if receipt.kind is Kind.AUTHORIZATION:
        public = receipt.public
        expected = {"productId": agreement.dataset_id, "dataDigest": agreement.data_digest,
                    "policyDigest": digest_of(agreement.document["body"]["agreement"])}
        wrong = sorted(k for k, v in expected.items() if public.get(k) != v)
        if wrong or secret is None:
            raise ReceiptRefused(400, "receipt-mismatch",
                                 f"the receipt does not match our agreement: {wrong}")
    if receipt.kind is Kind.DELIVERY:
        _check_delivery(session, receipt.public)
    signed = countersign(receipt.document, key, now)
    store.keep(session, signed, status=store.PENDING, now=now)
    return signed


def _check_delivery(session: Session, public: Mapping[str, Any]) -> None:
    """A delivery receipt names our job request, and the result we received (or none)."""
    from trustspace.sandbox.tables import Job  # the sandbox's table; imported where needed

    job = session.scalar(select(Job).where(Job.role == "consumer",
                                           Job.provider_pid == public.get("jobId")))
    if job is None:
        raise ReceiptRefused(404, "unknown-job", f"no job {public.get('jobId')} of ours")
    if job.request_digest != public.get("jobRequestDigest"):
        raise ReceiptRefused(400, "receipt-mismatch", "the receipt names another job request")
    if job.state not in ("COMPLETED", "TERMINATED"):
        raise ReceiptRefused(409, "result-pending", f"job {job.pid} is still {job.state}")
    if public.get("outcome") == "succeeded":
        if job.state != "COMPLETED" or job.result_digest != public.get("resultDigest"):
            raise ReceiptRefused(400, "receipt-mismatch",
                                 "the receipt names another result than the one we received")
    elif job.state != "TERMINATED" or public.get("resultDigest") is not None:
        raise ReceiptRefused(400, "receipt-mismatch", "a failed job released nothing")

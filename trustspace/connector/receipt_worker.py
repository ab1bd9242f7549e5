"""Moves receipts on: has the consumer countersign the ones this node issued, then submits
complete receipts to the ledger and keeps the evidence it returns. Every step retries with
backoff while the other side is down, and resumes after a restart: a receipt is never dropped,
and the ledger is idempotent by receipt id, so none is written twice."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import httpx
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.contracts import negotiation as engine
from trustspace.crypto import DocumentInvalid, SignedDocument, SM2PublicKey, canonical_json
from trustspace.ledger import store
from trustspace.ledger.backend import Evidence, Ledger, LedgerUnavailable
from trustspace.ledger.receipts import verify_receipt
from trustspace.ledger.tables import StoredReceipt

from .background import Loop
from .client import signed_client
from .node import MEMBERSHIP_STATE, Node

log = logging.getLogger("trustspace.receipts")

BATCH = 200  # receipts per ledger submission
# The consumer has not yet seen FINALIZED, or the job's completion or termination.
RETRYABLE = {"unknown-agreement", "unknown-job", "result-pending"}


class ReceiptWorker(Loop):
    name = "receipt worker"

    def __init__(self, node: Node, ledger: Ledger) -> None:
        super().__init__()
        self.node = node
        self.ledger = ledger

    async def step(self) -> float:
        return await self.run_once()

    async def run_once(self) -> float:
        """One pass; returns how long until something is due again."""
        rows, wait = await run_in_threadpool(self._due)
        counter = [r for r in rows if r.status == store.COUNTERSIGN]
        pending = [r for r in rows if r.status == store.PENDING]
        if counter:
            await asyncio.gather(*(self._countersign(r) for r in counter))
        if pending:
            await run_in_threadpool(self._submit, pending)
        return 0.01 if counter or pending else wait

    def _due(self) -> tuple[list[StoredReceipt], float]:
        now = self.node.clock()
        with self.node.db.read() as session:
            rows = list(session.scalars(select(StoredReceipt).where(
                StoredReceipt.status.in_((store.COUNTERSIGN, store.PENDING)),
                StoredReceipt.next_attempt_at <= now)
                .order_by(StoredReceipt.created_at).limit(BATCH)))
            later = session.scalar(select(StoredReceipt.next_attempt_at).where(
                StoredReceipt.status.in_((store.COUNTERSIGN, store.PENDING)),
                StoredReceipt.next_attempt_at > now)
                .order_by(StoredReceipt.next_attempt_at).limit(1))
        wait = 30.0 if later is None else max(0.01, (later - now).total_seconds())
        return rows, wait

    async def _countersign(self, row: StoredReceipt) -> None:
        url = f"{row.counterparty_url}/receipts/countersign"
        try:
            async with signed_client(self.node, self.node.state(MEMBERSHIP_STATE)) as client:
                response = await client.post(
                    url, content=canonical_json({"receipt": row.document}),
                    headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            await run_in_threadpool(self._retry, row.receipt_id, f"{type(exc).__name__}: {exc}")
            return
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        reason = answer.get("error") if isinstance(answer, dict) else None
        if response.status_code >= 500 or reason in RETRYABLE:
            await run_in_threadpool(self._retry, row.receipt_id,
                                    f"{response.status_code} {response.text[:200]}")
            return
        if response.status_code >= 400:
            await run_in_threadpool(self._refused, row.receipt_id,
                                    f"{response.status_code} {response.text[:300]}")
            return
        await run_in_threadpool(self._countersigned, row, answer.get("receipt"))

    def _countersigned(self, row: StoredReceipt, document: object) -> None:
        ours = SignedDocument.from_json(row.document)
        consumer = SM2PublicKey.from_pem((row.counterparty_key or "").encode())
        try:
            if not isinstance(document, dict):
                raise DocumentInvalid("malformed", "no receipt in the answer")
            signed = verify_receipt(document, {row.provider_id: self.node.key.public_key,
                                               row.consumer_id: consumer}).document
            if signed.digest != ours.digest:
                raise DocumentInvalid("digest-mismatch", "the consumer signed another receipt")
        except DocumentInvalid as exc:
            self._retry(row.receipt_id, f"bad countersignature: {exc}")
            return
        with self.node.db.transaction() as session:
            stored = session.get(StoredReceipt, row.receipt_id, with_for_update=True)
            if stored is None or stored.status != store.COUNTERSIGN:
                return
            stored.document = signed.to_json()
            stored.status = store.PENDING
            stored.attempts = 0
            stored.last_error = None
            stored.next_attempt_at = self.node.clock()

    def _submit(self, rows: list[StoredReceipt]) -> None:
        documents = [SignedDocument.from_json(r.document) for r in rows]
        try:
            evidence = self.ledger.submit(documents)
        except LedgerUnavailable as exc:
            for row in rows:
                self._retry(row.receipt_id, f"ledger unavailable: {exc}")
            return
        self.record(evidence)

    def record(self, evidence: list[Evidence]) -> None:
        now = self.node.clock()
        with self.node.db.transaction() as session:
            for item in evidence:
                row = session.get(StoredReceipt, item.receipt_id, with_for_update=True)
                if row is None:
                    continue
                row.status = store.LOGGED
                row.log_index, row.log_size = item.index, item.size
                row.inclusion = [h.hex() for h in item.inclusion]
                row.checkpoint = item.checkpoint
                row.chain_tx, row.chain_block = item.chain_tx, item.chain_block
                row.logged_at = now
                row.last_error = None

    def _retry(self, receipt_id: str, error: str) -> None:
        now = self.node.clock()
        with self.node.db.transaction() as session:
            row = session.get(StoredReceipt, receipt_id, with_for_update=True)
            if row is None:
                return
            row.attempts += 1
            row.last_error = error
            row.next_attempt_at = _backoff(row.attempts, now)

    def _refused(self, receipt_id: str, error: str) -> None:
        """The consumer will not countersign: kept as issued, flagged for the operators."""
        with self.node.db.transaction() as session:
            row = session.get(StoredReceipt, receipt_id, with_for_update=True)
            if row is not None:
                row.status = store.REFUSED
                row.last_error = error
                row.attempts += 1


def _backoff(attempts: int, now: datetime) -> datetime:
    return engine.next_attempt(attempts, now)

"""The `evm` ledger: receipts go into the node's own transparency log, and the log is anchored
on an EVM chain (trustspace/ledger/evm.py). With `evm_batch` (the default) one transaction per
submission anchors the signed checkpoint, whose Merkle root covers every receipt before it, each
then proven by its inclusion proof; without it, each receipt is also recorded in a transaction
of its own. Every chain write is idempotent, so a retry after an outage writes nothing twice."""

from __future__ import annotations

import os
from collections.abc import Sequence

from trustspace.crypto import SignedDocument, sm3
from trustspace.ledger.backend import Evidence
from trustspace.ledger.errors import ChainRejected, LedgerUnavailable
from trustspace.ledger.evm import ChainEntry, ChainTx, EvmLedger
from trustspace.ledger.receipts import Kind
from trustspace.ledger.tables import LogCheckpoint

from .ledgers import LocalLedger
from .node import Node

KIND_CODES = {kind: code for code, kind in enumerate(Kind, start=1)}


def chain_id(text: str) -> bytes:
    """A 32-byte on-chain key for an id of any length: its SM3."""
    return sm3(text.encode())


def chain_entry(doc: SignedDocument, submitter: str) -> ChainEntry:
    body = doc.body
    return ChainEntry(receipt_id=chain_id(str(body["id"])), kind=KIND_CODES[Kind(body["kind"])],
                      agreement=chain_id(str(body.get("agreementId") or "")),
                      digest=bytes.fromhex(doc.digest.removeprefix("sm3:")),
                      submitter=chain_id(submitter))


class EvmAnchoredLedger:
    def __init__(self, node: Node) -> None:
        settings = node.settings
        if not settings.evm_rpc_url or not settings.evm_contract:
            raise ValueError("ledger = evm needs evm_rpc_url and evm_contract")
        key = os.environ.get(settings.evm_key_env)
        if not key:
            raise ValueError(f"ledger = evm: set {settings.evm_key_env} to the chain account's "
                             "private key (hex)")
        self.node = node
        self.local = LocalLedger(node)
        self.chain = EvmLedger(settings.evm_rpc_url, settings.evm_contract, key,
                               confirmations=max(1, settings.evm_confirmations),
                               timeout=settings.http_timeout_seconds * 3)

    def submit(self, documents: Sequence[SignedDocument]) -> list[Evidence]:
        evidence = self.local.submit(documents)
        membership = self.node.membership()
        submitter = membership.participant_id if membership else self.node.settings.name
        by_receipt: dict[str, ChainTx] = {}
        if not self.node.settings.evm_batch:
            entries = [chain_entry(doc, submitter) for doc in documents]
            missing = []
            for doc, entry in zip(documents, entries, strict=True):
                found = self.chain.find(entry.receipt_id)
                if found is None:
                    missing.append((doc, entry))
                else:
                    by_receipt[str(doc.body["id"])] = self.chain.wait(found)
            if missing:
                sent = self.chain.record([entry for _, entry in missing])
                by_receipt.update({str(doc.body["id"]): tx
                                   for (doc, _), tx in zip(missing, sent, strict=True)})
        anchor = self._anchor(evidence[-1].size) if evidence else None
        return [Evidence(e.receipt_id, e.digest, e.index, e.size, e.inclusion, e.checkpoint,
                         e.duplicate, *(_where(by_receipt.get(e.receipt_id) or anchor)))
                for e in evidence]

    def _anchor(self, size: int) -> ChainTx | None:
        """Anchor the checkpoint of `size` (once: a later checkpoint covers an earlier one)."""
        with self.node.db.read() as session:
            row = session.get(LogCheckpoint, size)
            if row is None:
                return None
            if row.chain_tx:
                return ChainTx(row.chain_tx, row.chain_block)
            origin, root, note = self.node.log.origin, bytes.fromhex(row.root), row.note
        try:
            tx = self.chain.anchor(chain_id(origin), size, root, sm3(note.encode()))
        except ChainRejected as exc:
            if exc.reason != "checkpoint-not-newer":
                raise LedgerUnavailable("chain-refused", str(exc)) from None
            return None  # a newer checkpoint is anchored already, and it covers this one
        with self.node.db.transaction() as session:
            stored = session.get(LogCheckpoint, size)
            if stored is not None:
                stored.chain_tx, stored.chain_block = tx.tx_hash, tx.block_number
        return tx


def _where(tx: ChainTx | None) -> tuple[str | None, int | None]:
    return (None, None) if tx is None else (tx.tx_hash, tx.block_number)

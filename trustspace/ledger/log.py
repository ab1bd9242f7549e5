"""The transparency log in a node's database: append-only receipts, the RFC 9162 Merkle tree
over them (SM3), proofs, and signed checkpoints that witnesses cosign.

One log per database. Appends lock the log's head row, so concurrent appenders are serialised
on PostgreSQL as on SQLite, and each append writes its entries and the tree nodes they complete
in the caller's transaction: a crash leaves the log as it was before or after, never between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from trustspace.crypto import DocumentInvalid, SignedDocument, Signer

from . import merkle
from .checkpoint import Checkpoint, SignedNote, sign_checkpoint
from .errors import LedgerError
from .merkle import SM3, Coord, HashFn
from .receipts import Receipt
from .tables import LogCheckpoint, LogEntry, LogHead, LogNode


class ReceiptRejected(LedgerError):
    """A receipt the log will not take: `receipt-invalid` (a signature or its shape fails),
    `receipt-conflict` (another receipt with this id is in the log), `not-a-party` (the
    submitter is neither party)."""


@dataclass(frozen=True)
class Appended:
    receipt_id: str
    digest: str
    index: int
    duplicate: bool  # already in the log: the index it was given then


Verifier = Callable[[SignedDocument], Receipt]


def leaf_bytes(document: SignedDocument) -> bytes:
    """What a log leaf holds: the receipt's canonical JSON, signatures included."""
    return document.to_bytes()


class TransparencyLog:
    def __init__(self, origin: str, name: str, signer: Signer, h: HashFn = SM3) -> None:
        self.origin = origin  # the checkpoint's first line
        self.name = name  # the key name on the log's signature line
        self.signer = signer
        self.h = h

    # ---- appending -----------------------------------------------------------------------

    def append(self, session: Session, documents: Sequence[SignedDocument], submitter: str,
               now: datetime, verify: Verifier | None = None) -> list[Appended]:
        """Append receipts in order (idempotent by receipt id). `verify` checks each new one
        (signatures, parties) and raises DocumentInvalid to refuse it."""
        head = self._head(session, now)
        ids = [str(d.body.get("id")) for d in documents]
        known = {row.receipt_id: row for row in session.execute(
            select(LogEntry.receipt_id, LogEntry.digest, LogEntry.idx)
            .where(LogEntry.receipt_id.in_(ids)))}
        out: list[Appended] = []
        new: list[tuple[SignedDocument, Receipt]] = []
        fresh: dict[str, str] = {}
        for doc, rid in zip(documents, ids, strict=True):
            if not doc.intact:
                raise ReceiptRejected("receipt-invalid", f"{rid}: digest-mismatch: the body "
                                      "changed after signing")
            try:  # duplicates too: a retry must come from someone entitled to submit it
                receipt = verify(doc) if verify else Receipt(doc)
            except DocumentInvalid as exc:
                raise ReceiptRejected("receipt-invalid", f"{rid}: {exc}") from None
            seen = known.get(rid)
            if seen is not None or rid in fresh:
                digest = seen.digest if seen is not None else fresh[rid]
                if digest != doc.digest:
                    raise ReceiptRejected("receipt-conflict",
                                          f"{rid} is in the log with another digest")
                out.append(Appended(rid, digest, seen.idx if seen else -1, True))
                continue
            fresh[rid] = doc.digest
            new.append((doc, receipt))
        size = head.size
        if new:
            leaves = [merkle.leaf_hash(leaf_bytes(doc), self.h) for doc, _ in new]
            existing = self._nodes(session, merkle.append_many_plan(size, len(leaves)))
            added = merkle.nodes_added_many(size, leaves, existing, self.h)
            session.execute(insert(LogEntry), [
                {"idx": size + i, "receipt_id": r.id, "digest": doc.digest,
                 "kind": r.kind.value, "agreement_id": r.agreement_id,
                 "product_id": r.public.get("productId"), "provider_id": r.provider,
                 "consumer_id": r.consumer, "submitter": submitter,
                 "document": doc.to_json(), "logged_at": now}
                for i, (doc, r) in enumerate(new)])
            session.execute(insert(LogNode), [
                {"level": level, "idx": idx, "hash": value} for level, idx, value in added])
            head.size = size + len(new)
            head.updated_at = now
        index = {doc.digest: size + i for i, (doc, _) in enumerate(new)}
        return self._in_order(documents, out, new, index)

    @staticmethod
    def _in_order(documents: Sequence[SignedDocument], seen: list[Appended],
                  new: list[tuple[SignedDocument, Receipt]],
                  index: dict[str, int]) -> list[Appended]:
        by_digest = {a.digest: a for a in seen}
        by_digest.update({doc.digest: Appended(r.id, doc.digest, index[doc.digest], False)
                          for doc, r in new})
        result = []
        for doc in documents:
            a = by_digest[doc.digest]
            if a.index < 0:  # a duplicate within this batch
                a = Appended(a.receipt_id, a.digest, index[a.digest], True)
            result.append(a)
        return result

    def _head(self, session: Session, now: datetime) -> LogHead:
        head = session.get(LogHead, self.origin, with_for_update=True)
        if head is None:
            head = LogHead(origin=self.origin, size=0, updated_at=now)
            session.add(head)
            session.flush()
        return head

    # ---- reading -------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        head = session.get(LogHead, self.origin)
        return 0 if head is None else head.size

    def _nodes(self, session: Session, coords: Iterable[Coord]) -> dict[Coord, bytes]:
        wanted = list(coords)
        if not wanted:
            return {}
        # One `level = ? AND idx IN (...)` per level: SQLite does not use the primary key for
        # a row-value IN, and a proof needs at most one node per level anyway.
        by_level: dict[int, list[int]] = {}
        for level, idx in wanted:
            by_level.setdefault(level, []).append(idx)
        found: dict[Coord, bytes] = {}
        clauses = [(LogNode.level == level) & LogNode.idx.in_(idxs)
                   for level, idxs in by_level.items()]
        for chunk in range(0, len(clauses), 50):
            for level, idx, value in session.execute(
                    select(LogNode.level, LogNode.idx, LogNode.hash)
                    .where(or_(*clauses[chunk:chunk + 50]))):
                found[(level, idx)] = bytes(value)
        return found

    def root(self, session: Session, size: int) -> bytes:
        plan = merkle.root_plan(size)
        return plan.assemble(self._nodes(session, plan.nodes), self.h)

    def inclusion(self, session: Session, index: int, size: int) -> list[bytes]:
        plan = merkle.inclusion_plan(index, size)
        return plan.assemble(self._nodes(session, plan.nodes), self.h)

    def consistency(self, session: Session, old_size: int, new_size: int) -> list[bytes]:
        plan = merkle.consistency_plan(old_size, new_size)
        return plan.assemble(self._nodes(session, plan.nodes), self.h)

    def leaf_hash(self, session: Session, index: int) -> bytes:
        return self._nodes(session, [(0, index)])[(0, index)]

    def entries(self, session: Session, start: int, end: int) -> list[LogEntry]:
        return list(session.scalars(select(LogEntry).where(
            LogEntry.idx >= start, LogEntry.idx < end).order_by(LogEntry.idx)))

    # ---- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, session: Session, now: datetime) -> LogCheckpoint:
        """The newest checkpoint, signing a new one first if the log grew since."""
        size = self.size(session)
        latest = self.latest(session)
        if latest is not None and latest.size == size:
            return latest
        root = self.root(session, size)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.name, self.signer)
        row = LogCheckpoint(size=size, root=root.hex(), note=note.text(), cosignatures=0,
                            created_at=now)
        session.add(row)
        session.flush()
        return row

    def latest(self, session: Session) -> LogCheckpoint | None:
        return session.scalar(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1))

    def at(self, session: Session, size: int) -> LogCheckpoint | None:
        return session.get(LogCheckpoint, size)

    def add_cosignature(self, session: Session, size: int, note: SignedNote) -> LogCheckpoint:
        """Store a witness's cosignature line(s) on the checkpoint of `size` (lines already
        there are not added twice)."""
        row = session.get(LogCheckpoint, size, with_for_update=True)
        if row is None:
            raise LedgerError("unknown-checkpoint", f"no checkpoint of size {size}")
        ours = SignedNote.parse(row.note)
        if note.body != ours.body:
            raise LedgerError("checkpoint-mismatch", "cosigned another checkpoint")
        lines = list(ours.signatures)
        for sig in note.signatures:
            if sig not in lines:
                lines.append(sig)
        merged = SignedNote(ours.body, tuple(lines))
        row.note = merged.text()
        row.cosignatures = len(lines) - 1
        return row

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

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from trustspace.crypto import Canonical, DocumentInvalid, SignedDocument, Signer
from trustspace.db import JSONText, insert_many

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

_ENTRY_COLUMNS = ("idx", "receipt_id", "digest", "kind", "agreement_id", "product_id",
                  "provider_id", "consumer_id", "submitter", "document")


def leaf_bytes(document: SignedDocument) -> bytes:
    """What a log leaf holds: the receipt's canonical JSON, signatures included."""
    return document.to_bytes()


def _entry_row(index: int, r: Receipt, digest: str, submitter: str,
               entry: bytes) -> tuple[object, ...]:
    body = r.document.body  # read directly: the log appends thousands a second
    agreement = body.get("agreementId")
    return (index, r.id, digest, r.kind.value, None if agreement is None else str(agreement),
            body["public"].get("productId"), str(body["provider"]), str(body["consumer"]),
            submitter, JSONText(entry.decode()))


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
        size = head.size
        ids = [str(d.body.get("id")) for d in documents]
        known = {row.receipt_id: row for row in session.execute(
            select(LogEntry.receipt_id, LogEntry.digest, LogEntry.idx)
            .where(LogEntry.receipt_id.in_(ids)))}
        placed: list[tuple[str, str, int, bool]] = []  # Appended's fields, per document
        fresh: dict[str, tuple[str, int]] = {}  # receipt id -> (digest, index) of a new one
        new: list[tuple[SignedDocument, Canonical, Receipt | None]] = []
        for doc, rid in zip(documents, ids, strict=True):
            canonical = doc.canonical()  # the body's JSON once, for the digest and the leaf
            if not canonical.intact:
                raise ReceiptRejected("receipt-invalid", f"{rid}: digest-mismatch: the body "
                                      "changed after signing")
            try:  # duplicates too: a retry must come from someone entitled to submit it
                receipt = verify(doc) if verify else None
            except DocumentInvalid as exc:
                raise ReceiptRejected("receipt-invalid", f"{rid}: {exc}") from None
            seen = known.get(rid)
            # In the log already, or earlier in this batch (then reported as that one is).
            again = fresh.get(rid) if seen is None else (seen.digest, seen.idx)
            if again is not None:
                if again[0] != doc.digest:
                    raise ReceiptRejected("receipt-conflict",
                                          f"{rid} is in the log with another digest")
                placed.append((rid, *again, seen is not None))
                continue
            fresh[rid] = (doc.digest, size + len(new))
            placed.append((rid, doc.digest, size + len(new), False))
            new.append((doc, canonical, receipt))
        if new:
            h = self.h
            entries = [canonical.to_bytes() for _, canonical, _ in new]  # = leaf_bytes(doc)
            leaves = [merkle.leaf_hash(entry, h) for entry in entries]
            existing = self._nodes(session, merkle.append_many_plan(size, len(leaves)))
            added = merkle.nodes_added_many(size, leaves, existing, h)
            # The document goes in as the canonical JSON just hashed: not serialised again, and
            # what the column holds is the leaf.
            insert_many(session, LogEntry, _ENTRY_COLUMNS, (
                _entry_row(size + i, Receipt(doc) if r is None else r, doc.digest, submitter, entry)
                for i, ((doc, _, r), entry) in enumerate(zip(new, entries, strict=True))),
                logged_at=now)
            insert_many(session, LogNode, ("level", "idx", "hash"), added)
            head.size = size + len(new)
            head.updated_at = now
        return [Appended(*fields) for fields in placed]

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

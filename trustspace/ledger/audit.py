"""What a regulator checks, offline, with nothing but an audit bundle and the authority's public
key: every receipt's signatures (against membership credentials the authority signed), every
inclusion proof, the consistency of successive checkpoints, the witnesses' quorum, and that the
chain's anchors name the log's own roots.

Bundle (JSON)::

    {"format": "trustspace.audit-bundle/1", "origin": "...", "logName": "...",
     "logParticipant": null,          # or the member whose own log this is (its key signs)
     "complete": true,                # entries are the whole log: a gap is a removed entry
     "checkpoints": ["<signed note>", ...],              # ascending sizes; the last is proven to
     "consistency": [{"old": n, "new": m, "proof": [hex]}],   # between successive checkpoints
     "entries": [{"index": i, "receipt": {...}, "inclusion": [hex]}],  # to the last checkpoint
     "credentials": [<membership credential>, ...],     # the parties and the witnesses
     "anchors": [{"size": n, "root": hex, "tx": "0x..", "block": b}]}

`verify_bundle` returns a report whose findings name each failure precisely (what, where, why);
it never stops at the first one, so a report shows everything that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustspace.crypto import DocumentInvalid, SignedDocument, SM2PublicKey
from trustspace.registry.credentials import CredentialInvalid, parse_iso, verify_membership

from . import merkle
from .checkpoint import SignedNote, quorum, verify_note
from .errors import LedgerError, ProofInvalid
from .log import TransparencyLog, leaf_bytes
from .receipts import Receipt, verify_receipt
from .tables import LogCheckpoint, LogEntry

BUNDLE_FORMAT = "trustspace.audit-bundle/1"


@dataclass(frozen=True)
class Finding:
    code: str  # e.g. inclusion-failed, signature-invalid, missing-entry, not-final
    where: str  # e.g. "entry 12 (urn:uuid:...)", "checkpoint 40"
    detail: str
    severity: str = "failure"  # failure | warning

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "where": self.where,
                "detail": self.detail}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    entries: int = 0
    checkpoints: int = 0
    anchors: int = 0
    size: int = 0
    final: bool = False

    @property
    def ok(self) -> bool:
        return not any(f.severity == "failure" for f in self.findings)

    def fail(self, code: str, where: str, detail: str) -> None:
        self.findings.append(Finding(code, where, detail))

    def warn(self, code: str, where: str, detail: str) -> None:
        self.findings.append(Finding(code, where, detail, "warning"))

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "size": self.size, "entries": self.entries,
                "checkpoints": self.checkpoints, "anchors": self.anchors, "final": self.final,
                "findings": [f.to_json() for f in self.findings]}


# ---- building a bundle (on the node that holds the log) ----------------------------------------

@dataclass(frozen=True)
class Selection:
    agreement: str | None = None
    product: str | None = None
    participant: str | None = None
    since: datetime | None = None

    @property
    def everything(self) -> bool:
        return not (self.agreement or self.product or self.participant or self.since)


def select_entries(session: Session, selection: Selection) -> list[LogEntry]:
    query = select(LogEntry).order_by(LogEntry.idx)
    if selection.agreement:
        query = query.where(LogEntry.agreement_id == selection.agreement)
    if selection.product:
        query = query.where(LogEntry.product_id == selection.product)
    if selection.participant:
        query = query.where((LogEntry.provider_id == selection.participant)
                            | (LogEntry.consumer_id == selection.participant))
    if selection.since:
        query = query.where(LogEntry.logged_at >= selection.since)
    return list(session.scalars(query))


def build_bundle(session: Session, log: TransparencyLog, selection: Selection,
                 credentials: Sequence[Mapping[str, Any]], now: datetime,
                 log_participant: str | None = None) -> dict[str, Any]:
    """The entries selected, proven to the newest checkpoint, with every checkpoint and the
    consistency proofs that chain them."""
    latest = log.checkpoint(session, now)
    checkpoints = list(session.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size)))
    sizes = [c.size for c in checkpoints]
    entries = select_entries(session, selection)
    return {
        "format": BUNDLE_FORMAT, "origin": log.origin, "logName": log.name,
        "logParticipant": log_participant,  # None: the authority's log, signed by the anchor
        "complete": selection.everything,
        "checkpoints": [c.note for c in checkpoints],
        "consistency": [{"old": a, "new": b, "proof": [h.hex() for h in
                                                      log.consistency(session, a, b)]}
                        for a, b in zip(sizes, sizes[1:], strict=False)],
        "entries": [{"index": e.idx, "submitter": e.submitter,
                     "loggedAt": e.logged_at.isoformat(), "receipt": e.document,
                     "inclusion": [h.hex() for h in log.inclusion(session, e.idx, latest.size)]}
                    for e in entries if e.idx < latest.size],
        "credentials": [dict(c) for c in credentials],
        "anchors": [{"size": c.size, "root": c.root, "tx": c.chain_tx, "block": c.chain_block}
                    for c in checkpoints if c.chain_tx],
    }


# ---- verifying a bundle (anywhere, offline) ----------------------------------------------------

def _keys(bundle: Mapping[str, Any], authority_key: SM2PublicKey, report: Report
          ) -> dict[str, SM2PublicKey]:
    keys: dict[str, SM2PublicKey] = {}
    for i, doc in enumerate(bundle.get("credentials", [])):
        try:
            valid_from = parse_iso(doc["body"]["validFrom"], "validFrom")
            membership = verify_membership(doc, authority_key, now=valid_from)
        except (CredentialInvalid, DocumentInvalid, KeyError, TypeError) as exc:
            report.fail("credential-invalid", f"credential {i}", str(exc))
            continue
        keys[membership.participant_id] = membership.public_key
    return keys


def _checkpoints(bundle: Mapping[str, Any], log_key: SM2PublicKey, report: Report
                 ) -> list[tuple[int, bytes, SignedNote]]:
    origin, name = str(bundle.get("origin")), str(bundle.get("logName"))
    heads: list[tuple[int, bytes, SignedNote]] = []
    for text in bundle.get("checkpoints", []):
        try:
            note = SignedNote.parse(text)
            verified = verify_note(note, {name: log_key}, origin=origin)
            if name not in verified.signers:
                raise LedgerError("unknown-key", "not signed by the log")
            cp = note.checkpoint()
        except LedgerError as exc:
            report.fail(f"checkpoint-{exc.reason}", "checkpoint", str(exc))
            continue
        heads.append((cp.size, cp.root_hash, note))
    sizes = [h[0] for h in heads]
    if sizes != sorted(set(sizes)):
        report.fail("checkpoints-out-of-order", "checkpoints",
                    f"sizes {sizes} are not strictly ascending")
    report.checkpoints = len(heads)
    proofs = {(int(p["old"]), int(p["new"])): p["proof"] for p in bundle.get("consistency", [])}
    for (a, ra, _), (b, rb, _) in zip(heads, heads[1:], strict=False):
        where = f"checkpoints {a} -> {b}"
        proof = proofs.get((a, b))
        if proof is None:
            report.fail("consistency-missing", where, "no consistency proof between them")
            continue
        try:
            merkle.verify_consistency(a, b, ra, rb, [bytes.fromhex(h) for h in proof])
        except (ProofInvalid, ValueError) as exc:
            report.fail("inconsistent-checkpoints", where, str(exc))
    return heads


def verify_bundle(bundle: Mapping[str, Any], authority_key: SM2PublicKey, *,
                  quorum_size: int = 2) -> Report:
    report = Report()
    if bundle.get("format") != BUNDLE_FORMAT:
        report.fail("malformed", "bundle", f"not a {BUNDLE_FORMAT} bundle")
        return report
    keys = _keys(bundle, authority_key, report)
    log_key = authority_key
    if bundle.get("logParticipant"):  # a member's own log, signed with its member key
        member_key = keys.get(str(bundle["logParticipant"]))
        if member_key is None:
            report.fail("unknown-log-key", "bundle", f"no credential for the log's keeper "
                        f"{bundle['logParticipant']}")
            return report
        log_key = member_key
    heads = _checkpoints(bundle, log_key, report)
    if not heads:
        report.fail("no-checkpoint", "bundle", "no valid checkpoint to prove entries against")
        return report
    size, root, note = heads[-1]
    report.size = size
    report.final = quorum(note, keys, quorum_size)
    if not report.final:
        report.warn("not-final", f"checkpoint {size}",
                    f"fewer than {quorum_size} witnesses cosigned it")
    seen: list[int] = []
    for item in bundle.get("entries", []):
        index = int(item.get("index", -1))
        where = f"entry {index}"
        try:
            doc = SignedDocument.from_json(item["receipt"])
            where = f"entry {index} ({doc.body.get('id')})"
            merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes(doc)), index, size,
                                    [bytes.fromhex(h) for h in item["inclusion"]], root)
        except (ProofInvalid, DocumentInvalid, KeyError, ValueError) as exc:
            report.fail("inclusion-failed", where, str(exc))
            continue
        finally:
            seen.append(index)
        try:
            verify_receipt(doc, keys)
        except DocumentInvalid as exc:
            report.fail(f"receipt-{exc.reason}", where, str(exc))
        report.entries += 1
    if seen != sorted(set(seen)):
        report.fail("entries-out-of-order", "entries", "indices repeat or go backwards")
    if bundle.get("complete"):
        missing = sorted(set(range(size)) - set(seen))
        if missing:
            report.fail("missing-entry", f"entries {missing[:10]}",
                        f"{len(missing)} of {size} entries are not in the bundle")
    roots = {s: r for s, r, _ in heads}
    for anchor in bundle.get("anchors", []):
        report.anchors += 1
        where = f"anchor of size {anchor.get('size')} (tx {anchor.get('tx')})"
        known = roots.get(int(anchor.get("size", -1)))
        if known is None:
            report.fail("anchor-unknown-size", where, "no checkpoint of that size")
        elif known.hex() != anchor.get("root"):
            report.fail("anchor-mismatch", where, "the chain anchors another root than the log")
    return report


def chain_anchors(events: Sequence[Any], origin: str) -> list[dict[str, Any]]:
    """The anchors of log `origin` among a chain's events (evm.CheckpointEvent), in the
    bundle's form: what `verify_bundle` compares with the log's own roots."""
    from trustspace.crypto import sm3

    key = sm3(origin.encode())
    return [{"size": e.size, "root": e.root_hash.hex(), "tx": e.tx.tx_hash,
             "block": e.tx.block_number}
            for e in events if getattr(e, "origin", None) == key]


def trace(bundle: Mapping[str, Any]) -> list[Receipt]:
    """The receipts of a bundle in log order (parsed, not verified: see verify_bundle)."""
    return [Receipt(SignedDocument.from_json(e["receipt"])) for e in bundle.get("entries", [])]

"""The data space's shared log at the authority (members submit receipts and get back the entry
index, an inclusion proof and a signed checkpoint, like a Rekor or CT entry), and the witness
endpoint every member node serves (the authority asks it to cosign new checkpoints)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.crypto import DocumentInvalid, SignedDocument, SM2PublicKey
from trustspace.ledger.checkpoint import SignedNote, quorum
from trustspace.ledger.log import ReceiptRejected, TransparencyLog
from trustspace.ledger.receipts import Receipt, verify_receipt
from trustspace.ledger.tables import LogCheckpoint
from trustspace.ledger.witness import WitnessRefused, cosign
from trustspace.registry.tables import Member

from .auth import Caller, member, node_of
from .errors import ApiError
from .node import Node

router = APIRouter(prefix="/ledger", tags=["protocol: ledger"])
witness_router = APIRouter(prefix="/witness", tags=["protocol: witness"])
AnyMember = Annotated[Caller, Depends(member())]
MAX_BATCH = 500


def _authority(request: Request) -> Node:
    node = node_of(request)
    if not node.is_authority:
        raise ApiError(404, "not-found", "this node does not run the data space's log")
    return node


def member_keys(node: Node, participant_ids: set[str]) -> dict[str, SM2PublicKey]:
    """Keys of members (approved, or revoked since: receipts they signed before still count)."""
    with node.db.read() as session:
        return {m.participant_id: SM2PublicKey.from_pem(m.public_key_pem)
                for m in session.scalars(select(Member).where(
                    Member.participant_id.in_(participant_ids),
                    Member.status.in_(("approved", "revoked"))))}


def witnesses(node: Node) -> dict[str, SM2PublicKey]:
    """Every approved member witnesses the authority's log, by participant id."""
    with node.db.read() as session:
        return {m.participant_id: SM2PublicKey.from_pem(m.public_key_pem)
                for m in session.scalars(select(Member).where(Member.status == "approved"))}


def checkpoint_view(node: Node, row: LogCheckpoint) -> dict[str, Any]:
    note = SignedNote.parse(row.note)
    known = witnesses(node)
    cosigners = sorted({s.name for s in note.signatures if s.name in known})
    return {"size": row.size, "root": row.root, "note": row.note, "cosigners": cosigners,
            "quorum": node.settings.witness_quorum,
            "final": quorum(note, known, node.settings.witness_quorum)}


def _parse_receipts(body: bytes) -> list[SignedDocument]:
    try:
        value = json.loads(body or b"null")
        documents = value["receipts"]
        if not isinstance(documents, list) or not 0 < len(documents) <= MAX_BATCH:
            raise ValueError(f"1 to {MAX_BATCH} receipts")
        return [SignedDocument.from_json(d) for d in documents]
    except (ValueError, KeyError, TypeError, DocumentInvalid) as exc:
        raise ApiError(400, "malformed", f'expected {{"receipts": [...]}}: {exc}') from None


@router.post("/entries")
async def submit(request: Request, caller: AnyMember) -> dict[str, Any]:
    """Append receipts the caller is a party to. Each is verified (both parties' signatures
    where the kind needs both); a receipt already in the log gets its index back."""
    node = _authority(request)
    documents = _parse_receipts(caller.body)
    parties = {str(d.body.get(k)) for d in documents for k in ("provider", "consumer")}
    keys = await run_in_threadpool(member_keys, node, parties)

    def verify(doc: SignedDocument) -> Receipt:
        receipt = verify_receipt(doc, keys)
        if caller.participant_id not in (receipt.provider, receipt.consumer):
            raise DocumentInvalid("not-a-party", "the submitter is neither party")
        return receipt

    def append() -> dict[str, Any]:
        log = node.log
        with node.db.transaction() as session:
            appended = log.append(session, documents, caller.participant_id, node.clock(),
                                  verify)
            checkpoint = log.checkpoint(session, node.clock())
            return {"checkpoint": checkpoint.note, "size": checkpoint.size, "entries": [
                {"id": a.receipt_id, "digest": a.digest, "index": a.index,
                 "duplicate": a.duplicate,
                 "inclusion": [h.hex() for h in log.inclusion(session, a.index,
                                                              checkpoint.size)]}
                for a in appended]}

    try:
        answer = await run_in_threadpool(append)
    except ReceiptRejected as exc:
        raise ApiError(409 if exc.reason == "receipt-conflict" else 400, exc.reason,
                       exc.detail) from None
    node.witness_pusher.kick()
    return answer


@router.get("/checkpoint")
def latest_checkpoint(request: Request, caller: AnyMember) -> dict[str, Any]:
    node = _authority(request)
    with node.db.transaction() as session:
        row = node.log.checkpoint(session, node.clock())
        return {"origin": node.log.origin, **checkpoint_view(node, row)}


@router.get("/checkpoints/{size}")
def checkpoint_at(size: int, request: Request, caller: AnyMember) -> dict[str, Any]:
    node = _authority(request)
    with node.db.read() as session:
        row = node.log.at(session, size)
        if row is None:
            raise ApiError(404, "unknown-checkpoint", f"no checkpoint of size {size}")
        return checkpoint_view(node, row)


def _proof(node: Node, work: Any) -> list[str]:
    try:
        with node.db.read() as session:
            return [h.hex() for h in work(node.log, session)]
    except (ValueError, LookupError) as exc:
        raise ApiError(400, "bad-range", str(exc)) from None


@router.get("/proof/inclusion")
def inclusion(request: Request, caller: AnyMember, index: Annotated[int, Query(ge=0)],
              size: Annotated[int, Query(ge=1)]) -> dict[str, Any]:
    node = _authority(request)
    return {"index": index, "size": size, "proof": _proof(
        node, lambda log, s: log.inclusion(s, index, size) if size <= log.size(s)
        else _beyond(size))}


@router.get("/proof/consistency")
def consistency(request: Request, caller: AnyMember, old: Annotated[int, Query(ge=0)],
                new: Annotated[int, Query(ge=0)]) -> dict[str, Any]:
    node = _authority(request)
    return {"old": old, "new": new, "proof": _proof(
        node, lambda log, s: log.consistency(s, old, new) if new <= log.size(s)
        else _beyond(new))}


def _beyond(size: int) -> list[bytes]:
    raise ValueError(f"the log is smaller than {size}")


@router.get("/entries")
def entries(request: Request, caller: Annotated[Caller, Depends(member("regulator"))],
            start: Annotated[int, Query(ge=0)] = 0,
            end: Annotated[int | None, Query(ge=0)] = None) -> dict[str, Any]:
    """The log's entries (whole receipts: their confidential parts stay sealed), for
    regulators and auditors to trace and verify."""
    node = _authority(request)
    with node.db.read() as session:
        size = node.log.size(session)
        stop = min(size, end if end is not None else size, start + 1000)
        rows = node.log.entries(session, start, stop)
        return {"size": size, "entries": [
            {"index": r.idx, "submitter": r.submitter, "loggedAt": r.logged_at.isoformat(),
             "receipt": r.document} for r in rows]}


# ---- the witness (every member node) ---------------------------------------------------------

@witness_router.post("/add-checkpoint")
async def add_checkpoint(request: Request, caller: AnyMember) -> dict[str, Any]:
    """The authority asks this node to cosign its new checkpoint."""
    node = node_of(request)
    if caller.membership.public_key.key_id != node.authority_key.key_id:
        raise ApiError(403, "not-the-log", "only the data space's authority sends checkpoints")
    membership = node.membership()
    if membership is None:
        raise ApiError(409, "not-a-member", "this node has no membership credential yet")
    try:
        body = json.loads(caller.body or b"null")
        note, old_size = str(body["checkpoint"]), int(body["oldSize"])
        proof = [bytes.fromhex(h) for h in body.get("consistency", [])]
        log_name = str(body["logName"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "malformed", f"expected checkpoint, oldSize, consistency: {exc}") \
            from None

    def work() -> str:
        with node.db.transaction() as session:
            return cosign(session, note, old_size, proof, log_name=log_name,
                          log_key=node.authority_key, name=membership.participant_id,
                          signer=node.key, now=node.clock()).text()

    try:
        cosigned = await run_in_threadpool(work)
    except WitnessRefused as exc:
        raise ApiError(exc.status, exc.reason, exc.detail,
                       **({"size": exc.known_size} if exc.known_size is not None else {})) \
            from None
    return {"cosignature": cosigned}


def log_of(node: Node) -> TransparencyLog:
    return node.log

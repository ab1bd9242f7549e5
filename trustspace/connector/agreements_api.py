"""Agreements after they were finalized: the operator lists them and ends them (terminate, or
revoke as provider); the protocol endpoint takes the other party's notice that it ended one
(a trustspace extension: contracts/ending.py, docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from trustspace.contracts import ending
from trustspace.contracts.tables import Agreement
from trustspace.ledger.receipts import Kind
from trustspace.registry.credentials import iso

from .auth import Caller, member, node_of, operator
from .errors import ApiError
from .negotiation_api import me
from .node import Node

router = APIRouter(tags=["protocol: agreements"])
manage = APIRouter(prefix="/api", tags=["management: agreements"])
Operator = Annotated[Node, Depends(operator)]
Reason = Annotated[str, Body(embed=True, min_length=1, max_length=ending.MAX_REASON)]


def summary(a: Agreement) -> dict[str, Any]:
    return {"agreementId": a.agreement_id, "role": a.role, "provider": a.provider_id,
            "consumer": a.consumer_id, "dataset": a.dataset_id, "dataDigest": a.data_digest,
            "digest": a.digest, "createdAt": iso(a.created_at), "status": ending.status(a),
            "ended": None if a.end_kind is None else {
                "kind": a.end_kind, "by": a.ended_by, "code": a.end_code,
                "reason": a.end_reason, "at": iso(a.ended_at) if a.ended_at else None,
                "receiptId": a.end_receipt_id}}


async def _in_transaction(node: Node, work: Callable[[Session], Agreement]) -> dict[str, Any]:
    def transaction() -> dict[str, Any]:
        with node.db.transaction() as session:
            return summary(work(session))

    try:
        result = await run_in_threadpool(transaction)
    except ending.EndingRefused as exc:
        raise ApiError(exc.status, exc.reason, exc.detail) from None
    node.outbox.kick()  # the notice to the other party
    node.receipts.kick()  # the receipt, to the ledger
    return result


# ---- protocol ---------------------------------------------------------------------------------

@router.post("/agreements/{agreement_id}/termination")
async def termination(agreement_id: str, request: Request,
                      caller: Annotated[Caller, Depends(member())]) -> dict[str, Any]:
    """The other party terminated or revoked our agreement: {"agreementId", "receipt"}."""
    node = node_of(request)
    party = me(node)
    try:
        message = json.loads(caller.body or b"null")
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ApiError(400, "malformed", 'expected {"agreementId": ..., "receipt": ...}')
    shown = await _in_transaction(node, lambda s: ending.on_notice(
        s, party.participant_id, node.key.public_key, caller.membership, agreement_id, message,
        node.clock()))
    return {"agreementId": shown["agreementId"], "status": shown["status"],
            "receiptId": shown["ended"]["receiptId"]}


# ---- management -------------------------------------------------------------------------------

@manage.get("/agreements")
def list_agreements(node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        rows = session.scalars(select(Agreement).order_by(Agreement.created_at))
        return {"agreements": [summary(a) for a in rows]}


@manage.get("/agreements/{agreement_id:path}")
def show_agreement(agreement_id: str, node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        row = session.get(Agreement, agreement_id)
        if row is None:
            raise ApiError(404, "unknown-agreement", agreement_id)
        return {**summary(row), "document": row.document}


@manage.post("/agreements/{agreement_id}/terminate")
async def terminate(agreement_id: str, node: Operator, reason: Reason,
                    code: Annotated[str, Body(embed=True, min_length=1,
                                              max_length=ending.MAX_CODE)] = "terminated"
                    ) -> dict[str, Any]:
    """End an agreement (either party): no job starts under it any more."""
    party = me(node)
    return await _in_transaction(node, lambda s: ending.end(
        s, party, agreement_id, Kind.TERMINATION, code, reason, node.clock()))


@manage.post("/agreements/{agreement_id}/revoke")
async def revoke(agreement_id: str, node: Operator, reason: Reason,
                 code: Annotated[str, Body(embed=True, min_length=1,
                                           max_length=ending.MAX_CODE)] = "revoked"
                 ) -> dict[str, Any]:
    """(Provider) withdraw an agreement, e.g. because the data subject withdrew consent."""
    party = me(node)
    return await _in_transaction(node, lambda s: ending.end(
        s, party, agreement_id, Kind.REVOCATION, code, reason, node.clock()))

"""Receipts between the parties (protocol: the provider asks the consumer to countersign) and
for the node's operator (management: list and read this node's receipts and their evidence)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.ledger.countersign import ReceiptRefused, countersign_receipt
from trustspace.ledger.tables import StoredReceipt
from trustspace.registry.credentials import iso

from .auth import Caller, member, node_of, operator
from .errors import ApiError
from .node import Node

router = APIRouter(prefix="/receipts", tags=["protocol: receipts"])
manage = APIRouter(prefix="/api/receipts", tags=["management: receipts"])
Operator = Annotated[Node, Depends(operator)]


@router.post("/countersign")
async def countersign(request: Request,
                      caller: Annotated[Caller, Depends(member())]) -> dict[str, Any]:
    """The provider sends a receipt it issued; we check it against our agreement and return it
    with our signature (the same answer for a retried request)."""
    node = node_of(request)
    membership = node.membership()
    if membership is None:
        raise ApiError(409, "not-a-member", "this node has no membership credential yet")
    try:
        body = json.loads(caller.body or b"null")
        document = body["receipt"]
        if not isinstance(document, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "malformed", 'expected {"receipt": <signed receipt>}') from None

    def work() -> dict[str, Any]:
        with node.db.transaction() as session:
            signed = countersign_receipt(
                session, document, me=membership.participant_id, key=node.key,
                provider=caller.participant_id, provider_key=caller.membership.public_key,
                now=node.clock())
            return {"receipt": signed.to_json()}

    try:
        answer = await run_in_threadpool(work)
    except ReceiptRefused as exc:
        raise ApiError(exc.status, exc.reason, exc.detail) from None
    node.receipts.kick()
    return answer


def _view(row: StoredReceipt, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.receipt_id, "kind": row.kind, "status": row.status,
        "agreementId": row.agreement_id, "productId": row.product_id,
        "provider": row.provider_id, "consumer": row.consumer_id, "digest": row.digest,
        "createdAt": iso(row.created_at), "attempts": row.attempts, "lastError": row.last_error,
        "evidence": None if row.log_index is None else {
            "index": row.log_index, "size": row.log_size,
            "loggedAt": iso(row.logged_at) if row.logged_at else None,
            "chainTx": row.chain_tx, "chainBlock": row.chain_block},
    }
    if full:
        view["document"] = row.document
        if view["evidence"] is not None:
            view["evidence"].update(inclusion=row.inclusion, checkpoint=row.checkpoint)
    return view


@manage.get("")
def list_receipts(node: Operator, agreement: str | None = None, status: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    query = select(StoredReceipt).order_by(StoredReceipt.created_at).limit(limit)
    if agreement:
        query = query.where(StoredReceipt.agreement_id == agreement)
    if status:
        query = query.where(StoredReceipt.status == status)
    with node.db.read() as session:
        return {"receipts": [_view(r, False) for r in session.scalars(query)]}


@manage.get("/{receipt_id}")
def get_receipt(receipt_id: str, node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        row = session.get(StoredReceipt, receipt_id)
        if row is None:
            raise ApiError(404, "unknown-receipt", receipt_id)
        return _view(row, True)

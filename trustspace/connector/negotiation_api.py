"""Contract negotiation over the Dataspace Protocol 2025-1 HTTPS binding: the provider's
endpoints and the consumer's callbacks (every node is both), plus the operator's management
endpoints. Each message is one transaction; the reply goes out through the outbox at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from trustspace.contracts import messages
from trustspace.contracts import negotiation as engine
from trustspace.contracts.states import Message, Role, State
from trustspace.contracts.tables import Negotiation, OutboxMessage
from trustspace.registry import dsp
from trustspace.registry.credentials import Membership, iso

from .auth import Caller, UncheckedCall, member, node_of, operator, unchecked_member
from .catalog_api import published_views
from .client import NodeClient, RemoteError
from .errors import ApiError
from .node import Node

router = APIRouter(tags=["protocol: negotiation"])
manage = APIRouter(prefix="/api", tags=["management: negotiations"])
# Protocol messages check the signature in the worker thread that runs their transaction.
AnyMember = Annotated[UncheckedCall, Depends(unchecked_member())]
Operator = Annotated[Node, Depends(operator)]
T = TypeVar("T")


def me(node: Node) -> engine.Me:
    membership = node.membership()
    if membership is None:
        raise ApiError(409, "not-a-member", "this node has no membership credential yet")
    return engine.Me(membership.participant_id, node.key, node.settings.public_url,
                     node.regulator_keys())


def product_terms(node: Node) -> engine.ProductLookup:
    def lookup(dataset_id: str) -> engine.ProductTerms | None:
        views = published_views(node, dataset_id)
        if not views:
            return None
        view = views[0]
        if view.data_digest is None:
            return None
        manual = any(o.get(engine.NEGOTIATION_HINT) == "manual" for o in view.offers)
        if view.level is None:
            return None
        return engine.ProductTerms(dataset_id, view.offers, view.data_digest, view.registration,
                                   manual, view.level, view.compute_modes)
    return lookup


def _refusal(exc: engine.NegotiationRefused, parsed: messages.Parsed | None) -> JSONResponse:
    provider_pid = exc.provider_pid or (parsed.provider_pid if parsed else None)
    consumer_pid = exc.consumer_pid or (parsed.consumer_pid if parsed else None)
    return JSONResponse(messages.error(provider_pid, consumer_pid, exc.code, [exc.detail]),
                        status_code=exc.status)


def _ack(neg: Negotiation) -> dict[str, Any]:
    return messages.negotiation(neg.provider_pid, neg.consumer_pid, State(neg.state))


Work = Callable[[Session, Membership, messages.Parsed], Negotiation]


async def _handle(node: Node, call: UncheckedCall, expected: tuple[Message, ...], work: Work,
                  status: int = 200, receipt: bool = False) -> JSONResponse:
    """Check the signature, read the message and apply it in one transaction, all in one
    worker-thread call; then hand the message the transaction wrote to the outbox. `receipt`:
    the work may write a receipt (the provider finalizing), so wake the receipt worker; waking
    it after every message cost it a database scan each time."""
    parsed: messages.Parsed | None = None

    def transaction() -> tuple[dict[str, Any], list[OutboxMessage]]:
        nonlocal parsed
        caller = call.verify()  # first: nothing of an unauthenticated request is read
        try:
            parsed = messages.parse(json.loads(caller.body or b"null"), expected)
        except (ValueError, messages.MessageInvalid) as exc:
            raise engine.NegotiationRefused(400, "malformed", str(exc)) from None
        with node.db.transaction() as session:
            ack = _ack(work(session, caller.membership, parsed))
            rows = engine.written(session)
        return ack, rows

    try:
        ack, rows = await run_in_threadpool(transaction)
    except engine.NegotiationRefused as exc:
        return _refusal(exc, parsed)
    except messages.MessageInvalid as exc:
        return _refusal(engine.NegotiationRefused(400, "malformed", exc.detail), parsed)
    node.outbox.send_now(rows)
    if receipt:
        node.receipts.kick()  # a finalized agreement left an authorization receipt
    return JSONResponse(ack, status_code=status)


def _unknown(pid: str) -> JSONResponse:
    return JSONResponse(messages.error(pid, None, "unknown-negotiation",
                                       [f"no negotiation {pid} here"]), status_code=404)


def _role_of(session: Session, pid: str) -> Role:
    """Which side of negotiation `pid` this node is, read in the message's transaction."""
    role = session.scalar(select(Negotiation.role).where(Negotiation.pid == pid))
    if role is None:
        raise engine.NegotiationRefused(404, "unknown-negotiation", f"no negotiation {pid} here")
    return Role(role)


def _expect(msg: messages.Parsed, kind: Message) -> None:
    """The events endpoint takes ACCEPTED at the provider, FINALIZED at the consumer."""
    if msg.kind is not kind:
        raise messages.MessageInvalid(f"{msg.body.get('@type')} is not accepted at this endpoint")


# ---- protocol: the provider's endpoints ------------------------------------------------------

@router.post("/negotiations/request", status_code=201)
async def initial_request(call: Annotated[UncheckedCall, Depends(unchecked_member("consumer"))],
                          request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.REQUEST,), lambda s, sender, m: engine.on_request(
        s, me(node), sender, m, None, product_terms(node), node.clock()), status=201)


@router.post("/negotiations/{pid}/request")
async def counter_request(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.REQUEST,), lambda s, sender, m: engine.on_request(
        s, me(node), sender, m, pid, product_terms(node), node.clock()))


@router.post("/negotiations/{pid}/agreement/verification")
async def verification(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.VERIFICATION,),
                         lambda s, sender, m: engine.on_verification(s, me(node), sender, m,
                                                                     pid, node.clock()),
                         receipt=True)


@router.get("/negotiations/{pid}")
def get_negotiation(pid: str, caller: Annotated[Caller, Depends(member())],
                    request: Request) -> JSONResponse:
    node = node_of(request)
    with node.db.read() as session:
        neg = session.get(Negotiation, pid)
        if neg is None or neg.counterparty_id != caller.participant_id:
            return _unknown(pid)
        return JSONResponse(_ack(neg))


# ---- protocol: the consumer's callbacks --------------------------------------------------------

@router.post("/negotiations/offers", status_code=201)
async def initial_offer(call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.OFFER,), lambda s, sender, m: engine.on_offer(
        s, sender, m, None, node.clock()), status=201)


@router.post("/negotiations/{pid}/offers")
async def counter_offer(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.OFFER,), lambda s, sender, m: engine.on_offer(
        s, sender, m, pid, node.clock()))


@router.post("/negotiations/{pid}/agreement")
async def agreement(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.AGREEMENT,),
                         lambda s, sender, m: engine.on_agreement(s, me(node), sender, m, pid,
                                                                  node.clock()))


# ---- protocol: both sides ---------------------------------------------------------------------

@router.post("/negotiations/{pid}/events")
async def events(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    """ACCEPTED (consumer to provider) or FINALIZED (provider to consumer)."""
    node = node_of(request)

    def work(session: Session, sender: Membership, msg: messages.Parsed) -> Negotiation:
        if _role_of(session, pid) is Role.PROVIDER:
            _expect(msg, Message.ACCEPTED)
            return engine.on_accepted(session, me(node), sender, msg, pid, product_terms(node),
                                      node.clock())
        _expect(msg, Message.FINALIZED)
        return engine.on_finalized(session, sender, msg, pid, node.clock())

    return await _handle(node, call, (Message.ACCEPTED, Message.FINALIZED), work)


@router.post("/negotiations/{pid}/termination")
async def termination(pid: str, call: AnyMember, request: Request) -> JSONResponse:
    node = node_of(request)
    return await _handle(node, call, (Message.TERMINATION,),
                         lambda s, sender, m: engine.on_termination(
                             s, _role_of(s, pid), sender, m, pid, node.clock()))


# ---- management --------------------------------------------------------------------------------

def _summary(neg: Negotiation) -> dict[str, Any]:
    return {"pid": neg.pid, "role": neg.role, "state": neg.state,
            "providerPid": neg.provider_pid, "consumerPid": neg.consumer_pid,
            "counterparty": neg.counterparty_id, "dataset": neg.dataset_id,
            "offer": neg.offer, "agreementId": neg.agreement_id, "manual": neg.manual,
            "termination": neg.termination, "updatedAt": iso(neg.updated_at)}


async def _act(node: Node, work: Callable[[Session], Negotiation]) -> dict[str, Any]:
    def transaction() -> tuple[dict[str, Any], list[OutboxMessage]]:
        with node.db.transaction() as session:
            summary = _summary(work(session))
            rows = engine.written(session)
        return summary, rows

    try:
        result, rows = await run_in_threadpool(transaction)
    except engine.NegotiationRefused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    node.outbox.send_now(rows)
    return result


@manage.post("/negotiations", status_code=201)
async def start(node: Operator, provider_url: Annotated[str, Body(embed=True)],
                dataset: Annotated[str, Body(embed=True)],
                offer: Annotated[str | None, Body(embed=True)] = None) -> dict[str, Any]:
    """Negotiate `offer` (an offer @id; the only one when omitted) for `dataset` at a
    provider: reads the provider's dataset, then sends the request."""
    party = me(node)
    url = provider_url.rstrip("/")
    async with NodeClient(node) as client:
        try:
            shown = await client.get(f"{url}/catalog/datasets/{dataset}")
        except RemoteError as exc:
            status = exc.status if exc.status in (400, 401, 403, 404) else 502
            raise ApiError(status, exc.reason, exc.detail) from None
    try:
        view = dsp.parse_dataset(shown)
    except dsp.DspError as exc:
        raise ApiError(502, "bad-catalog", str(exc)) from None
    chosen = [o for o in view.offers if offer is None or o.get("@id") == offer]
    if len(chosen) != 1:
        ids = [o.get("@id") for o in view.offers]
        raise ApiError(400, "unknown-offer", f"choose one of the dataset's offers: {ids}")
    if not view.provider:
        raise ApiError(502, "bad-catalog", "the dataset does not name its provider")
    provider_id = view.provider
    return await _act(node, lambda s: engine.start(
        s, party, provider_id=provider_id, provider_url=url, dataset_id=view.id,
        offer=chosen[0], now=node.clock()))


@manage.get("/negotiations")
def list_negotiations(node: Operator, state: Annotated[str | None, Query()] = None
                      ) -> dict[str, Any]:
    with node.db.read() as session:
        query = select(Negotiation).order_by(Negotiation.created_at)
        if state:
            query = query.where(Negotiation.state == state.upper())
        return {"negotiations": [_summary(n) for n in session.scalars(query)]}


@manage.get("/negotiations/{pid}")
def show_negotiation(pid: str, node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        neg = session.get(Negotiation, pid)
        if neg is None:
            raise ApiError(404, "unknown-negotiation", pid)
        return {**_summary(neg), "agreement": neg.agreement}


@manage.post("/negotiations/{pid}/approve")
async def approve(pid: str, node: Operator) -> dict[str, Any]:
    party = me(node)
    return await _act(node, lambda s: engine.approve(s, party, pid, product_terms(node),
                                                     node.clock()))


@manage.post("/negotiations/{pid}/refuse")
async def refuse(pid: str, node: Operator,
                 reason: Annotated[str, Body(embed=True)] = "refused by the provider"
                 ) -> dict[str, Any]:
    party = me(node)
    return await _act(node, lambda s: engine.terminate(s, party, pid, "refused", reason,
                                                       node.clock()))


@manage.post("/negotiations/{pid}/terminate")
async def terminate(pid: str, node: Operator,
                    reason: Annotated[str, Body(embed=True)] = "terminated by the operator"
                    ) -> dict[str, Any]:
    party = me(node)
    return await _act(node, lambda s: engine.terminate(s, party, pid, "terminated", reason,
                                                       node.clock()))


@manage.post("/negotiations/{pid}/offer")
async def make_counter_offer(pid: str, node: Operator,
                             offer: Annotated[dict[str, Any], Body(embed=True)]
                             ) -> dict[str, Any]:
    return await _act(node, lambda s: engine.counter_offer(s, pid, offer, product_terms(node),
                                                           node.clock()))


@manage.post("/negotiations/{pid}/accept")
async def accept(pid: str, node: Operator) -> dict[str, Any]:
    return await _act(node, lambda s: engine.accept(s, pid, node.clock()))

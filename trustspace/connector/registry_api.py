"""The authority's protocol endpoints (other nodes call these): applications, revocations,
product registration, the federated catalog and data demands."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.crypto import SignedDocument, SM2PublicKey
from trustspace.registry import authority as registry
from trustspace.registry.credentials import iso
from trustspace.registry.tables import Member, Registration

from .auth import Caller, member, node_of, verify_signed
from .crawler import crawl_member
from .errors import ApiError
from .node import Node

router = APIRouter(prefix="/registry", tags=["protocol: authority"])


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise ApiError(400, "malformed", f"body is not JSON: {exc}") from None


def _authority(request: Request) -> Node:
    node = node_of(request)
    if not node.is_authority:
        raise ApiError(404, "not-found", "this node is not the data-space authority")
    return node


@router.post("/applications", status_code=202)
async def apply(request: Request) -> dict[str, Any]:
    """A participant applies with its SM2 public key; the request is signed by that key."""
    node = _authority(request)
    raw = await request.body()
    application = _json(raw)
    try:
        key = SM2PublicKey.from_pem(str(application["body"]["publicKey"]))
    except Exception:
        raise ApiError(400, "malformed-application", "body.publicKey missing or invalid") \
            from None
    await verify_signed(request, lambda kid: key if kid == key.key_id else None,
                        ("content-digest",))

    def store() -> dict[str, Any]:
        with node.db.transaction() as session:
            m = registry.submit_application(session, application, node.clock())
            return {"applicationId": m.application_id, "participantId": m.participant_id,
                    "status": m.status}

    return await run_in_threadpool(store)


@router.get("/applications/{application_id}")
async def application_status(application_id: str, request: Request) -> dict[str, Any]:
    """The applicant polls its application; only the applicant's key may read it."""
    node = _authority(request)
    with node.db.read() as session:
        m = session.get(Member, application_id)
        if m is None:
            raise ApiError(404, "unknown-application", application_id)
        key = SM2PublicKey.from_pem(m.public_key_pem)
        status, credential = m.status, m.credential
    await verify_signed(request, lambda kid: key if kid == key.key_id else None,
                        ("content-digest",))
    return {"applicationId": application_id, "status": status, "credential": credential}


@router.get("/revocations")
def revocations(request: Request) -> dict[str, Any]:
    """The signed list of revoked credential ids (public: it holds ids, no personal data)."""
    node = _authority(request)
    with node.db.read() as session:
        return registry.revocation_list(session, node.key, node.clock()).to_json()


@router.post("/registrations", status_code=201)
def register(request: Request,
             caller: Annotated[Caller, Depends(member("provider"))]) -> dict[str, Any]:
    node = _authority(request)
    with node.db.transaction() as session:
        return registry.register_product(session, caller.membership, _json(caller.body),
                                         node.key, node.authority_id, node.clock())


@router.get("/registrations")
def registration(request: Request, caller: Annotated[Caller, Depends(member())],
                 provider: str, product: str, digest: str) -> dict[str, Any]:
    """The registration certificate of a product's data (the newest version registered with
    that data digest), for any member to verify."""
    node = _authority(request)
    with node.db.read() as session:
        row = session.scalar(select(Registration).where(
            Registration.provider_id == provider, Registration.product_id == product,
            Registration.data_digest == digest).order_by(Registration.version.desc()).limit(1))
    if row is None:
        raise ApiError(404, "unknown-registration", f"{provider} {product} {digest}")
    return row.certificate


@router.post("/catalog/search")
def search(request: Request, caller: Annotated[Caller, Depends(member())]) -> dict[str, Any]:
    node = _authority(request)
    query = _json(caller.body) or {}
    if not isinstance(query, dict):
        raise ApiError(400, "malformed", "a search is a JSON object")
    keywords = query.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        raise ApiError(400, "malformed", "keywords must be a list of strings")
    with node.db.read() as session:
        rows = registry.search(session, keywords=keywords, provider=query.get("provider"),
                               level=query.get("level"), mode=query.get("mode"),
                               limit=min(int(query.get("limit", 100)), 500))
        endpoints = {m.participant_id: m.endpoint_url for m in session.scalars(
            select(Member).where(Member.status == "approved"))}
    return {"results": [
        {"provider": r.provider_id, "endpoint": endpoints.get(r.provider_id),
         "datasetId": r.dataset_id, "title": r.title, "level": r.level, "modes": r.modes,
         "fetchedAt": iso(r.fetched_at), "dataset": r.dataset}
        for r in rows if r.provider_id in endpoints]}


@router.post("/catalog/changed")
async def catalog_changed(request: Request,
                          caller: Annotated[Caller, Depends(member("provider"))]
                          ) -> dict[str, Any]:
    """A provider tells the authority its catalog changed; the authority crawls it now."""
    node = _authority(request)
    count = await crawl_member(node, caller.participant_id)
    return {"indexed": count}


@router.post("/demands", status_code=201)
def post_demand(request: Request,
                caller: Annotated[Caller, Depends(member("consumer"))]) -> dict[str, Any]:
    node = _authority(request)
    body = _json(caller.body)
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", "a demand is a JSON object")
    with node.db.transaction() as session:
        demand, matches = registry.add_demand(session, caller.participant_id, body,
                                              node.clock())
        return {"demandId": demand.demand_id, "matches": [
            {"provider": e.provider_id, "datasetId": e.dataset_id, "title": e.title}
            for e in matches]}


@router.get("/demands")
def demands(request: Request,
            caller: Annotated[Caller, Depends(member("provider"))]) -> dict[str, Any]:
    node = _authority(request)
    with node.db.read() as session:
        found = registry.demands_for(session, caller.participant_id)
        return {"demands": [
            {"demandId": d.demand_id, "consumer": d.consumer_id, "title": d.title,
             "description": d.description, "purpose": d.purpose, "mode": d.mode,
             "keywords": d.keywords, "createdAt": iso(d.created_at), "datasets": datasets}
            for d, datasets in found]}


def signed_json(doc: SignedDocument, status: int = 200) -> JSONResponse:
    return JSONResponse(doc.to_json(), status_code=status)

"""The management API: this node's operator (bearer token), used by the CLI. Members and the
crawl on the authority; enrolment, products, catalog search and demands on participants."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy import select

from trustspace.registry import authority as registry
from trustspace.registry import dsp
from trustspace.registry.credentials import (
    CredentialInvalid,
    iso,
    verify_membership,
    verify_registration,
)
from trustspace.registry.tables import Member

from .auth import operator
from .client import NodeClient, RemoteError
from .crawler import crawl_all
from .errors import ApiError
from .node import MEMBERSHIP_STATE, Node

router = APIRouter(prefix="/api", tags=["management"])
Operator = Annotated[Node, Depends(operator)]
APPLICATION_STATE = "application"


def remote_error(exc: RemoteError) -> ApiError:
    status = exc.status if exc.status in (400, 401, 403, 404, 409, 413) else 502
    return ApiError(status, exc.reason, f"{exc.url}: {exc.detail}")


@router.get("/node")
def node_info(node: Operator) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": node.settings.name, "kind": node.settings.kind, "keyId": node.key.key_id,
        "publicUrl": node.settings.public_url, "authorityUrl": node.settings.authority_url,
        "authorityKeyId": node.authority_key.key_id,
    }
    try:
        membership = node.membership()
    except CredentialInvalid as exc:
        info["membership"] = {"status": exc.reason}
        return info
    if membership is None:
        application = node.state(APPLICATION_STATE)
        info["membership"] = {"status": "pending" if application else "none"}
    else:
        info["participantId"] = membership.participant_id
        info["roles"] = sorted(membership.roles)
        info["membership"] = {"status": "member", "credentialId": membership.credential_id,
                              "validUntil": iso(membership.valid_until)}
        info["credential"] = membership.document.to_json()
    return info


# ---- participants: enrolment ----------------------------------------------------------------

def _participant(node: Node) -> str:
    if node.is_authority or not node.settings.authority_url:
        raise ApiError(409, "not-a-participant", "the authority does not enrol")
    return node.settings.authority_url


@router.post("/enrol", status_code=202)
async def enrol(node: Operator, roles: Annotated[list[str], Body(embed=True)]
                ) -> dict[str, Any]:
    """Apply to the data space with this node's key, name, endpoint and the wanted roles."""
    authority_url = _participant(node)
    application = registry.make_application(node.key, name=node.settings.name, roles=roles,
                                            endpoint_url=node.settings.public_url)
    async with NodeClient(node, credential={}) as client:
        try:
            answer = await client.post(f"{authority_url}/registry/applications",
                                       application.to_json())
        except RemoteError as exc:
            raise remote_error(exc) from None
    node.set_state(APPLICATION_STATE, answer)
    return dict(answer)


@router.post("/enrol/refresh")
async def enrol_refresh(node: Operator) -> dict[str, Any]:
    """Ask the authority whether the application was decided; keep the credential if so."""
    authority_url = _participant(node)
    application = node.state(APPLICATION_STATE)
    if application is None:
        raise ApiError(409, "not-applied", "apply first: trustspace enrol --roles ...")
    async with NodeClient(node, credential={}) as client:
        try:
            answer = await client.get(
                f"{authority_url}/registry/applications/{application['applicationId']}")
        except RemoteError as exc:
            raise remote_error(exc) from None
    if answer.get("credential"):
        try:
            membership = verify_membership(answer["credential"], node.authority_key,
                                           now=node.clock())
        except CredentialInvalid as exc:
            raise ApiError(502, "bad-credential", f"authority sent {exc}") from None
        if membership.key_id != node.key.key_id:
            raise ApiError(502, "bad-credential", "credential is for another key")
        node.set_state(MEMBERSHIP_STATE, answer["credential"])
    return {"status": answer.get("status"), "member": bool(answer.get("credential"))}


# ---- authority: members ---------------------------------------------------------------------

def _authority(node: Node) -> Node:
    if not node.is_authority:
        raise ApiError(409, "not-the-authority", "only the authority manages members")
    return node


def _member_json(m: Member) -> dict[str, Any]:
    return {"applicationId": m.application_id, "participantId": m.participant_id,
            "name": m.name, "roles": m.roles, "keyId": m.key_id, "endpoint": m.endpoint_url,
            "status": m.status, "credentialId": m.credential_id,
            "createdAt": iso(m.created_at)}


@router.get("/members")
def members(node: Operator, status: Annotated[str | None, Query()] = None
            ) -> dict[str, Any]:
    _authority(node)
    with node.db.read() as session:
        query = select(Member).order_by(Member.created_at)
        if status:
            query = query.where(Member.status == status)
        return {"members": [_member_json(m) for m in session.scalars(query)]}


@router.post("/members/{application_id}/approve")
def approve(application_id: str, node: Operator) -> dict[str, Any]:
    _authority(node)
    with node.db.transaction() as session:
        m = registry.approve(session, application_id, node.key, node.authority_id,
                             node.clock(), node.settings.membership_days)
        return _member_json(m)


@router.post("/members/{application_id}/reject")
def reject(application_id: str, node: Operator) -> dict[str, Any]:
    _authority(node)
    with node.db.transaction() as session:
        return _member_json(registry.reject(session, application_id, node.clock()))


@router.post("/members/revoke")
def revoke(node: Operator, participant_id: Annotated[str, Body(embed=True)],
           reason: Annotated[str, Body(embed=True)] = "revoked by the authority"
           ) -> dict[str, Any]:
    _authority(node)
    with node.db.transaction() as session:
        return _member_json(registry.revoke(session, participant_id, reason, node.clock()))


@router.post("/crawl")
async def crawl(node: Operator) -> dict[str, Any]:
    _authority(node)
    return {"indexed": await crawl_all(node)}


# ---- catalog search and demands through the authority ---------------------------------------

async def _to_authority(node: Node, method: str, path: str, body: Any = None) -> Any:
    authority_url = _participant(node)
    async with NodeClient(node) as client:
        try:
            return await client.request(method, f"{authority_url}{path}", body)
        except RemoteError as exc:
            raise remote_error(exc) from None


@router.post("/catalog/search")
async def catalog_search(node: Operator, query: Annotated[dict[str, Any], Body()]
                         ) -> dict[str, Any]:
    return dict(await _to_authority(node, "POST", "/registry/catalog/search", query))


@router.post("/catalog/remote")
async def remote_catalog(node: Operator, url: Annotated[str, Body(embed=True)]
                         ) -> dict[str, Any]:
    """Read another node's DSP catalog directly (a signed CatalogRequestMessage)."""
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, "malformed", "url must be an http(s) URL")
    request = {"@context": [dsp.DSP_CONTEXT], "@type": "CatalogRequestMessage", "filter": []}
    async with NodeClient(node) as client:
        try:
            answer = await client.post(f"{url.rstrip('/')}/catalog/request", request)
        except RemoteError as exc:
            raise remote_error(exc) from None
    try:
        dsp.parse_catalog(answer)
    except dsp.DspError as exc:
        raise ApiError(502, "bad-catalog", str(exc)) from None
    return dict(answer)


@router.post("/catalog/verify")
async def verify_dataset(node: Operator, url: Annotated[str, Body(embed=True)],
                         dataset: Annotated[str, Body(embed=True)]) -> dict[str, Any]:
    """Check a provider's dataset against the authority's registration certificate: signed by
    the trust anchor, for this provider, product and data digest."""
    authority_url = _participant(node)
    async with NodeClient(node) as client:
        try:
            shown = await client.get(f"{url.rstrip('/')}/catalog/datasets/{dataset}")
        except RemoteError as exc:
            raise remote_error(exc) from None
        try:
            view = dsp.parse_dataset(shown)
        except dsp.DspError as exc:
            raise ApiError(502, "bad-catalog", str(exc)) from None
        if not (view.provider and view.registration and view.data_digest):
            raise ApiError(409, "unregistered", "the dataset names no registration")
        params = {"provider": view.provider, "product": view.id, "digest": view.data_digest}
        try:
            cert = await client.request(
                "GET", f"{authority_url}/registry/registrations?{urlencode(params)}")
        except RemoteError as exc:
            raise remote_error(exc) from None
    try:
        registration = verify_registration(cert, node.authority_key)
    except CredentialInvalid as exc:
        raise ApiError(409, "registration-invalid", str(exc)) from None
    checks = {
        "signedByAuthority": True,
        "registrationDigestMatches": registration.digest == view.registration,
        "dataDigestMatches": registration.data_digest == view.data_digest,
        "providerMatches": registration.provider_id == view.provider,
        "levelMatches": view.level is not None and registration.level == view.level.value,
    }
    if not all(checks.values()):
        failed = [k for k, ok in checks.items() if not ok]
        raise ApiError(409, "registration-mismatch", ", ".join(failed))
    return {"dataset": view.id, "provider": view.provider, "version": registration.version,
            "dataDigest": registration.data_digest, "registration": registration.digest,
            "registeredAt": iso(registration.registered_at), "checks": checks}


@router.post("/demands", status_code=201)
async def post_demand(node: Operator, demand: Annotated[dict[str, Any], Body()]
                      ) -> dict[str, Any]:
    return dict(await _to_authority(node, "POST", "/registry/demands", demand))


@router.get("/demands")
async def demands(node: Operator) -> dict[str, Any]:
    return dict(await _to_authority(node, "GET", "/registry/demands"))


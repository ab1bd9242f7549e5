"""The read-only audit API for regulators: signed requests from a member with the regulator role.
An overview of what the node holds, and audit bundles of its log (the data space's shared log
on the authority): receipts with their proofs, checkpoints and the credentials to check them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from trustspace.ledger.audit import Selection, build_bundle
from trustspace.registry.tables import CatalogEntry, Member, ProductVersion, Registration

from .auth import Caller, member, node_of, operator
from .client import NodeClient, RemoteError
from .errors import ApiError
from .node import Node

router = APIRouter(prefix="/audit", tags=["audit"])
manage = APIRouter(prefix="/api/audit", tags=["management: audit"])
Regulator = Annotated[Caller, Depends(member("regulator"))]


@router.get("/summary")
def summary(caller: Regulator, node: Annotated[Node, Depends(node_of)]) -> dict[str, Any]:
    """Counts of what this node holds, for a regulator's overview."""
    with node.db.read() as session:
        members = dict(session.execute(
            select(Member.status, func.count()).group_by(Member.status)).tuples().all())
        return {
            "node": node.settings.name,
            "kind": node.settings.kind,
            "members": members,
            "registrations": session.scalar(select(func.count()).select_from(Registration)),
            "catalogEntries": session.scalar(select(func.count()).select_from(CatalogEntry)),
            "productVersions": session.scalar(select(func.count()).select_from(ProductVersion)),
            "requestedBy": caller.participant_id,
        }


def credentials(node: Node) -> list[dict[str, Any]]:
    """Membership credentials a verifier needs: on the authority every member's; elsewhere
    this node's own and those of the members it has talked to."""
    if node.is_authority:
        with node.db.read() as session:
            docs = [m.credential for m in session.scalars(select(Member).where(
                Member.status.in_(("approved", "revoked")))) if m.credential]
    else:
        docs = [m.document.to_json() for m in node.credential_cache.values()]
    own = node.membership()
    if own is not None:
        docs.append(own.document.to_json())
    unique = {str(d["body"]["id"]): d for d in docs}
    return list(unique.values())


@router.get("/bundle")
def bundle(caller: Regulator, node: Annotated[Node, Depends(node_of)],
           agreement: str | None = None, product: str | None = None,
           participant: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    """An audit bundle of this node's log: the selected receipts (all without a filter) proven
    to the newest checkpoint; `trustspace audit verify` checks it offline."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    selection = Selection(agreement, product, participant, since)
    creds = credentials(node)
    own = node.membership()
    keeper = None if node.is_authority or own is None else own.participant_id
    with node.db.transaction() as session:
        return build_bundle(session, node.log, selection, creds, node.clock(), keeper)


@manage.get("/bundle")
async def fetch_bundle(node: Annotated[Node, Depends(operator)], agreement: str | None = None,
                       product: str | None = None, participant: str | None = None,
                       since: str | None = None, source: str | None = None) -> Any:
    """For a regulator's operator (the CLI): an audit bundle from the data space's log at the
    authority (`source=authority`, the default for a member) or any node's own log (`source`
    its URL), fetched with this node's signed requests."""
    base = source if source and source != "authority" else node.settings.authority_url
    if base is None:
        raise ApiError(400, "no-source", "this node knows no authority: pass source=<node URL>")
    params = {k: v for k, v in (("agreement", agreement), ("product", product),
                                ("participant", participant), ("since", since)) if v}
    async with NodeClient(node) as client:
        try:
            query = f"?{urlencode(params)}" if params else ""
            return await client.get(f"{base.rstrip('/')}/audit/bundle{query}")
        except RemoteError as exc:
            raise ApiError(exc.status if exc.status < 500 else 502, exc.reason,
                           exc.detail) from None

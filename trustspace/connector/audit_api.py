"""The read-only audit API for regulators: signed requests from a member with the regulator role.
Later issues fill it with receipts, agreements and the ledger; now it shows the registry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from trustspace.registry.tables import CatalogEntry, Member, ProductVersion, Registration

from .auth import Caller, member, node_of
from .node import Node

router = APIRouter(prefix="/audit", tags=["audit"])
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

"""The authority's federated catalog: it reads each provider's DSP catalog (a signed request, as
any member would) and indexes what it finds for searches and demand matching."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from trustspace.registry import dsp
from trustspace.registry.authority import IndexedDataset, RegistryError, index_catalog
from trustspace.registry.classification import Level
from trustspace.registry.tables import Member

from .client import NodeClient, RemoteError
from .errors import ApiError
from .node import Node

log = logging.getLogger("trustspace.crawler")


async def crawl_member(node: Node, participant_id: str) -> int:
    """Fetch one provider's catalog and replace its entries in the index; return the count."""
    with node.db.read() as session:
        member = session.scalar(select(Member).where(Member.participant_id == participant_id))
        if member is None or member.status != "approved" or "provider" not in member.roles:
            raise RegistryError("unknown-provider", participant_id, 404)
        endpoint = member.endpoint_url
    request = {"@context": [dsp.DSP_CONTEXT], "@type": "CatalogRequestMessage", "filter": []}
    async with NodeClient(node) as client:
        try:
            answer = await client.post(f"{endpoint}/catalog/request", request)
        except RemoteError as exc:
            raise ApiError(502, "crawl-failed", str(exc)) from None
    try:
        parsed = dsp.parse_catalog(answer)
    except dsp.DspError as exc:
        raise ApiError(502, "crawl-failed", f"{endpoint} sent a bad catalog: {exc}") from None
    if parsed.participant_id not in (None, participant_id):
        raise ApiError(502, "crawl-failed", f"{endpoint} claims to be {parsed.participant_id}")
    entries = []
    for view in parsed.all_datasets():
        if view.level is Level.CORE:  # never offered, whatever a provider serves
            continue
        node_json = dsp.dataset(view, view.access_service or "service")
        entries.append(IndexedDataset(
            dataset_id=view.id, title=view.title or view.id,
            description=view.description or "", keywords=view.keywords,
            level=view.level.value if view.level else "general",
            modes=[m.value for m in view.compute_modes], dataset=node_json))
    with node.db.transaction() as session:
        return index_catalog(session, participant_id, entries, node.clock())


async def crawl_all(node: Node) -> int:
    """Crawl every approved provider; one unreachable provider does not stop the others."""
    with node.db.read() as session:
        providers = [m.participant_id for m in session.scalars(
            select(Member).where(Member.status == "approved")) if "provider" in m.roles]
    total = 0
    for participant_id in providers:
        try:
            total += await crawl_member(node, participant_id)
        except (ApiError, RegistryError) as exc:
            log.warning("crawl of %s failed: %s", participant_id, exc)
    return total


async def crawl_forever(node: Node, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await crawl_all(node)
        except Exception:  # a crawl must never take the node down
            log.exception("periodic crawl failed")

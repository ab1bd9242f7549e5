"""The application factory: one FastAPI app per node, built from its settings (nothing global,
so a test can run several nodes in one process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from trustspace import __version__
from trustspace.registry import dsp
from trustspace.registry.credentials import issue_membership

from .agreements_api import manage as agreements_manage_router
from .agreements_api import router as agreements_router
from .audit_api import manage as audit_manage_router
from .audit_api import router as audit_router
from .catalog_api import router as catalog_router
from .config import Settings
from .console import router as console_router
from .crawler import crawl_forever
from .errors import BodyLimit, install_error_handlers
from .job_worker import JobPool
from .ledger_api import router as ledger_router
from .ledger_api import witness_router
from .ledgers import WitnessPusher, make_ledger
from .management_api import router as management_router
from .negotiation_api import manage as negotiation_manage_router
from .negotiation_api import router as negotiation_router
from .node import MEMBERSHIP_STATE, Clock, Node, utc_now
from .outbox import OutboxSender
from .products_api import router as products_router
from .receipt_worker import ReceiptWorker
from .receipts_api import manage as receipts_manage_router
from .receipts_api import router as receipts_router
from .registry_api import router as registry_router
from .transfer_api import manage as transfer_manage_router
from .transfer_api import router as transfer_router


def _ensure_authority_credential(node: Node) -> None:
    """The authority holds a membership like everyone else, issued by itself, so its own
    requests (crawling catalogs) authenticate the same way."""
    if node.membership() is not None:
        return
    now = node.clock()
    doc = issue_membership(
        node.key, node.authority_id,
        participant_id=node.authority_id, name=node.settings.name,
        roles=["authority"], public_key=node.key.public_key,
        endpoint_url=node.settings.public_url, valid_from=now - timedelta(minutes=5),
        valid_until=now + timedelta(days=node.settings.membership_days))
    node.set_state(MEMBERSHIP_STATE, doc.to_json())


def create_app(settings: Settings, *, key_password: bytes | None = None,
               clock: Clock = utc_now) -> FastAPI:
    node = Node(settings, key_password=key_password, clock=clock)
    node.outbox = OutboxSender(node)
    node.receipts = ReceiptWorker(node, make_ledger(node))
    node.jobs = JobPool(node, settings.job_workers)
    if node.is_authority:
        node.witness_pusher = WitnessPusher(node)
    node.db.migrate()
    if node.is_authority:
        _ensure_authority_credential(node)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if node.is_authority and settings.crawl_interval_seconds > 0:
            task = asyncio.create_task(crawl_forever(node, settings.crawl_interval_seconds))
        node.outbox.start()
        node.receipts.start()
        node.witness_pusher.start()
        node.jobs.start()
        yield
        await node.jobs.stop()
        await node.witness_pusher.stop()
        await node.receipts.stop()
        await node.outbox.stop()
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        node.db.dispose()

    app = FastAPI(
        title=f"trustspace node {settings.name}", version=__version__, lifespan=lifespan,
        description="Protocol API (Dataspace Protocol 2025-1, SM2-signed requests), "
                    "management API (operator bearer token) and audit API (regulators).",
    )
    app.state.node = node
    install_error_handlers(app)
    jobs_limit = settings.max_job_body_bytes  # homomorphic jobs carry ciphertexts
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       larger={"/transfers/request": jobs_limit, "/api/jobs": jobs_limit,
                               "/transfers/[^/]+/completion": jobs_limit})

    @app.get("/.well-known/dspace-version", tags=["protocol"])
    def dspace_version() -> dict[str, Any]:
        return dsp.version_response("/")

    @app.get("/ns/v1/context.jsonld", tags=["protocol"])
    def trustspace_context() -> dict[str, Any]:
        """The JSON-LD context of trustspace's DSP extension terms (ts:)."""
        return dict(dsp.TS_CONTEXT_DOCUMENT)

    app.include_router(catalog_router)
    app.include_router(registry_router)
    app.include_router(management_router)
    app.include_router(products_router)
    app.include_router(negotiation_router)
    app.include_router(negotiation_manage_router)
    app.include_router(agreements_router)
    app.include_router(agreements_manage_router)
    app.include_router(receipts_router)
    app.include_router(receipts_manage_router)
    app.include_router(ledger_router)
    app.include_router(witness_router)
    app.include_router(transfer_router)
    app.include_router(transfer_manage_router)
    app.include_router(audit_router)
    app.include_router(audit_manage_router)
    app.include_router(console_router)
    return app


def app_from_home(home: str) -> FastAPI:
    """For `uvicorn --factory`-style use: TRUSTSPACE_HOME or the given folder."""
    from pathlib import Path

    return create_app(Settings.load(Path(home)))

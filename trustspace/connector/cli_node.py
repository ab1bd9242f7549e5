"""The node commands of the CLI: init and serve a node, then operate it through its management
API (the operator's bearer token is read from the node's home)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from .config import Settings
from .home import init_home, read_token

Home = Annotated[Path, typer.Option("--home", envvar="TRUSTSPACE_HOME",
                                    help="The node's home folder.")]


class NodeCommandError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _client(home: Path) -> tuple[httpx.Client, str]:
    settings = Settings.load(home)
    token = os.environ.get("TRUSTSPACE_TOKEN") or read_token(home)
    base = f"http://{settings.host}:{settings.port}"
    return httpx.Client(base_url=base, timeout=60,
                        headers={"authorization": f"Bearer {token}"}), base


def call(home: Path, method: str, path: str, body: Any = None,
         params: dict[str, Any] | None = None) -> Any:
    client, base = _client(home)
    with client:
        try:
            response = client.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise NodeCommandError(f"node not reachable at {base} ({exc}); is "
                                   "`trustspace serve` running?", 2) from None
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": "error", "detail": response.text[:300]}
    if response.status_code >= 400:
        reason = payload.get("error") or payload.get("code") or "error"
        detail = payload.get("detail") or "; ".join(payload.get("reason", []))
        code = 2 if response.status_code in (400, 404, 413, 422) else 1
        raise NodeCommandError(f"{reason}: {detail}", code)
    return payload


def show(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


# ---- init and serve -------------------------------------------------------------------------

def init(
    home: Annotated[Path, typer.Argument(help="Folder for the new node's home.")],
    name: Annotated[str, typer.Option(help="The participant's name, e.g. hospital-a.")],
    public_url: Annotated[str, typer.Option(help="URL other nodes use to reach this node.")],
    port: Annotated[int, typer.Option(help="Port `serve` listens on.")] = 8100,
    authority: Annotated[bool, typer.Option(
        "--authority", help="Make this node the data-space authority.")] = False,
    authority_url: Annotated[str | None, typer.Option(help="The authority's URL.")] = None,
    authority_key: Annotated[Path | None, typer.Option(
        help="The authority's public key (PEM): the trust anchor.")] = None,
    database_url: Annotated[str, typer.Option(
        help="SQLAlchemy URL; default: SQLite in the home.")] = "",
    password_env: Annotated[str | None, typer.Option(
        help="Encrypt the node key with the password in this environment variable.")] = None,
) -> None:
    """Create a node's home: SM2 identity key, trust anchor, config and operator token."""
    password = None
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise NodeCommandError(f"environment variable {password_env} is not set", 2)
        password = value.encode()
    anchor = authority_key.read_bytes() if authority_key else None
    settings, token = init_home(
        home, name=name, public_url=public_url, port=port, authority=authority,
        authority_url=authority_url, authority_key_pem=anchor, database_url=database_url,
        key_password=password, key_password_env=password_env)
    typer.echo(f"node {name} ({settings.kind}) created in {home}")
    typer.echo(f"operator token (also in {home}/operator.token, mode 0600): {token}")


def serve(home: Home) -> None:
    """Run the node (protocol, management and audit APIs) until interrupted."""
    import uvicorn

    from .app import create_app

    settings = Settings.load(home)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                server_header=False)


def worker(home: Home, count: Annotated[int, typer.Option(
        "--count", min=1, help="Job workers in this process.")] = 1) -> None:
    """Run job workers for this node without its HTTP server (add machines by starting more
    against the same PostgreSQL database; each job runs on one worker at a time)."""
    import asyncio

    from .job_worker import run_workers
    from .node import Node

    settings = Settings.load(home)
    node = Node(settings)
    node.db.migrate()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_workers(node, count))


# ---- operating a node -----------------------------------------------------------------------

node_app = typer.Typer(help="This node.", no_args_is_help=True)
members_app = typer.Typer(help="Members of the data space (authority).", no_args_is_help=True)
product_app = typer.Typer(help="Data products (provider).", no_args_is_help=True)
catalog_app = typer.Typer(help="Find data products.", no_args_is_help=True)
demand_app = typer.Typer(help="Data demands (供需撮合).", no_args_is_help=True)


@node_app.command("info")
def node_info(home: Home) -> None:
    """Name, key id, membership and roles of this node."""
    show(call(home, "GET", "/api/node"))


def enrol(
    home: Home,
    roles: Annotated[str, typer.Option(help="Comma-separated: provider,consumer,regulator.")],
) -> None:
    """Apply to the data space; the authority's operator approves."""
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    show(call(home, "POST", "/api/enrol", {"roles": wanted}))


def enrol_status(home: Home) -> None:
    """Ask the authority whether the application was approved; keep the credential."""
    show(call(home, "POST", "/api/enrol/refresh"))


@members_app.command("list")
def members_list(home: Home, status: Annotated[str | None, typer.Option(
        help="pending, approved, rejected or revoked")] = None) -> None:
    """Applications and members."""
    show(call(home, "GET", "/api/members", params={"status": status} if status else None))


@members_app.command("approve")
def members_approve(home: Home, application_id: str) -> None:
    """Approve an application: issue the membership credential."""
    show(call(home, "POST", f"/api/members/{application_id}/approve"))


@members_app.command("reject")
def members_reject(home: Home, application_id: str) -> None:
    """Reject an application."""
    show(call(home, "POST", f"/api/members/{application_id}/reject"))


@members_app.command("revoke")
def members_revoke(home: Home, participant_id: str,
                   reason: Annotated[str, typer.Option()] = "revoked by the authority") -> None:
    """Revoke a member's credential; every node refuses it from then on."""
    show(call(home, "POST", "/api/members/revoke",
              {"participant_id": participant_id, "reason": reason}))


@product_app.command("add")
def product_add(home: Home, spec: Annotated[Path, typer.Argument(help="Product spec (JSON).")],
                new_version: Annotated[bool, typer.Option(
                    help="Add a new version of an existing product.")] = False) -> None:
    """Register a data product: validate, digest its data, register it, publish it."""
    try:
        body = json.loads(spec.read_bytes())
    except ValueError as exc:
        raise NodeCommandError(f"{spec} is not JSON: {exc}", 2) from None
    show(call(home, "POST", "/api/products", body, params={"new_version": new_version}))


@product_app.command("list")
def product_list(home: Home) -> None:
    """This node's products."""
    show(call(home, "GET", "/api/products"))


@product_app.command("show")
def product_show(home: Home, product_id: str) -> None:
    """One product: spec, versions, registration certificate, public preview."""
    show(call(home, "GET", f"/api/products/{product_id}"))


@product_app.command("retire")
def product_retire(home: Home, product_id: str) -> None:
    """Withdraw a product from the catalog (its history stays)."""
    show(call(home, "POST", f"/api/products/{product_id}/retire"))


@catalog_app.command("search")
def catalog_search(
    home: Home,
    keyword: Annotated[list[str] | None, typer.Option(help="Repeat for more.")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    level: Annotated[str | None, typer.Option()] = None,
    mode: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Search the data space's federated catalog (at the authority)."""
    query: dict[str, Any] = {"keywords": keyword or []}
    query.update({k: v for k, v in (("provider", provider), ("level", level), ("mode", mode))
                  if v})
    show(call(home, "POST", "/api/catalog/search", query))


@catalog_app.command("fetch")
def catalog_fetch(home: Home, url: str) -> None:
    """Read a provider's DSP catalog directly."""
    show(call(home, "POST", "/api/catalog/remote", {"url": url}))


@catalog_app.command("verify")
def catalog_verify(home: Home, url: str, dataset: str) -> None:
    """Check a provider's dataset against its registration certificate at the authority."""
    show(call(home, "POST", "/api/catalog/verify", {"url": url, "dataset": dataset}))


@catalog_app.command("crawl")
def catalog_crawl(home: Home) -> None:
    """(Authority) crawl every provider's catalog now."""
    show(call(home, "POST", "/api/crawl"))


@demand_app.command("post")
def demand_post(
    home: Home,
    title: Annotated[str, typer.Option()],
    purpose: Annotated[str, typer.Option()],
    mode: Annotated[str, typer.Option()],
    keyword: Annotated[list[str] | None, typer.Option()] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Post a data demand; the authority matches it against the catalog."""
    show(call(home, "POST", "/api/demands", {
        "title": title, "purpose": purpose, "mode": mode, "keywords": keyword or [],
        "description": description}))


@demand_app.command("list")
def demand_list(home: Home) -> None:
    """(Provider) demands that match this node's products."""
    show(call(home, "GET", "/api/demands"))


negotiations_app = typer.Typer(help="Contract negotiations.", no_args_is_help=True)
agreements_app = typer.Typer(help="Agreements signed by both parties.", no_args_is_help=True)
receipts_app = typer.Typer(help="Receipts this node issued or countersigned.", no_args_is_help=True)


def negotiate(
    home: Home,
    provider_url: Annotated[str, typer.Argument(help="The provider node's URL.")],
    product: Annotated[str, typer.Argument(help="The dataset (product) id.")],
    offer: Annotated[str | None, typer.Argument(
        help="The offer @id (default: the dataset's only offer).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 120,
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = True,
) -> None:
    """Negotiate a contract for a product; prints the agreement id when it is finalized."""
    import time

    body: dict[str, Any] = {"provider_url": provider_url, "dataset": product}
    if offer:
        body["offer"] = offer
    started = call(home, "POST", "/api/negotiations", body)
    pid = started["pid"]
    typer.echo(f"negotiation {pid}: {started['state']}", err=True)
    if not wait:
        typer.echo(pid)
        return
    deadline = time.monotonic() + timeout
    state = started["state"]
    shown = started
    while state not in ("FINALIZED", "TERMINATED"):
        if time.monotonic() > deadline:
            raise NodeCommandError(f"still {state} after {timeout:.0f} s (the provider may be "
                                   f"waiting for its operator); pid {pid}", 1)
        time.sleep(0.05)
        shown = call(home, "GET", f"/api/negotiations/{pid}")
        if shown["state"] != state:
            state = shown["state"]
            typer.echo(f"  → {state}", err=True)
    if state == "TERMINATED":
        reason = "; ".join(map(str, (shown.get("termination") or {}).get("reason") or []))
        raise NodeCommandError(f"terminated: {reason}", 1)
    typer.echo(shown["agreementId"])


@negotiations_app.command("list")
def negotiations_list(home: Home, state: Annotated[str | None, typer.Option()] = None) -> None:
    """Negotiations on this node (as provider and as consumer)."""
    show(call(home, "GET", "/api/negotiations", params={"state": state} if state else None))


@negotiations_app.command("show")
def negotiations_show(home: Home, pid: str) -> None:
    show(call(home, "GET", f"/api/negotiations/{pid}"))


@negotiations_app.command("approve")
def negotiations_approve(home: Home, pid: str) -> None:
    """(Provider) agree to a request waiting for approval."""
    show(call(home, "POST", f"/api/negotiations/{pid}/approve"))


@negotiations_app.command("refuse")
def negotiations_refuse(home: Home, pid: str,
                        reason: Annotated[str, typer.Option()] = "refused by the provider"
                        ) -> None:
    """(Provider) refuse a request: the negotiation is terminated."""
    show(call(home, "POST", f"/api/negotiations/{pid}/refuse", {"reason": reason}))


@negotiations_app.command("accept")
def negotiations_accept(home: Home, pid: str) -> None:
    """(Consumer) accept the provider's counter-offer."""
    show(call(home, "POST", f"/api/negotiations/{pid}/accept"))


@negotiations_app.command("terminate")
def negotiations_terminate(home: Home, pid: str,
                           reason: Annotated[str, typer.Option()] = "terminated") -> None:
    show(call(home, "POST", f"/api/negotiations/{pid}/terminate", {"reason": reason}))


@receipts_app.command("list")
def receipts_list(home: Home, agreement: Annotated[str | None, typer.Option()] = None,
                  status: Annotated[str | None, typer.Option()] = None) -> None:
    """This node's receipts and where they are (countersign, pending, logged, refused)."""
    show(call(home, "GET", "/api/receipts",
              params={k: v for k, v in (("agreement", agreement), ("status", status)) if v}))


@receipts_app.command("show")
def receipts_show(home: Home, receipt_id: str) -> None:
    """A receipt with its evidence: log index, inclusion proof, checkpoint, chain transaction."""
    show(call(home, "GET", f"/api/receipts/{receipt_id}"))


@agreements_app.command("list")
def agreements_list(home: Home) -> None:
    """Finalized agreements: active, terminated or revoked (who ended it, when and why)."""
    show(call(home, "GET", "/api/agreements"))


@agreements_app.command("show")
def agreements_show(home: Home, agreement_id: str) -> None:
    """One agreement: the signed document with both signatures."""
    show(call(home, "GET", f"/api/agreements/{agreement_id}"))


EndReason = Annotated[str, typer.Option(help="Why, for the other party and the regulator.")]
EndCode = Annotated[str, typer.Option(help="A machine-readable reason code.")]


@agreements_app.command("terminate")
def agreements_terminate(home: Home, agreement_id: str, reason: EndReason,
                         code: EndCode = "terminated") -> None:
    """End an agreement (either party): no job starts under it any more; the other party is
    told, and a termination receipt goes to the ledger."""
    show(call(home, "POST", f"/api/agreements/{agreement_id}/terminate",
              {"code": code, "reason": reason}))


@agreements_app.command("revoke")
def agreements_revoke(home: Home, agreement_id: str, reason: EndReason,
                      code: EndCode = "revoked") -> None:
    """(Provider) withdraw an agreement, e.g. the data subject withdrew consent: like
    terminate, with a revocation receipt."""
    show(call(home, "POST", f"/api/agreements/{agreement_id}/revoke",
              {"code": code, "reason": reason}))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("enrol")(enrol)
    app.command("enrol-status")(enrol_status)
    app.add_typer(node_app, name="node")
    app.add_typer(members_app, name="members")
    app.add_typer(product_app, name="product")
    app.add_typer(catalog_app, name="catalog")
    app.add_typer(demand_app, name="demand")
    app.command("negotiate")(negotiate)
    app.add_typer(negotiations_app, name="negotiations")
    app.add_typer(agreements_app, name="agreements")
    app.add_typer(receipts_app, name="receipts")
    from .cli_audit import audit_app
    from .cli_jobs import register as register_jobs

    app.add_typer(audit_app, name="audit")
    register_jobs(app)




"""`trustspace fl run`: federated training as the consumer. This process runs the Flower
SuperLink (TLS, SuperNode authentication) and the ServerApp; the node sends one job per
agreement, each provider answers with its SuperNode key bound to it by SM2, this process admits
exactly those keys, runs the rounds, and tells each provider the run ended (sending it the
final model) so that it completes its job with a delivery receipt. A provider whose product asks
for it checks the model for membership inference first and may withhold it; the model is
written only if every provider released it (docs/federated.md, "Releasing the model"), and only
the per-round metrics every provider releases are shown."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .cli_jobs import wait_for_job
from .cli_node import Home, NodeCommandError, call, show

fl_app = typer.Typer(help="Federated learning across providers (Flower), data staying home.",
                     no_args_is_help=True)


def _wait_started(home: Path, pids: list[str], timeout: float) -> None:
    """Until every provider started its SuperNode (its job STARTED); a refusal stops here."""
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while waiting:
        for pid in sorted(waiting):
            shown = call(home, "GET", f"/api/jobs/{pid}")
            if shown["state"] == "TERMINATED":
                reason = shown.get("reason") or {}
                raise NodeCommandError(f"{shown['counterparty']}: {reason.get('code')}: "
                                       f"{reason.get('detail')}", 1)
            if shown["state"] in ("STARTED", "COMPLETED"):
                waiting.discard(pid)
        if waiting and time.monotonic() > deadline:
            raise NodeCommandError(f"{len(waiting)} provider(s) did not start within "
                                   f"{timeout:.0f} s (waiting for an operator's approval?)", 1)
        time.sleep(0.1)


@fl_app.command("run")
def fl_run(
    home: Home,
    agreements: Annotated[str, typer.Option(help="Agreement ids, comma-separated: one per "
                                                 "provider.")],
    app: Annotated[Path, typer.Option(help="The Flower app folder (pyproject.toml with "
                                           "[tool.flwr.app]).")],
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 3,
    purpose: Annotated[str | None, typer.Option(help="The purpose of this use.")] = None,
    dp_noise: Annotated[float | None, typer.Option(help="Declared DP noise multiplier.")] = None,
    dp_clip: Annotated[float | None, typer.Option(help="Declared DP clipping norm.")] = None,
    output: Annotated[Path | None, typer.Option(help="Save the final model (.npz).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds for the whole run.")] = 900,
) -> None:
    """Train across the providers of `--agreements`; prints the rounds and the model's digest."""
    from trustspace.crypto import SM2PublicKey
    from trustspace.federated import (
        Deployment,
        DifferentialPrivacy,
        FlowerError,
        Progress,
        app_digest,
        disclosure,
    )
    from trustspace.sandbox.bundle import BundleInvalid, pack
    from trustspace.sandbox.fl_jobs import INTERVALS, parameters

    ids = [a.strip() for a in agreements.split(",") if a.strip()]
    if not ids:
        raise NodeCommandError("--agreements names no agreement", 2)
    if (dp_noise is None) != (dp_clip is None):
        raise NodeCommandError("--dp-noise and --dp-clip go together", 2)
    try:
        digest = app_digest(app)
        bundle = pack(app, entry=False)
    except (BundleInvalid, ValueError, OSError) as exc:
        raise NodeCommandError(f"cannot pack the app {app}: {exc}", 2) from None
    dp = None if dp_noise is None or dp_clip is None else DifferentialPrivacy(dp_clip, dp_noise)
    started = time.monotonic()
    deployment = Deployment(home / "fl" / f"run-{uuid.uuid4().hex[:12]}", intervals=INTERVALS)
    deployment.start()
    try:
        params = parameters(digest, rounds, len(ids), deployment.superlink_address,
                            deployment.ca_certificate, dp)
        pids: dict[str, str] = {}  # provider -> job
        for agreement in ids:
            shown = call(home, "POST", "/api/jobs", {
                "agreement": agreement, "code": base64.b64encode(bundle).decode(),
                "parameters": params, "purpose": purpose, "mode": "federated"})
            if shown["state"] == "TERMINATED":
                reason = shown.get("reason") or {}
                raise NodeCommandError(f"{shown['counterparty']} refused: {reason.get('code')}"
                                       f": {reason.get('detail')}", 1)
            supernode = shown["superNode"]
            deployment.admit(supernode["binding"], shown["counterparty"],
                             SM2PublicKey.from_pem(supernode["providerKey"].encode()))
            pids[shown["counterparty"]] = shown["pid"]
            typer.echo(f"job {shown['pid']} at {shown['counterparty']}: {shown['state']}, "
                       "SuperNode key admitted", err=True)
        _wait_started(home, list(pids.values()), timeout)
        typer.echo(f"training {rounds} round(s) on {len(pids)} providers ...", err=True)
        received: dict[str, list[str]] = {}  # provider -> digests of the replies it sent us

        def progress(p: Progress) -> None:
            # who answered and how long it took; metrics wait for the providers' release rules
            for provider, reply in p.digests.items():
                received.setdefault(provider, []).append(reply)
            where = f"round {p.round} {p.kind}" if p.round >= 0 else p.kind
            failed = f"; failed: {', '.join(p.failed)}" if p.failed else ""
            typer.echo(f"{where}: {', '.join(p.replied) or 'nobody'} answered "
                       f"({p.seconds:.1f} s){failed}", err=True)
            line = {"kind": p.kind, "round": p.round, "replied": list(p.replied),
                    "failed": list(p.failed), "seconds": round(p.seconds, 3)}
            for pid in pids.values():  # the node's job API shows the run as it goes
                call(home, "POST", f"/api/jobs/{pid}/federated-progress", {"progress": line})

        try:
            result = deployment.run(app, rounds, config={"min-nodes": len(pids)},
                                    timeout=timeout, on_progress=progress)
        except FlowerError as exc:
            raise NodeCommandError(f"the run failed: {exc}", 1) from None
    finally:
        deployment.stop()
    model_digest = disclosure.model_digest(result.arrays)
    rounds_view: list[dict[str, Any]] = [
        {"round": r.round, "trainedBy": list(r.trained_by), "failed": list(r.failed),
         "seconds": round(r.seconds, 2), "train": dict(r.train), "evaluate": dict(r.evaluate)}
        for r in result.rounds]
    summary: dict[str, Any] = {  # what each provider learns of the run: no metrics
        "appDigest": digest, "modelDigest": model_digest,
        "rounds": [{k: v for k, v in r.items() if k not in ("train", "evaluate")}
                   for r in rounds_view]}
    encoded = disclosure.encode_model(result.arrays)
    if len(encoded) <= disclosure.MAX_MODEL_BYTES * 4 // 3 + 4:
        summary["model"] = encoded  # for the providers' release checks
    else:
        typer.echo(f"the model is over {disclosure.MAX_MODEL_BYTES} bytes: providers that check "
                   "it before release will withhold it", err=True)
    for pid in pids.values():
        call(home, "POST", f"/api/jobs/{pid}/federated-done", {"summary": summary})
    receipts: dict[str, str | None] = {}
    release: dict[str, dict[str, Any]] = {}
    for provider, pid in pids.items():
        ended = _wait_ended(home, pid, max(60.0, timeout - (time.monotonic() - started)))
        receipts[provider] = ended.get("receiptId")
        release[provider] = _release(home, ended, model_digest, received.get(provider, []))
    refusals = {p: r["reason"] for p, r in release.items() if not r["released"]}
    allowed = disclosure.allowed_metrics(r.get("metrics") for r in release.values())
    if refusals:  # a provider whose rules we could not read: show no metrics at all
        allowed = frozenset()
    for r in rounds_view:
        for part in ("train", "evaluate"):
            r[part] = {k: v for k, v in r[part].items() if allowed is None or k in allowed}
    if output is not None and not refusals:
        np.savez(output, **dict(result.arrays))  # type: ignore[arg-type]
    show({"appDigest": digest, "modelDigest": model_digest, "rounds": rounds_view,
          "jobs": pids, "receipts": receipts, "release": release,
          "seconds": round(time.monotonic() - started, 1),
          "model": str(output) if output and not refusals else None})
    if refusals:
        raise NodeCommandError("the model is not released: " + "; ".join(
            f"{p}: {reason}" for p, reason in sorted(refusals.items())), 1)


def _wait_ended(home: Path, pid: str, timeout: float) -> dict[str, Any]:
    """The job's view once COMPLETED or TERMINATED (a withheld model terminates it)."""
    try:
        return wait_for_job(home, call(home, "GET", f"/api/jobs/{pid}"), timeout)
    except NodeCommandError:
        shown: dict[str, Any] = call(home, "GET", f"/api/jobs/{pid}")
        if shown["state"] != "TERMINATED":
            raise
        return shown


def _release(home: Path, ended: dict[str, Any], model_digest: str,
             received: list[str]) -> dict[str, Any]:
    """One provider's word on the model: released (its result names our model and the replies
    it says it sent are the ones we received, digest for digest) or not, why, and its release
    rules and check as its result states them."""
    if ended["state"] != "COMPLETED":
        reason = ended.get("reason") or {}
        return {"released": False, "outcome": ended.get("outcome"),
                "reason": f"{reason.get('code')}: {reason.get('detail')}"}
    stated = call(home, "GET", f"/api/jobs/{ended['pid']}/result")["result"]
    rules = stated.get("release") or {}
    if stated.get("modelDigest") != model_digest:
        return {"released": False, "outcome": "succeeded",
                "reason": f"its receipt names another model ({stated.get('modelDigest')})"}
    sent = sorted(str(u.get("digest")) for u in stated.get("updates") or [])
    if received and sent != sorted(received):
        return {"released": False, "outcome": "succeeded",
                "reason": f"the replies its receipt lists ({len(sent)}) are not the ones "
                          f"received from it ({len(received)})"}
    return {"released": True, "outcome": "succeeded", "updatesChecked": len(sent),
            "metrics": rules.get("metrics"),
            "membershipInference": rules.get("membershipInference")}

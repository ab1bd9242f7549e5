"""`trustspace fl run`: federated training as the consumer. This process runs the Flower
SuperLink (TLS, SuperNode authentication) and the ServerApp; the node sends one job per
agreement, each provider answers with its SuperNode key bound to it by SM2, this process admits
exactly those keys, runs the rounds, keeps the final model, and tells each provider the run
ended so that it completes its job with a delivery receipt."""

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
    from trustspace.crypto import SM2PublicKey, sm3
    from trustspace.federated import Deployment, DifferentialPrivacy, FlowerError, app_digest
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
        try:
            result = deployment.run(app, rounds, config={"min-nodes": len(pids)},
                                    timeout=timeout)
        except FlowerError as exc:
            raise NodeCommandError(f"the run failed: {exc}", 1) from None
    finally:
        deployment.stop()
    model = b"".join(np.ascontiguousarray(result.arrays[k]).tobytes()
                     for k in sorted(result.arrays))
    model_digest = "sm3:" + sm3(model).hex()
    if output is not None:
        np.savez(output, **dict(result.arrays))  # type: ignore[arg-type]
    rounds_view = [{"round": r.round, "trainedBy": list(r.trained_by),
                    "failed": list(r.failed), "seconds": round(r.seconds, 2),
                    "train": dict(r.train), "evaluate": dict(r.evaluate)}
                   for r in result.rounds]
    summary: dict[str, Any] = {"appDigest": digest, "modelDigest": model_digest,
                               "rounds": rounds_view}
    for pid in pids.values():
        call(home, "POST", f"/api/jobs/{pid}/federated-done", {"summary": summary})
    receipts = {}
    for provider, pid in pids.items():
        done = wait_for_job(home, call(home, "GET", f"/api/jobs/{pid}"),
                            max(60.0, timeout - (time.monotonic() - started)))
        receipts[provider] = done.get("receiptId")
    show({**summary, "jobs": pids, "receipts": receipts,
          "seconds": round(time.monotonic() - started, 1),
          "model": str(output) if output else None})

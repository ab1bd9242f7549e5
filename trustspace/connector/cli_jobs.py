"""`trustspace run`, `trustspace jobs` and `trustspace results`: sending code to the data (as
consumer) and deciding on it (as provider), through the node's management API."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli_node import Home, NodeCommandError, call, show

jobs_app = typer.Typer(help="Jobs: code run next to the data (compute-to-data).",
                       no_args_is_help=True)
results_app = typer.Typer(help="Results of this node's jobs (as consumer).",
                          no_args_is_help=True)


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise NodeCommandError(f"--param takes key=value, not {text!r}", 2)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a plain string


def run(
    home: Home,
    agreement: Annotated[str, typer.Argument(help="The agreement id.")],
    script: Annotated[Path, typer.Argument(help="A Python script, or a folder with main.py.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="key=value (value as JSON if it parses); repeatable.")] = None,
    purpose: Annotated[str | None, typer.Option(help="The purpose of this use.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 300,
    wait: Annotated[bool, typer.Option(help="Wait for the result.")] = True,
) -> None:
    """Run code on a provider's data under an agreement; prints the released result."""
    from trustspace.sandbox.bundle import BundleInvalid, pack

    try:
        bundle = pack(script)
    except (BundleInvalid, OSError) as exc:
        raise NodeCommandError(f"cannot pack {script}: {exc}", 2) from None
    parameters = dict(_param(p) for p in param or [])
    body = {"agreement": agreement, "code": base64.b64encode(bundle).decode(),
            "parameters": parameters, "purpose": purpose, "mode": "sandbox"}
    shown = call(home, "POST", "/api/jobs", body)
    pid = shown["pid"]
    typer.echo(f"job {pid}: {shown['state']}", err=True)
    if not wait:
        typer.echo(pid)
        return
    wait_for_job(home, shown, timeout)
    show(call(home, "GET", f"/api/jobs/{pid}/result"))


def wait_for_job(home: Path, shown: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Follow a job until it ends (printing its states on stderr); its view once COMPLETED,
    or NodeCommandError (exit 1) with the provider's reason when it was TERMINATED."""
    pid = shown["pid"]
    deadline = time.monotonic() + timeout
    state = shown["state"]
    while state not in ("COMPLETED", "TERMINATED"):
        if time.monotonic() > deadline:
            raise NodeCommandError(f"still {state} after {timeout:.0f} s (the provider may be "
                                   f"waiting for its operator to approve the code); job {pid}", 1)
        time.sleep(0.05)
        shown = call(home, "GET", f"/api/jobs/{pid}")
        if shown["state"] != state:
            state = shown["state"]
            typer.echo(f"  → {state}", err=True)
    if state == "TERMINATED":
        reason = shown.get("reason") or {}
        raise NodeCommandError(f"{reason.get('code')}: {reason.get('detail')}", 1)
    return shown


@jobs_app.command("list")
def jobs_list(home: Home, state: Annotated[str | None, typer.Option()] = None,
              role: Annotated[str | None, typer.Option()] = None) -> None:
    """This node's jobs, newest first."""
    params = {k: v for k, v in (("state", state), ("role", role)) if v}
    show(call(home, "GET", "/api/jobs", params=params))


@jobs_app.command("pending")
def jobs_pending(home: Home) -> None:
    """(Provider) jobs waiting for the operator to approve their code."""
    show(call(home, "GET", "/api/jobs", params={"pending": "true"}))


@jobs_app.command("show")
def jobs_show(home: Home, pid: str) -> None:
    """A job, with its code (the script's text when it is one file) and code digest."""
    shown = call(home, "GET", f"/api/jobs/{pid}")
    from trustspace.sandbox.bundle import listing

    code = base64.b64decode(shown.pop("code", ""))
    if shown.get("mode") == "homomorphic":  # the consumer's context and ciphertexts
        shown["frameBytes"] = len(code)
    else:
        shown["files"] = listing(code)
    show(shown)


@jobs_app.command("approve")
def jobs_approve(home: Home, pid: str) -> None:
    """(Provider) approve a job's code; it runs next."""
    show(call(home, "POST", f"/api/jobs/{pid}/approve"))


@jobs_app.command("refuse")
def jobs_refuse(home: Home, pid: str,
                reason: Annotated[str, typer.Option(help="Told to the consumer.")]
                = "refused by the operator") -> None:
    """(Provider) refuse a job's code; the consumer is told why, with a refusal receipt."""
    show(call(home, "POST", f"/api/jobs/{pid}/refuse", {"reason": reason}))


@results_app.command("show")
def results_show(home: Home, pid: str) -> None:
    """The released result of a completed job, opened with this node's key."""
    show(call(home, "GET", f"/api/jobs/{pid}/result"))


@results_app.command("save")
def results_save(home: Home, pid: str, out: Annotated[Path, typer.Argument()]) -> None:
    """Save a job's released result (JSON) to a file."""
    shown = call(home, "GET", f"/api/jobs/{pid}/result")
    out.write_text(json.dumps(shown["result"], indent=1, ensure_ascii=False))
    typer.echo(f"saved {shown['resultDigest']} to {out}", err=True)


def register(app: typer.Typer) -> None:
    from .cli_fl import fl_app
    from .cli_he import he_app

    app.command("run")(run)
    app.add_typer(he_app, name="he")
    app.add_typer(fl_app, name="fl")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(results_app, name="results")

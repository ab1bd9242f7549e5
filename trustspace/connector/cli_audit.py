"""`trustspace audit`: the regulator's tools. A bundle comes from the data space's log (through
the regulator's own node, which signs the requests) or from a file; it is verified here, offline,
against the authority's key, and confidential parts are opened here with the regulator's key,
which never leaves this machine."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from trustspace.crypto import NotARecipient, SM2PrivateKey, SM2PublicKey
from trustspace.ledger.audit import Report, chain_anchors, trace, verify_bundle

from .cli_node import Home, NodeCommandError, call, show
from .config import Settings

audit_app = typer.Typer(help="Trace and verify exchanges from the ledger (regulators).",
                        no_args_is_help=True)

Agreement = Annotated[str | None, typer.Option("--agreement", help="An agreement id.")]
Product = Annotated[str | None, typer.Option("--product", help="A product (dataset) id.")]
Participant = Annotated[str | None, typer.Option("--participant", help="A participant id.")]
Since = Annotated[str | None, typer.Option("--since", help="ISO time: entries logged since.")]
BundleFile = Annotated[Path | None, typer.Option("--bundle",
                                                 help="Read this bundle instead of fetching.")]
Source = Annotated[str | None, typer.Option(
    "--source", help="Whose log: 'authority' (default) or a node's URL.")]


def _bundle(home: Path | None, bundle: Path | None, source: str | None,
            **selection: str | None) -> dict[str, Any]:
    if bundle is not None:
        try:
            value = json.loads(bundle.read_text())
        except (OSError, ValueError) as exc:
            raise NodeCommandError(f"cannot read bundle {bundle}: {exc}", 2) from None
        if not isinstance(value, dict):
            raise NodeCommandError(f"{bundle} is not an audit bundle", 2)
        return value
    if home is None:
        raise NodeCommandError("give --home (a regulator's node) or --bundle FILE", 2)
    params = {k: v for k, v in selection.items() if v}
    if source:
        params["source"] = source
    return dict(call(home, "GET", "/api/audit/bundle", params=params))


def _authority_key(home: Path | None, key_file: Path | None) -> SM2PublicKey:
    if key_file is None:
        if home is None:
            raise NodeCommandError("give --authority-key PEM (or --home)", 2)
        settings = Settings.load(home)
        key_file = settings.path(settings.authority_key_file)
    return SM2PublicKey.from_pem(key_file.read_bytes())


def _own_key(home: Path) -> SM2PrivateKey:
    settings = Settings.load(home)
    password = os.environ.get(settings.key_password_env) if settings.key_password_env else None
    return SM2PrivateKey.from_pem(settings.path(settings.key_file).read_bytes(),
                                  password.encode() if password else None)


AuthorityKey = Annotated[Path | None, typer.Option(
    "--authority-key", help="The data space's trust anchor (PEM); default: the home's.")]
Quorum = Annotated[int, typer.Option("--quorum", min=1,
                                     help="Witness cosignatures that make a checkpoint final.")]


@audit_app.command("export")
def export(out: Annotated[Path, typer.Option("--out", help="Write the bundle here.")],
           home: Home, agreement: Agreement = None, product: Product = None,
           participant: Participant = None, since: Since = None, source: Source = None) -> None:
    """Fetch an audit bundle (all of the log without a filter) and save it."""
    value = _bundle(home, None, source, agreement=agreement, product=product,
                    participant=participant, since=since)
    out.write_text(json.dumps(value, indent=1, ensure_ascii=False))
    typer.echo(f"{len(value.get('entries', []))} entries written to {out}", err=True)


@audit_app.command("trace")
def trace_command(home: Home, agreement: Agreement = None, product: Product = None,
                  participant: Participant = None, since: Since = None,
                  bundle: BundleFile = None, source: Source = None,
                  authority_key: AuthorityKey = None, quorum_size: Quorum = 2,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The whole life of an exchange, in log order: authorization, every delivery and
    refusal, the ending; confidential parts opened with this home's key."""
    if not (agreement or product or participant or bundle):
        raise NodeCommandError("name what to trace: --agreement, --product or --participant", 2)
    value = _bundle(home, bundle, source, agreement=agreement, product=product,
                    participant=participant, since=since)
    report = verify_bundle(value, _authority_key(home, authority_key), quorum_size=quorum_size)
    key = _own_key(home) if home is not None and (home / "trustspace.toml").exists() else None
    events = []
    for item, receipt in zip(value.get("entries", []), trace(value), strict=True):
        try:
            secret = receipt.open(key) if key is not None else None
            opened: Any = secret
        except NotARecipient:
            opened = "(sealed: not addressed to this key)"
        events.append({"index": item["index"], "loggedAt": item.get("loggedAt"),
                       "kind": receipt.kind.value, "id": receipt.id,
                       "agreementId": receipt.agreement_id, "provider": receipt.provider,
                       "consumer": receipt.consumer,
                       "issuedAt": receipt.document.body.get("issuedAt"),
                       "public": dict(receipt.public), "confidential": opened,
                       "signedBy": sorted(receipt.roles)})
    if as_json:
        show({"verification": report.to_json(), "events": events})
    else:
        for e in events:
            typer.echo(f"#{e['index']} {e['issuedAt']} {e['kind']:<13} {e['id']}")
            typer.echo(f"    {e['provider']} -> {e['consumer']}  agreement {e['agreementId']}")
            typer.echo(f"    signed by {', '.join(e['signedBy'])}")
            for k, v in e["public"].items():
                typer.echo(f"    {k}: {v}")
            if e["confidential"] is not None:
                typer.echo(f"    confidential: {json.dumps(e['confidential'], ensure_ascii=False)}")
        typer.echo(_summary(report), err=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("verify")
def verify_command(home: Annotated[Path | None, typer.Option(
                       "--home", envvar="TRUSTSPACE_HOME", help="A regulator's node home.")
                   ] = None,
                   bundle: BundleFile = None, source: Source = None,
                   authority_key: AuthorityKey = None, quorum_size: Quorum = 2,
                   require_final: Annotated[bool, typer.Option(
                       "--require-final", help="A checkpoint short of the quorum fails.")]
                   = False,
                   report_json: Annotated[Path | None, typer.Option("--json")] = None,
                   report_html: Annotated[Path | None, typer.Option("--html")] = None,
                   rpc_url: Annotated[str | None, typer.Option(
                       "--rpc-url", help="Read the anchors from this EVM chain.")] = None,
                   contract: Annotated[str | None, typer.Option(
                       "--contract", help="The ReceiptLedger contract's address.")] = None
                   ) -> None:
    """Check every signature, inclusion proof, checkpoint consistency, the witnesses' quorum
    and the chain anchors; name each failure; exit 1 on any."""
    value = _bundle(home, bundle, source)
    if rpc_url or contract:
        if not (rpc_url and contract):
            raise NodeCommandError("--rpc-url and --contract go together", 2)
        value["anchors"] = _anchors_on_chain(rpc_url, contract, str(value.get("origin")))
    report = verify_bundle(value, _authority_key(home, authority_key), quorum_size=quorum_size)
    if require_final and not report.final:
        report.fail("not-final", f"checkpoint {report.size}", "short of the witness quorum")
    for f in report.findings:
        typer.echo(f"{f.severity.upper()} {f.code} at {f.where}: {f.detail}")
    if report_json is not None:
        report_json.write_text(json.dumps(report.to_json(), indent=1))
    if report_html is not None:
        report_html.write_text(_html(report, value))
    typer.echo(_summary(report), err=True)
    if not report.ok:
        raise typer.Exit(1)


def _anchors_on_chain(rpc_url: str, contract: str, origin: str) -> list[dict[str, Any]]:
    """The chain's own record of the log's anchors (read-only: the key is a throwaway)."""
    from trustspace.ledger.errors import LedgerError
    from trustspace.ledger.evm import EvmLedger

    reader = EvmLedger(rpc_url, contract, "0x" + os.urandom(32).hex())
    try:
        return chain_anchors(reader.events(), origin)
    except LedgerError as exc:
        raise NodeCommandError(f"cannot read the chain: {exc}", 1) from None


def _summary(report: Report) -> str:
    failures = sum(f.severity == "failure" for f in report.findings)
    state = "OK" if report.ok else f"FAILED ({failures} failure(s))"
    return (f"audit {state}: {report.entries} entries, {report.checkpoints} checkpoints, "
            f"{report.anchors} anchors, log size {report.size}, "
            f"{'final' if report.final else 'not final'}")


def _html(report: Report, bundle: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr class={f.severity}><td>{f.severity}</td><td>{html.escape(f.code)}</td>"
        f"<td>{html.escape(f.where)}</td><td>{html.escape(f.detail)}</td></tr>"
        for f in report.findings) or "<tr><td colspan=4>no findings</td></tr>"
    entries = "".join(
        f"<tr><td>{e['index']}</td><td>{html.escape(str(e['receipt']['body']['kind']))}</td>"
        f"<td>{html.escape(str(e['receipt']['body']['id']))}</td>"
        f"<td>{html.escape(str(e['receipt']['body'].get('agreementId')))}</td></tr>"
        for e in bundle.get("entries", []))
    return (f"<!doctype html><meta charset=utf-8><title>trustspace audit report</title>"
            f"<style>.failure{{color:#a00}} td{{padding:2px 8px}}</style>"
            f"<h1>Audit report: {'OK' if report.ok else 'FAILED'}</h1>"
            f"<p>{html.escape(_summary(report))}; log {html.escape(str(bundle.get('origin')))}"
            f"</p><h2>Findings</h2><table>{rows}</table>"
            f"<h2>Entries</h2><table><tr><th>index<th>kind<th>receipt<th>agreement</tr>"
            f"{entries}</table>")

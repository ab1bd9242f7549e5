"""The regulator's console: a read-only web view of the data space's log, served by the node
under /console for a person rather than a program.

Whoever holds the node's operator token (the management API's credential) signs in once; the
token is exchanged for a random session id kept in this process's memory and sent back as an
HttpOnly, SameSite=Strict cookie. Nothing here writes to the node: every page fetches an audit
bundle the way `trustspace audit` does (`audit_api.fetch_bundle`: the authority's log, through
this node's signed requests) or reads one the regulator uploads, and checks it with
`ledger.audit.verify_bundle` against the authority's key. Confidential receipt parts are opened
with this node's key, on a receipt's own page only.

Pages are plain HTML rendered here (no template engine, no script: the Content-Security-Policy
forbids scripts outright), every value escaped with `html.escape`.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import html
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from trustspace.crypto import DocumentInvalid, NotARecipient, SM2PublicKey
from trustspace.ledger.audit import Finding, Report, chain_anchors, trace, verify_bundle
from trustspace.ledger.checkpoint import SignedNote, quorum, verify_note
from trustspace.ledger.errors import LedgerError
from trustspace.ledger.receipts import Receipt
from trustspace.registry.credentials import (
    CredentialInvalid,
    Membership,
    parse_iso,
    verify_membership,
)

from .audit_api import fetch_bundle
from .auth import node_of
from .errors import ApiError
from .home import token_digest
from .node import Node

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "ts_console"
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 256
QUORUM = 2  # witness cosignatures that make a checkpoint final (as `trustspace audit verify`)
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


# ---- sessions ----------------------------------------------------------------------------------

@dataclass
class Session:
    expires: float  # time.monotonic()
    upload: dict[str, Any] | None = None  # a bundle the regulator uploaded, shown instead
    upload_name: str = ""


@dataclass
class Sessions:
    """Random session ids -> sessions, in this process only (a restart signs everyone out)."""

    items: dict[str, Session] = field(default_factory=dict)

    def new(self) -> str:
        now = time.monotonic()
        for sid in [s for s, v in self.items.items() if v.expires <= now]:
            del self.items[sid]
        while len(self.items) >= MAX_SESSIONS:
            del self.items[next(iter(self.items))]  # the oldest
        sid = secrets.token_urlsafe(32)
        self.items[sid] = Session(now + SESSION_SECONDS)
        return sid

    def get(self, sid: str | None) -> Session | None:
        session = self.items.get(sid) if sid else None
        if session is None or session.expires <= time.monotonic():
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self.items.pop(sid, None)


def _sessions(request: Request) -> Sessions:
    state = request.app.state
    sessions: Sessions | None = getattr(state, "console_sessions", None)
    if sessions is None:
        sessions = state.console_sessions = Sessions()
    return sessions


def _session(request: Request) -> Session | None:
    return _sessions(request).get(request.cookies.get(COOKIE))


def token_valid(node: Node, token: str) -> bool:
    """The management API's check (auth.operator): only the token's SM3 digest is stored."""
    token = token.strip()
    return bool(token) and hmac.compare_digest(token_digest(token),
                                               node.settings.operator_token_digest)


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/console/login?" + urlencode({"next": target}))


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=303, headers=_HEADERS)


def _safe_next(value: str | None) -> str:
    """Only back into the console: never an open redirect."""
    if value and value.startswith("/console/") and not value.startswith("/console//") \
            and "\\" not in value:
        return value
    return "/console/receipts"


# ---- rendering helpers -------------------------------------------------------------------------

def h(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _short(value: object, keep: int = 14) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def _link(path: str, label: str, **params: object) -> str:
    query = urlencode({k: str(v) for k, v in params.items() if v not in (None, "")})
    return f'<a href="{h(path + ("?" + query if query else ""))}">{label}</a>'


_NAV = (("receipts", "Receipts"), ("space", "Data space"), ("heads", "Tree heads & anchors"))


def _page(title: str, body: str, *, active: str = "", session: Session | None = None,
          status: int = 200) -> HTMLResponse:
    nav = ""
    if session is not None:
        links = "".join(f'<a class="{"on" if key == active else ""}" href="/console/{key}">'
                        f"{label}</a>" for key, label in _NAV)
        source = (f'uploaded bundle <b>{h(session.upload_name)}</b> '
                  f'<form method="post" action="/console/bundle/clear" class="inline">'
                  f'<button id="live">show the live log</button></form>'
                  if session.upload is not None else "the authority's log (live)")
        nav = (f'<nav>{links}<form method="post" action="/console/logout" class="inline right">'
               f'<button id="logout">Sign out</button></form></nav>'
               f'<div class="source" id="source">Source: {source}</div>')
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f"<title>{h(title)} · trustspace console</title>"
                f'<link rel="stylesheet" href="/console/static/console.css"></head><body>'
                f'<header><span class="brand">trustspace</span> regulator console</header>'
                f"{nav}<main><h1>{h(title)}</h1>{body}</main></body></html>")
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _status(ok: bool, findings: Sequence[Finding]) -> str:
    if ok:
        return '<span class="ok">✔ verified</span>'
    failed = [f for f in findings if f.severity == "failure"]
    reasons = "; ".join(f"{f.code}: {f.detail}" for f in failed)
    codes = ", ".join(dict.fromkeys(f.code for f in failed))
    return (f'<span class="bad" title="{h(reasons)}">✘ verification failed'
            f"{f' ({h(codes)})' if codes else ''}</span>")


def _findings_table(findings: Sequence[Finding]) -> str:
    if not findings:
        return "<p>No findings.</p>"
    rows = "".join(f'<tr class="{h(f.severity)}"><td>{h(f.severity)}</td><td>{h(f.code)}</td>'
                   f"<td>{h(f.where)}</td><td>{h(f.detail)}</td></tr>" for f in findings)
    return ('<table class="findings"><tr><th>severity</th><th>code</th><th>where</th>'
            f"<th>detail</th></tr>{rows}</table>")


def _summary(report: Report) -> str:
    failures = sum(f.severity == "failure" for f in report.findings)
    state = ('<span class="ok">OK</span>' if report.ok
             else f'<span class="bad">FAILED ({failures} failure(s))</span>')
    return (f'<p class="summary" id="summary">Verification {state}: {report.entries} entries, '
            f"{report.checkpoints} checkpoints, {report.anchors} anchors, log size "
            f"{report.size}, {'final' if report.final else 'not final'}.</p>")


# ---- what a page shows: a verified bundle ------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    index: int
    item: Mapping[str, Any]  # the bundle's entry: receipt, inclusion proof, loggedAt
    receipt: Receipt | None  # None: not even a signed document
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return self.receipt is not None and not any(f.severity == "failure"
                                                    for f in self.findings)

    def body(self, key: str) -> Any:
        return None if self.receipt is None else self.receipt.document.body.get(key)

    @property
    def kind(self) -> str:
        return str(self.body("kind") or "?")


@dataclass(frozen=True)
class View:
    bundle: Mapping[str, Any]
    report: Report
    entries: list[Entry]
    members: dict[str, Membership]  # participant id -> credential, from the bundle

    def name(self, participant: object) -> str:
        member = self.members.get(str(participant))
        return member.name if member else str(participant)

    def who(self, participant: object) -> str:
        return (f'<span class="who" title="{h(participant)}">{h(self.name(participant))}'
                f"</span>")

    def products(self) -> dict[str, str]:
        """Agreement id -> product id, from the authorization receipts."""
        return {str(e.body("agreementId")): str(e.receipt.public["productId"])
                for e in self.entries if e.receipt is not None and e.kind == "authorization"
                and e.receipt.public.get("productId")}

    @property
    def proof_size(self) -> int:
        return self.report.size


def _members(bundle: Mapping[str, Any], authority_key: SM2PublicKey) -> dict[str, Membership]:
    members: dict[str, Membership] = {}
    for doc in bundle.get("credentials", []) or []:
        try:
            valid_from = parse_iso(doc["body"]["validFrom"], "validFrom")
            member = verify_membership(doc, authority_key, now=valid_from)
        except (CredentialInvalid, DocumentInvalid, KeyError, TypeError, ValueError):
            continue  # verify_bundle reports it
        members[member.participant_id] = member
    return members


def _entry_findings(report: Report, index: int) -> tuple[Finding, ...]:
    # verify_bundle names an entry "entry <index>" or "entry <index> (<receipt id>)".
    return tuple(f for f in report.findings
                 if f.where == f"entry {index}" or f.where.startswith(f"entry {index} ("))


def _parse(item: Mapping[str, Any]) -> Receipt | None:
    try:
        return trace({"entries": [item]})[0]
    except (DocumentInvalid, KeyError, TypeError, ValueError):
        return None


def build_view(bundle: Mapping[str, Any], authority_key: SM2PublicKey) -> View:
    try:
        report = verify_bundle(bundle, authority_key, quorum_size=QUORUM)
    except (LedgerError, DocumentInvalid, AttributeError, KeyError, TypeError, ValueError) \
            as exc:  # a hand-made bundle of the wrong shape
        report = Report()
        report.fail("malformed", "bundle", f"{type(exc).__name__}: {exc}")
    entries = []
    for item in bundle.get("entries", []) or []:
        if not isinstance(item, Mapping):
            continue
        try:
            index = int(item.get("index", -1))
        except (TypeError, ValueError):
            index = -1
        entries.append(Entry(index, item, _parse(item), _entry_findings(report, index)))
    return View(bundle, report, entries, _members(bundle, authority_key))


class ConsoleError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


async def _view(node: Node, session: Session, agreement: str | None = None,
                participant: str | None = None, since: str | None = None) -> View:
    if session.upload is not None:
        bundle: Mapping[str, Any] = session.upload
    else:
        try:
            bundle = await fetch_bundle(node, agreement=agreement, participant=participant,
                                        since=since, product=None, source=None)
        except ApiError as exc:
            raise ConsoleError(exc.status, f"the log could not be read ({exc.reason}): "
                                           f"{exc.detail}") from None
        if not isinstance(bundle, Mapping):
            raise ConsoleError(502, "the log answered something that is not a bundle")
    return await run_in_threadpool(build_view, bundle, node.authority_key)


def _error(session: Session | None, exc: ConsoleError, active: str = "") -> HTMLResponse:
    return _page("Cannot show this", f'<p class="bad" id="error">{h(exc.message)}</p>',
                 active=active, session=session, status=exc.status)


# ---- sign in / out -----------------------------------------------------------------------------

def _login_form(next_path: str, message: str = "") -> str:
    note = f'<p class="bad" id="login-error">{h(message)}</p>' if message else ""
    return (f"{note}<p>Sign in with this node's operator token (the management API's bearer "
            f"token, <code>operator.token</code> in the node's home).</p>"
            f'<form method="post" action="/console/login" class="login">'
            f'<input type="hidden" name="next" value="{h(next_path)}">'
            f'<label>Operator token <input type="password" name="token" id="token" '
            f'autocomplete="current-password" required></label>'
            f'<button id="sign-in">Sign in</button></form>')


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        return {}
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {k: v[0] for k, v in fields.items() if v}


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if _session(request) is not None:
        return _redirect(_safe_next(next))
    return _page("Sign in", _login_form(_safe_next(next)))


@router.post("/login")
async def login(request: Request) -> Response:
    node = node_of(request)
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if not token_valid(node, form.get("token", "")):
        return _page("Sign in", _login_form(target, "The operator token is not valid for "
                                                    "this node."), status=401)
    sessions = _sessions(request)
    sessions.drop(request.cookies.get(COOKIE))  # a fresh id at every sign-in
    response = _redirect(target)
    response.set_cookie(COOKIE, sessions.new(), max_age=SESSION_SECONDS, path="/console",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    _sessions(request).drop(request.cookies.get(COOKIE))
    response = _redirect("/console/login")
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


@router.get("")
@router.get("/")
def home(request: Request) -> Response:
    return _redirect("/console/receipts")


# ---- an uploaded bundle ------------------------------------------------------------------------

def _multipart_file(content_type: str, body: bytes, name: str) -> tuple[str, bytes] | None:
    """The file field `name` of a multipart/form-data body (RFC 7578), read with the standard
    library's MIME parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            filename = part.get_filename() or "bundle.json"
            return str(filename), payload if isinstance(payload, bytes) else b""
    return None


@router.post("/bundle")
async def upload(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    found = _multipart_file(request.headers.get("content-type", ""), await request.body(),
                            "bundle")
    try:
        if found is None:
            raise ValueError("choose a bundle file (trustspace audit export --out FILE)")
        value = json.loads(found[1])
        if not isinstance(value, dict):
            raise ValueError("the file is not a JSON object")
    except ValueError as exc:
        return _error(session, ConsoleError(400, f"cannot read the bundle: {exc}"), "receipts")
    session.upload, session.upload_name = value, found[0]
    return _redirect("/console/receipts")


@router.post("/bundle/clear")
def clear_upload(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    session.upload, session.upload_name = None, ""
    return _redirect("/console/receipts")


# ---- receipts ----------------------------------------------------------------------------------

def _moment(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConsoleError(400, f"{what}: {value!r} is not an ISO date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _logged_at(entry: Entry) -> datetime | None:
    try:
        return _moment(entry.item.get("loggedAt") or entry.body("issuedAt"), "loggedAt")
    except ConsoleError:
        return None


@dataclass(frozen=True)
class Filters:
    agreement: str = ""
    product: str = ""
    participant: str = ""
    since: str = ""
    until: str = ""

    def keep(self, view: View, entry: Entry, products: Mapping[str, str]) -> bool:
        """Applied to every bundle (the authority's log filters only some of these)."""
        agreement = str(entry.body("agreementId") or "")
        if self.agreement and agreement != self.agreement:
            return False
        if self.product and products.get(agreement) != self.product:
            return False
        if self.participant and self.participant not in (entry.body("provider"),
                                                         entry.body("consumer")):
            return False
        moment = _logged_at(entry)
        since, until = _moment(self.since, "since"), _moment(self.until, "until")
        if since and (moment is None or moment < since):
            return False
        return not (until and (moment is None or moment > until))


def _filter_form(view: View, filters: Filters) -> str:
    members = "".join(f'<option value="{h(pid)}">{h(m.name)}</option>'
                      for pid, m in sorted(view.members.items()))
    products = "".join(f'<option value="{h(p)}">' for p in sorted(set(view.products().values())))

    def field(name: str, label: str, kind: str = "text", extra: str = "") -> str:
        return (f'<label>{label} <input type="{kind}" name="{name}" id="f-{name}" '
                f'value="{h(getattr(filters, name))}" {extra}></label>')

    return (f'<form method="get" action="/console/receipts" class="filters">'
            f'{field("agreement", "Agreement")}'
            f'{field("product", "Product", extra="list=products")}'
            f'{field("participant", "Participant", extra="list=members")}'
            f'{field("since", "Logged since", extra="placeholder=2025-01-31T00:00")}'
            f'{field("until", "until", extra="placeholder=2025-12-31T23:59")}'
            f'<button id="search">Search</button> {_link("/console/receipts", "clear")}'
            f'<datalist id="members">{members}</datalist>'
            f'<datalist id="products">{products}</datalist></form>')


def _upload_form() -> str:
    return ('<form method="post" action="/console/bundle" enctype="multipart/form-data" '
            'class="upload"><label>Check a bundle file instead '
            '<input type="file" name="bundle" id="bundle-file" accept=".json"></label>'
            '<button id="upload">Open</button></form>')


def _receipt_link(entry: Entry, label: str) -> str:
    return _link(f"/console/receipts/{entry.index}", label,
                 agreement=entry.body("agreementId"),
                 participant=None if entry.body("agreementId") else entry.body("provider"))


def _receipt_row(view: View, entry: Entry, products: Mapping[str, str]) -> str:
    agreement = entry.body("agreementId")
    product = products.get(str(agreement), "")
    cells = [
        _receipt_link(entry, f"#{entry.index}"),
        h(entry.body("issuedAt")), h(entry.kind),
        _link("/console/receipts", view.who(entry.body("provider")),
              participant=entry.body("provider")),
        _link("/console/receipts", view.who(entry.body("consumer")),
              participant=entry.body("consumer")),
        _link(f"/console/agreements/{agreement}", h(_short(agreement, 22))) if agreement else "",
        _link("/console/receipts", h(product), product=product) if product else "",
        _status(entry.ok, entry.findings),
    ]
    flagged = "" if entry.ok else ' class="flagged"'
    return f'<tr{flagged} id="entry-{entry.index}">' + "".join(f"<td>{c}</td>"
                                                               for c in cells) + "</tr>"


@router.get("/receipts")
async def receipts(request: Request, agreement: str = "", product: str = "",
                   participant: str = "", since: str = "", until: str = "") -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    filters = Filters(agreement.strip(), product.strip(), participant.strip(), since.strip(),
                      until.strip())
    try:
        _moment(filters.since, "since"), _moment(filters.until, "until")
        view = await _view(node_of(request), session, filters.agreement or None,
                           filters.participant or None, filters.since or None)
        products = view.products()
        shown = [e for e in view.entries if filters.keep(view, e, products)]
    except ConsoleError as exc:
        return _error(session, exc, "receipts")
    rows = "".join(_receipt_row(view, e, products) for e in shown) or \
        '<tr><td colspan="8">No receipts match.</td></tr>'
    other = [f for f in view.report.findings if not f.where.startswith("entry ")]
    body = (f"{_filter_form(view, filters)}{_upload_form()}{_summary(view.report)}"
            f'<table class="receipts" id="receipts"><tr><th>log #</th><th>issued</th>'
            f"<th>kind</th><th>provider</th><th>consumer</th><th>agreement</th><th>product</th>"
            f"<th>verification</th></tr>{rows}</table>"
            f"<p>{len(shown)} of {len(view.entries)} receipts in the bundle.</p>"
            f"<h2>Findings about the log</h2>{_findings_table(other)}")
    return _page("Receipts", body, active="receipts", session=session)


def _proof(view: View, entry: Entry) -> str:
    hashes = "".join(f"<li><code>{h(x)}</code></li>" for x in entry.item.get("inclusion", []))
    return (f'<dl class="proof"><dt>log index</dt><dd>{entry.index}</dd>'
            f"<dt>checkpoint size</dt><dd>{view.proof_size}</dd>"
            f"<dt>proof hashes</dt><dd><ol>{hashes or '<li>(none: a one-leaf tree)</li>'}"
            f"</ol></dd></dl>")


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json(value: Any) -> str:
    return f"<pre>{h(json.dumps(value, indent=1, ensure_ascii=False))}</pre>"


def _opened(node: Node, receipt: Receipt) -> str:
    try:
        value = receipt.open(node.key)
    except NotARecipient:
        return "<p>Sealed: this node's key is not one of its recipients.</p>"
    except DocumentInvalid as exc:
        return f'<p class="bad">Cannot open it: {h(exc)}</p>'
    if value is None:
        return "<p>This receipt has no confidential part.</p>"
    return f'<div id="confidential">{_json(value)}</div>'


@router.get("/receipts/{index}")
async def receipt_page(request: Request, index: int, agreement: str = "",
                       participant: str = "") -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    node = node_of(request)
    try:
        view = await _view(node, session, agreement or None, participant or None)
    except ConsoleError as exc:
        return _error(session, exc, "receipts")
    entry = next((e for e in view.entries if e.index == index), None)
    if entry is None:
        return _error(session, ConsoleError(404, f"no entry {index} in this bundle"),
                      "receipts")
    receipt = entry.receipt
    if receipt is None:
        body = (f"<p>{_status(False, entry.findings)}</p>{_findings_table(entry.findings)}"
                f"{_json(entry.item.get('receipt'))}")
        return _page(f"Log entry #{index}", body, active="receipts", session=session)
    agreement_id = receipt.agreement_id
    signatures = "".join(
        f"<tr><td>{h(s.role)}</td><td><code>{h(s.key_id)}</code></td>"
        f"<td>{h(next((m.name for m in view.members.values() if m.key_id == s.key_id), '?'))}"
        f"</td><td>{h(s.signed_at)}</td></tr>"
        for s in receipt.document.signatures)
    public = "".join(f"<dt>{h(k)}</dt><dd>{h(_scalar(v))}</dd>"
                     for k, v in receipt.public.items())
    timeline = (_link(f"/console/agreements/{agreement_id}", h(agreement_id))
                if agreement_id else "(none)")
    body = (f'<p id="status">{_status(entry.ok, entry.findings)}</p>'
            f"{'' if entry.ok else _findings_table(entry.findings)}"
            f'<dl class="fields"><dt>receipt</dt><dd>{h(receipt.id)}</dd>'
            f"<dt>kind</dt><dd>{h(receipt.kind.value)}</dd>"
            f"<dt>digest</dt><dd><code>{h(receipt.digest)}</code></dd>"
            f"<dt>provider</dt><dd>{view.who(receipt.provider)}</dd>"
            f"<dt>consumer</dt><dd>{view.who(receipt.consumer)}</dd>"
            f"<dt>agreement</dt><dd>{timeline}</dd>"
            f"<dt>agreement digest</dt><dd><code>{h(entry.body('agreementDigest'))}</code></dd>"
            f"<dt>issued</dt><dd>{h(entry.body('issuedAt'))}</dd>"
            f"<dt>logged</dt><dd>{h(entry.item.get('loggedAt'))} by "
            f"{view.who(entry.item.get('submitter'))}</dd></dl>"
            f"<h2>Public part</h2><dl class=\"fields\">{public}</dl>"
            f"<h2>Signatures</h2><table><tr><th>role</th><th>key id</th><th>signer</th>"
            f"<th>signed at</th></tr>{signatures}</table>"
            f"<h2>Inclusion proof</h2>{_proof(view, entry)}"
            f"<h2>Confidential part (opened with this node's key)</h2>{_opened(node, receipt)}")
    return _page(f"Receipt #{index}: {receipt.kind.value}", body, active="receipts",
                 session=session)


# ---- one agreement's life ----------------------------------------------------------------------

def _step(view: View, entry: Entry) -> str:
    public = entry.receipt.public if entry.receipt is not None else {}
    kind = entry.kind
    if kind == "authorization":
        what = (f"Authorized: product <b>{h(public.get('productId'))}</b>, valid from "
                f"{h(public.get('validFrom'))} until {h(public.get('validUntil') or 'revoked')}"
                f"; data <code>{h(_short(public.get('dataDigest'), 20))}</code>")
    elif kind == "delivery":
        what = (f"Job <b>{h(public.get('jobId'))}</b> ({h(public.get('mode'))}): "
                f"{h(public.get('outcome'))}, {h(public.get('rows'))} rows read, "
                f"{h(public.get('resultBytes'))} bytes released; checks "
                f"{h(', '.join(public.get('checks') or []) or 'none')}")
    elif kind == "refusal":
        what = (f"Refused job request <code>{h(_short(public.get('subjectDigest'), 20))}"
                f"</code>: rule <b>{h(public.get('rule'))}</b>: {h(public.get('reason'))}")
    elif kind in ("termination", "revocation"):
        what = f"{h(kind.capitalize())} by {view.who(public.get('by'))}: " \
               f"{h(public.get('code'))}: {h(public.get('reason'))}"
    else:
        what = "A log entry that is not a readable receipt."
    return (f'<li class="step {h(kind)}{"" if entry.ok else " flagged"}" '
            f'id="step-{entry.index}"><div class="when">{h(entry.body("issuedAt"))}</div>'
            f'<div class="kind">{h(kind)}</div><div>{what}</div>'
            f"<div>{_status(entry.ok, entry.findings)} · "
            f"{_receipt_link(entry, f'receipt #{entry.index}')}</div>"
            f"{'' if entry.ok else _findings_table(entry.findings)}"
            f"<details><summary>inclusion proof: log index {entry.index}, checkpoint size "
            f"{view.proof_size}</summary>{_proof(view, entry)}</details></li>")


@router.get("/agreements/{agreement_id:path}")
async def agreement_page(request: Request, agreement_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    try:
        view = await _view(node_of(request), session, agreement=agreement_id)
    except ConsoleError as exc:
        return _error(session, exc, "receipts")
    entries = [e for e in view.entries if e.body("agreementId") == agreement_id]
    if not entries:
        return _error(session, ConsoleError(404, f"no receipt names agreement {agreement_id}"),
                      "receipts")
    first = entries[0]
    deliveries = [e.receipt.public for e in entries
                  if e.receipt is not None and e.kind == "delivery"]
    refusals = sum(e.kind == "refusal" for e in entries)
    flagged = sum(not e.ok for e in entries)
    rows = sum(int(d.get("rows") or 0) for d in deliveries)
    released = sum(int(d.get("resultBytes") or 0) for d in deliveries)
    order = {"authorization": 0, "delivery": 1, "refusal": 1}
    steps = "".join(_step(view, e) for e in sorted(entries, key=lambda e: (
        order.get(e.kind, 2), e.index)))
    body = (f'<p>{view.who(first.body("provider"))} → {view.who(first.body("consumer"))}, '
            f"product <b>{h(view.products().get(agreement_id, '?'))}</b>. "
            f"{len(entries)} receipts: {len(deliveries)} deliveries, {refusals} refusals; "
            f"{rows} rows read, {released} bytes released. "
            f'<span class="{"bad" if flagged else "ok"}" id="flagged">{flagged} failed '
            f"verification.</span></p>{_summary(view.report)}"
            f'<ol class="timeline" id="timeline">{steps}</ol>')
    return _page(f"Agreement {agreement_id}", body, active="receipts", session=session)


# ---- the data space as a graph -----------------------------------------------------------------

def _svg_graph(view: View) -> str:
    products = view.products()
    agreements: dict[str, dict[str, Any]] = {}
    for e in view.entries:
        agreement = e.body("agreementId")
        if not agreement:
            continue
        a = agreements.setdefault(str(agreement), {"provider": e.body("provider"),
                                                   "consumer": e.body("consumer"),
                                                   "n": 0, "bad": 0})
        a["n"] += 1
        a["bad"] += not e.ok
    providers = sorted({str(a["provider"]) for a in agreements.values()})
    consumers = sorted({str(a["consumer"]) for a in agreements.values()})
    offered = sorted({(str(agreements[k]["provider"]), p) for k, p in products.items()
                      if k in agreements})
    items = sorted({p for _, p in offered})
    others = sorted(set(view.members) - set(providers) - set(consumers))
    rows = max(len(providers), len(items), len(consumers), 1)
    width, step, box_w, box_h = 900, 56, 200, 34
    other_rows = (len(others) + 3) // 4  # four to a row
    height = rows * step + 60 + 30 + other_rows * 46
    col = {"provider": 40, "product": 350, "consumer": 660}

    def y(i: int) -> int:
        return 50 + i * step

    def box(x: int, yy: int, label: str, cls: str, tip: str, href: str = "") -> str:
        shape = (f'<rect x="{x}" y="{yy}" width="{box_w}" height="{box_h}" rx="6" '
                 f'class="{cls}"/><text x="{x + box_w // 2}" y="{yy + 22}" '
                 f'text-anchor="middle">{h(_short(label, 24))}</text><title>{h(tip)}</title>')
        return f'<a href="{h(href)}">{shape}</a>' if href else f"<g>{shape}</g>"

    parts = [f'<text x="{col[k] + box_w // 2}" y="30" text-anchor="middle" class="head">{t}'
             f"</text>" for k, t in (("provider", "providers"), ("product", "products"),
                                     ("consumer", "consumers"))]
    pos_p = {p: y(i) for i, p in enumerate(providers)}
    pos_i = {p: y(i) for i, p in enumerate(items)}
    pos_c = {c: y(i) for i, c in enumerate(consumers)}
    for provider, product in offered:
        parts.append(f'<line x1="{col["provider"] + box_w}" y1="{pos_p[provider] + box_h // 2}"'
                     f' x2="{col["product"]}" y2="{pos_i[product] + box_h // 2}" '
                     f'class="offers"/>')
    pairs: dict[tuple[str, str], int] = {}  # several agreements on one pair fan out
    for agreement, a in sorted(agreements.items()):
        sold, consumer = products.get(agreement), str(a["consumer"])
        if sold is None or consumer not in pos_c:
            continue
        nth = pairs[sold, consumer] = pairs.get((sold, consumer), -1) + 1
        x1, y1 = col["product"] + box_w, pos_i[sold] + box_h // 2
        x2, y2 = col["consumer"], pos_c[consumer] + box_h // 2
        bend = (nth + 1) // 2 * 18 * (1 if nth % 2 else -1)
        cls = "agreement bad" if a["bad"] else "agreement"
        tip = (f"agreement {agreement}: {a['n']} receipts"
               + (f", {a['bad']} failed verification" if a["bad"] else ""))
        parts.append(f'<a href="/console/agreements/{h(agreement)}"><path '
                     f'd="M {x1} {y1} Q {(x1 + x2) // 2} {(y1 + y2) // 2 + 2 * bend} {x2} {y2}" '
                     f'class="{cls}"><title>{h(tip)}</title></path></a>')
    for p in providers:
        parts.append(box(col["provider"], pos_p[p], view.name(p), "participant", p,
                         "/console/receipts?" + urlencode({"participant": p})))
    for p in items:
        parts.append(box(col["product"], pos_i[p], p, "product", p,
                         "/console/receipts?" + urlencode({"product": p})))
    for c in consumers:
        parts.append(box(col["consumer"], pos_c[c], view.name(c), "participant", c,
                         "/console/receipts?" + urlencode({"participant": c})))
    if others:
        top = rows * step + 60 + 20
        parts.append(f'<text x="40" y="{top - 8}" class="head">other members</text>')
        for i, m in enumerate(others):
            roles = ", ".join(sorted(view.members[m].roles))
            parts.append(box(40 + i % 4 * 215, top + i // 4 * 46, f"{view.name(m)} ({roles})",
                             "other", m))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" id="graph" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="participants, products and agreements">{"".join(parts)}</svg>')


@router.get("/space")
async def space_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    try:
        view = await _view(node_of(request), session)
    except ConsoleError as exc:
        return _error(session, exc, "space")
    members = "".join(
        f"<tr><td>{h(m.name)}</td><td><code>{h(pid)}</code></td>"
        f"<td>{h(', '.join(sorted(m.roles)))}</td><td>{h(m.valid_until.isoformat())}</td></tr>"
        for pid, m in sorted(view.members.items()))
    body = (f"<p>Agreements link a product to its consumer (click one for its timeline); a red "
            f"line has a receipt that failed verification.</p>{_svg_graph(view)}"
            f"<h2>Members</h2><table><tr><th>name</th><th>participant</th><th>roles</th>"
            f"<th>credential valid until</th></tr>{members}</table>")
    return _page("Data space", body, active="space", session=session)


# ---- tree heads and anchors --------------------------------------------------------------------

def _heads(view: View, authority_key: SM2PublicKey) -> str:
    keys = {pid: m.public_key for pid, m in view.members.items()}
    name = str(view.bundle.get("logName"))
    keeper = view.bundle.get("logParticipant")
    log_key = keys.get(str(keeper)) if keeper else authority_key
    rows = []
    for text in view.bundle.get("checkpoints", []) or []:
        try:
            note = SignedNote.parse(text)
            cp = note.checkpoint()
            verified = verify_note(note, {**keys, name: log_key} if log_key else keys)
            signed = name in verified.signers
            cosigners = ", ".join(
                f"{view.name(w)} at {datetime.fromtimestamp(t, UTC).isoformat()}"
                for w, t in sorted(verified.cosigners.items()))
            final = quorum(note, keys, QUORUM)
        except (LedgerError, ValueError) as exc:
            rows.append(f'<tr class="flagged"><td colspan="5" class="bad">{h(exc)}</td></tr>')
            continue
        unsigned = Finding("unknown-key", "", "not signed by the log")
        rows.append(f'<tr><td>{cp.size}</td><td><code>{h(cp.root_hash.hex())}</code></td>'
                    f"<td>{_status(signed, [unsigned])}</td><td>{h(cosigners) or '(none)'}</td>"
                    f"<td>{'final' if final else 'not final'}</td></tr>")
    consistency = "".join(
        f"<tr><td>{h(p.get('old'))} → {h(p.get('new'))}</td><td>{len(p.get('proof', []))}"
        f"</td></tr>" for p in view.bundle.get("consistency", []) or [])
    return (f"<p>Log <code>{h(view.bundle.get('origin'))}</code> signed by "
            f"{h(view.name(keeper)) if keeper else 'the authority'}; a checkpoint is final "
            f"with {QUORUM} witness cosignatures.</p>"
            f'<table id="checkpoints"><tr><th>size</th><th>root hash</th><th>log signature'
            f"</th><th>witness cosignatures</th><th>state</th></tr>{''.join(rows)}</table>"
            f"<h2>Consistency proofs</h2><table><tr><th>checkpoints</th><th>proof hashes</th>"
            f"</tr>{consistency or '<tr><td colspan=2>(one checkpoint)</td></tr>'}</table>")


def _anchor_rows(anchors: Sequence[Mapping[str, Any]], roots: Mapping[int, str]) -> str:
    rows = []
    for a in anchors:
        known = roots.get(int(a.get("size", -1)))
        ok = known is not None and known == a.get("root")
        state = _status(ok, [Finding("anchor-mismatch", "", "the chain anchors another root")
                             if known else Finding("anchor-unknown-size", "",
                                                   "no checkpoint of that size")])
        rows.append(f"<tr><td>{h(a.get('size'))}</td><td><code>{h(a.get('root'))}</code></td>"
                    f"<td><code>{h(a.get('tx'))}</code></td><td>{h(a.get('block'))}</td>"
                    f"<td>{state}</td></tr>")
    return "".join(rows) or '<tr><td colspan="5">No anchors (the ledger is not a chain).</td></tr>'


def _on_chain(node: Node, origin: str) -> list[dict[str, Any]] | str:
    """The chain's own record of the log's anchors, when this node is configured for one."""
    settings = node.settings
    if not (settings.evm_rpc_url and settings.evm_contract):
        return "This node has no chain configured (evm_rpc_url, evm_contract)."
    from trustspace.ledger.evm import EvmLedger

    try:  # read-only: the account key is a throwaway
        reader = EvmLedger(settings.evm_rpc_url, settings.evm_contract,
                           "0x" + secrets.token_hex(32))
        return chain_anchors(reader.events(), origin)
    except (LedgerError, OSError, ValueError) as exc:
        return f"Cannot read the chain: {exc}"


@router.get("/heads")
async def heads_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    node = node_of(request)
    try:
        view = await _view(node, session)
    except ConsoleError as exc:
        return _error(session, exc, "heads")
    roots: dict[int, str] = {}
    for text in view.bundle.get("checkpoints", []) or []:
        try:
            cp = SignedNote.parse(text).checkpoint()
        except (LedgerError, ValueError):
            continue
        roots[cp.size] = cp.root_hash.hex()
    chain = await run_in_threadpool(_on_chain, node, str(view.bundle.get("origin")))
    on_chain = (f"<p>{h(chain)}</p>" if isinstance(chain, str) else
                f'<table id="chain"><tr><th>size</th><th>root</th><th>tx</th><th>block</th>'
                f"<th>matches the log</th></tr>{_anchor_rows(chain, roots)}</table>")
    anchor_findings = [f for f in view.report.findings if f.where.startswith("anchor")
                       or f.where.startswith("checkpoint")]
    body = (f"{_summary(view.report)}{_heads(view, node.authority_key)}"
            f"<h2>Chain anchors in the bundle</h2>"
            f'<table id="anchors"><tr><th>size</th><th>root</th><th>tx</th><th>block</th>'
            f"<th>matches the log</th></tr>"
            f"{_anchor_rows(view.bundle.get('anchors', []) or [], roots)}</table>"
            f"<h2>Anchors read from the chain</h2>{on_chain}"
            f"<h2>Findings</h2>{_findings_table(anchor_findings)}")
    return _page("Tree heads & anchors", body, active="heads", session=session)


# ---- the style sheet ---------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#14324f;color:#fff;padding:10px 24px}.brand{font-weight:700;margin-right:6px}
nav{background:#fff;border-bottom:1px solid #d8dde3;padding:6px 24px}
nav a{margin-right:18px;text-decoration:none;color:#14324f}nav a.on{font-weight:700}
main{padding:8px 24px 40px}h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table{border-collapse:collapse;background:#fff;margin:6px 0}
td,th{border:1px solid #d8dde3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}code{font-size:12px;word-break:break-all}
.ok{color:#17703a;font-weight:600}.bad{color:#b3141b;font-weight:600}
tr.flagged,li.flagged{background:#fde8e8}tr.failure td{color:#b3141b}
.source{margin:4px 24px;color:#4a5560}form.inline{display:inline}.right{float:right}
form.filters label,form.upload label{margin-right:10px}form.upload{margin:6px 0}
form.login{display:flex;gap:10px;align-items:center}
ol.timeline{list-style:none;padding-left:0;border-left:3px solid #14324f;margin-left:10px}
li.step{background:#fff;margin:0 0 12px 14px;padding:8px 12px;border:1px solid #d8dde3;
border-radius:6px}li.step .kind{font-weight:700;text-transform:uppercase;font-size:12px}
li.step .when{float:right;color:#4a5560}li.refusal .kind{color:#9a5b00}
li.delivery .kind{color:#17703a}dl.fields dt,dl.proof dt{font-weight:600}
dl.fields dd,dl.proof dd{margin:0 0 4px 16px}pre{background:#fff;padding:8px;
border:1px solid #d8dde3;overflow:auto}
svg{background:#fff;border:1px solid #d8dde3}svg text{font:12px system-ui,sans-serif}
svg .head{font-weight:700}svg rect.participant{fill:#dbe8f5;stroke:#14324f}
svg rect.product{fill:#e4f3e7;stroke:#17703a}svg rect.other{fill:#f1f1f1;stroke:#777}
svg line.offers{stroke:#17703a;stroke-width:2}svg path.agreement{stroke:#14324f;fill:none;
stroke-width:3}svg path.agreement.bad{stroke:#b3141b;stroke-dasharray:6 3}
"""


@router.get("/static/console.css")
def stylesheet() -> Response:
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=300"})

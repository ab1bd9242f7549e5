"""Jobs over the Dataspace Protocol 2025-1 transfer process binding: the provider's endpoints
and the consumer's callbacks (every node is both: the pid in the path says which of our jobs),
and the operators' management endpoints (`trustspace run`, `trustspace jobs`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from trustspace.contracts.tables import Agreement, Negotiation
from trustspace.crypto import Envelope, open_sealed
from trustspace.crypto.jcs import load_json
from trustspace.federated.keys import BindingInvalid, verify_binding
from trustspace.registry.classification import ComputeMode
from trustspace.registry.credentials import CredentialInvalid, iso, verify_membership
from trustspace.sandbox import fl_jobs, jobs, transfer
from trustspace.sandbox.tables import Job
from trustspace.sandbox.transfer import TransferInvalid, TransferState

from .auth import Caller, member, node_of, operator
from .client import NodeClient, RemoteError
from .errors import ApiError
from .negotiation_api import me
from .node import MEMBERSHIP_STATE, Node

router = APIRouter(prefix="/transfers", tags=["protocol: transfers (jobs)"])
manage = APIRouter(prefix="/api/jobs", tags=["management: jobs"])
AnyMember = Annotated[Caller, Depends(member())]
Operator = Annotated[Node, Depends(operator)]


def _error(exc: TransferInvalid, provider_pid: str | None = None,
           consumer_pid: str | None = None) -> JSONResponse:
    return JSONResponse(transfer.error(provider_pid, consumer_pid, exc.code, [exc.detail]),
                        status_code=exc.status)


def _process(job: Job) -> dict[str, Any]:
    return transfer.process(job.provider_pid, job.consumer_pid, TransferState(job.state))


def _kick(node: Node) -> None:
    node.outbox.kick()
    node.receipts.kick()
    node.jobs.kick()


async def _handle(node: Node, caller: Caller, expected: str,
                  work: Callable[[Session, transfer.Parsed], Job],
                  status: int = 200,
                  extra: Callable[[Job], dict[str, Any]] | None = None) -> JSONResponse:
    parsed: transfer.Parsed | None = None
    try:
        try:
            parsed = transfer.parse(json.loads(caller.body or b"null"), expected)
        except ValueError as exc:
            raise TransferInvalid(400, "malformed", str(exc)) from None

        def transaction() -> tuple[dict[str, Any], dict[str, Any] | None]:
            assert parsed is not None  # noqa: S101 - set above
            with node.db.transaction() as session:
                job = work(session, parsed)
                refused = None
                if job.role == "provider" and job.outcome == "refused" and \
                        expected == "TransferRequestMessage":
                    refused = transfer.error(job.pid, job.consumer_pid,
                                             (job.reason or {}).get("code", "refused"),
                                             [(job.reason or {}).get("detail", "")],
                                             job.receipt_id)
                answer = _process(job)
                if refused is None and extra is not None:
                    answer.update(extra(job))
                return answer, refused

        answer, refused = await run_in_threadpool(transaction)
    except TransferInvalid as exc:
        return _error(exc, parsed.provider_pid if parsed else None,
                      parsed.consumer_pid if parsed else None)
    _kick(node)
    if refused is not None:  # kept, with its refusal receipt; the consumer is told why
        return JSONResponse(refused, status_code=403)
    return JSONResponse(answer, status_code=status)


def _role_of(node: Node, pid: str) -> str | None:
    with node.db.read() as session:
        job = session.get(Job, pid)
        return job.role if job else None


# ---- protocol --------------------------------------------------------------------------------

@router.post("/request", status_code=201)
async def transfer_request(request: Request,
                           caller: Annotated[Caller, Depends(member("consumer"))]
                           ) -> JSONResponse:
    """A consumer asks to run code under an agreement (format ts:compute+<mode>)."""
    node = node_of(request)
    party = me(node)

    def supernode(job: Job) -> dict[str, Any]:
        # A federated job's answer names the SuperNode key this node will connect with.
        if job.mode != ComputeMode.FEDERATED.value or TransferState(job.state).final:
            return {}
        return {fl_jobs.SUPERNODE: fl_jobs.supernode_binding(
            node.settings.home, job.pid, party.participant_id, node.key,
            node.state(MEMBERSHIP_STATE))}

    return await _handle(node, caller, "TransferRequestMessage", lambda s, m: jobs.on_request(
        s, party, caller.membership, m, node.clock()), status=201, extra=supernode)


@router.get("/{pid}")
def transfer_process(pid: str, request: Request, caller: AnyMember) -> JSONResponse:
    node = node_of(request)
    with node.db.read() as session:
        job = session.get(Job, pid)
        if job is None or job.counterparty_id != caller.participant_id:
            return _error(TransferInvalid(404, "unknown-transfer", f"no transfer {pid}"))
        return JSONResponse(_process(job))


@router.post("/{pid}/start")
async def transfer_start(pid: str, request: Request, caller: AnyMember) -> JSONResponse:
    node = node_of(request)
    if _role_of(node, pid) != "consumer":  # providers start their own jobs
        return _error(TransferInvalid(400, "unsupported", "the provider starts its jobs"))
    return await _handle(node, caller, "TransferStartMessage", lambda s, m: jobs.on_start(
        s, caller.membership, m, pid, node.clock()))


@router.post("/{pid}/completion")
async def transfer_completion(pid: str, request: Request, caller: AnyMember) -> JSONResponse:
    node = node_of(request)
    role = _role_of(node, pid)
    if role == "provider":  # only the consumer of a federated job says when its run ended
        return await _handle(node, caller, "TransferCompletionMessage",
                             lambda s, m: _federated_done(node, s, caller, m, pid))
    if role != "consumer":
        return _error(TransferInvalid(404, "unknown-transfer", f"no transfer {pid}"))
    party = me(node)

    def opener(sealed: dict[str, Any], aad: bytes) -> bytes:
        try:
            return open_sealed(Envelope.from_json(sealed), node.key, aad)
        except Exception as exc:
            raise TransferInvalid(400, "result-unreadable", str(exc)) from None

    return await _handle(node, caller, "TransferCompletionMessage",
                         lambda s, m: jobs.on_completion(s, party, caller.membership, m, pid,
                                                         node.clock(), opener))


def _federated_done(node: Node, session: Session, caller: Caller, msg: transfer.Parsed,
                    pid: str) -> Job:
    job = session.get(Job, pid)
    if job is None or job.role != "provider" or job.counterparty_id != caller.participant_id \
            or msg.consumer_pid != job.consumer_pid:
        raise TransferInvalid(404, "unknown-transfer", f"no transfer {pid} with you")
    if job.mode != ComputeMode.FEDERATED.value:
        raise TransferInvalid(400, "unsupported", "the provider completes its jobs")
    summary = msg.body.get(transfer.SUMMARY)
    if not isinstance(summary, dict):
        raise TransferInvalid(400, "malformed", f"{transfer.SUMMARY} must be an object")
    fl_jobs.consumer_done(node.settings.home, pid, summary)
    return job


@router.post("/{pid}/termination")
async def transfer_termination(pid: str, request: Request, caller: AnyMember) -> JSONResponse:
    node = node_of(request)
    if _role_of(node, pid) != "consumer":
        return _error(TransferInvalid(400, "unsupported", "ask the provider's operator to stop "
                                      "a running job"))
    return await _handle(node, caller, "TransferTerminationMessage",
                         lambda s, m: jobs.on_termination(s, caller.membership, m, pid,
                                                          node.clock()))


# ---- management --------------------------------------------------------------------------------

def view(job: Job, *, full: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "pid": job.pid, "role": job.role, "state": job.state, "providerPid": job.provider_pid,
        "consumerPid": job.consumer_pid, "counterparty": job.counterparty_id,
        "agreementId": job.agreement_id, "dataset": job.dataset_id, "mode": job.mode,
        "codeDigest": job.code_digest, "approval": job.approval, "outcome": job.outcome,
        "reason": job.reason, "receiptId": job.receipt_id, "resultDigest": job.result_digest,
        "resultBytes": job.result_bytes, "attempts": job.attempts,
        "claimedBy": job.claimed_by,
        "createdAt": iso(job.created_at),
        "finishedAt": iso(job.finished_at) if job.finished_at else None,
    }
    if job.mode == "federated" and job.role == "consumer":
        shown["progress"] = job.progress or []
    if full:
        shown["parameters"] = job.parameters
        shown["decision"] = job.decision
        shown["code"] = base64.b64encode(job.code).decode()
        if job.role == "provider":
            shown["log"] = job.log
    return shown


@manage.post("", status_code=201)
async def run_job(node: Operator, agreement: Annotated[str, Body(embed=True)],
                  code: Annotated[str, Body(embed=True, description="base64 of the bundle")],
                  parameters: Annotated[dict[str, Any] | None, Body(embed=True)] = None,
                  purpose: Annotated[str | None, Body(embed=True)] = None,
                  mode: Annotated[str, Body(embed=True)] = "sandbox") -> dict[str, Any]:
    """As consumer: send code to run under an agreement; answers once the provider took (or
    refused) the request. Follow the job with GET /api/jobs/{pid}."""
    party = me(node)
    try:
        bundle = base64.b64decode(code, validate=True)
        compute_mode = ComputeMode(mode)
    except ValueError as exc:
        raise ApiError(400, "malformed", str(exc)) from None

    def create() -> tuple[str, dict[str, Any], str]:
        with node.db.transaction() as session:
            row = session.get(Agreement, agreement)
            neg = session.get(Negotiation, row.pid) if row else None
            if row is None or neg is None:
                raise ApiError(404, "unknown-agreement", f"no agreement {agreement}")
            job, message = jobs.request_job(
                session, party, agreement_id=agreement, provider_url=neg.counterparty_url,
                code=bundle, parameters=parameters or {}, purpose=purpose, mode=compute_mode,
                now=node.clock())
            return job.pid, message, neg.counterparty_url

    try:
        pid, message, provider_url = await run_in_threadpool(create)
    except TransferInvalid as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    answer: dict[str, Any] | None = None
    refusal: tuple[str, str] | None = None
    async with NodeClient(node) as client:
        try:
            answer = await client.post(f"{provider_url.rstrip('/')}/transfers/request", message)
        except RemoteError as exc:
            if exc.status >= 500:
                raise ApiError(502, exc.reason, exc.detail) from None
            refusal = (exc.reason, exc.detail)
            answer = exc.body if isinstance(exc.body, dict) else None

    def record() -> dict[str, Any]:
        with node.db.transaction() as session:
            return view(jobs.requested(session, pid, answer, node.clock(), refusal))

    shown = await run_in_threadpool(record)
    if compute_mode is ComputeMode.FEDERATED and refusal is None:
        shown["superNode"] = _checked_supernode(node, answer or {}, shown["counterparty"])
    return shown


def _checked_supernode(node: Node, answer: dict[str, Any], provider_id: str) -> dict[str, Any]:
    """The provider's SuperNode key, checked: its membership credential against the trust
    anchor, then its SM2 binding of the key."""
    offered = answer.get(fl_jobs.SUPERNODE)
    if not isinstance(offered, dict):
        raise ApiError(502, "no-supernode", "the provider named no SuperNode key")
    try:
        membership = verify_membership(offered.get("credential") or {}, node.authority_key,
                                       now=node.clock(), is_revoked=node.is_revoked)
        if membership.participant_id != provider_id:
            raise CredentialInvalid("wrong-participant", "the credential is another's")
        verify_binding(offered.get("binding") or {}, provider_id, membership.public_key)
    except (CredentialInvalid, BindingInvalid) as exc:
        raise ApiError(502, "supernode-key-invalid", str(exc)) from None
    return {"binding": offered["binding"],
            "providerKey": membership.public_key.to_pem().decode()}


@manage.post("/{pid}/federated-done")
async def federated_done(pid: str, node: Operator,
                         summary: Annotated[dict[str, Any], Body(embed=True)]
                         ) -> dict[str, Any]:
    """As consumer: the training run of federated job `pid` ended; tell its provider, which
    stops its SuperNode and completes the job with its delivery receipt."""
    def send() -> dict[str, Any]:
        with node.db.transaction() as session:
            job = session.get(Job, pid)
            if job is None or job.role != "consumer" or job.mode != "federated" or \
                    job.provider_pid is None:
                raise ApiError(404, "unknown-job", f"no federated job {pid} of ours")
            message = transfer.run_ended(job.provider_pid, pid, summary)
            jobs.send(session, job, f"/transfers/{job.provider_pid}/completion", message,
                      node.clock())
            return view(job)

    shown = await run_in_threadpool(send)
    _kick(node)
    return shown


_PROGRESS_KEYS = {"kind", "round", "replied", "failed", "seconds"}
MAX_PROGRESS = 1000  # exchanges kept per job (a run of max_rounds has 2 per round and a few)


def _progress_line(line: dict[str, Any]) -> dict[str, Any]:
    """One exchange as the CLI reports it: no metrics (which ones a consumer may see is each
    provider's rule, known at the end), names and numbers only."""
    names = (line.get("replied"), line.get("failed"))
    if set(line) != _PROGRESS_KEYS or not isinstance(line["kind"], str) \
            or not 0 < len(line["kind"]) <= 40 or type(line["round"]) is not int \
            or not isinstance(line["seconds"], int | float) \
            or not all(isinstance(n, list) and len(n) <= 1000 and
                       all(isinstance(x, str) and len(x) <= 200 for x in n) for n in names):
        raise ApiError(400, "progress-invalid",
                       f"progress is {{{', '.join(sorted(_PROGRESS_KEYS))}}}: kind a string, "
                       "round an integer, replied and failed lists of names, seconds a number")
    return {k: line[k] for k in sorted(_PROGRESS_KEYS)}


@manage.post("/{pid}/federated-progress")
def federated_progress(pid: str, node: Operator,
                       progress: Annotated[dict[str, Any], Body(embed=True)]
                       ) -> dict[str, Any]:
    """As consumer: one exchange of federated job `pid`'s run ended (a query, a train or an
    evaluate round); kept with the job so that its API shows the run as it goes."""
    line = _progress_line(progress)
    with node.db.transaction() as session:
        job = session.get(Job, pid, with_for_update=True)
        if job is None or job.role != "consumer" or job.mode != "federated":
            raise ApiError(404, "unknown-job", f"no federated job {pid} of ours")
        if job.state in ("COMPLETED", "TERMINATED"):
            raise ApiError(409, "job-ended", f"job {pid} is {job.state}")
        kept = list(job.progress or [])
        if len(kept) >= MAX_PROGRESS:
            raise ApiError(409, "progress-full", f"{MAX_PROGRESS} exchanges kept already")
        job.progress = [*kept, line]  # a new list: the JSON column sees the change
        return {"pid": pid, "exchanges": len(job.progress)}


@manage.get("")
def list_jobs(node: Operator, role: str | None = None, state: str | None = None,
              pending: bool = False,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if role:
        query = query.where(Job.role == role)
    if state:
        query = query.where(Job.state == state)
    if pending:
        query = query.where(Job.approval == "pending", Job.state == "REQUESTED")
    with node.db.read() as session:
        return {"jobs": [view(j) for j in session.scalars(query)]}


@manage.get("/{pid}")
def show_job(pid: str, node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        job = session.get(Job, pid)
        if job is None:
            raise ApiError(404, "unknown-job", pid)
        return view(job, full=True)


@manage.get("/{pid}/result")
def job_result(pid: str, node: Operator) -> dict[str, Any]:
    """As consumer: the released result, opened with this node's key."""
    with node.db.read() as session:
        job = session.get(Job, pid)
        if job is None or job.role != "consumer":
            raise ApiError(404, "unknown-job", pid)
        if job.result is None:
            raise ApiError(409, "no-result", f"job {pid} is {job.state}, with no result")
        sealed, digest, mode = job.result, job.result_digest, job.mode
    plain = open_sealed(Envelope.from_json(sealed), node.key, pid.encode())
    if mode == ComputeMode.HOMOMORPHIC.value:  # ciphertexts: `trustspace he` decrypts them
        return {"pid": pid, "resultDigest": digest,
                "encrypted": base64.b64encode(plain).decode()}
    return {"pid": pid, "resultDigest": digest, "result": load_json(plain)}


async def _decide(node: Node, pid: str, work: Callable[[Session], Job]) -> dict[str, Any]:
    def transaction() -> dict[str, Any]:
        with node.db.transaction() as session:
            return view(work(session))

    try:
        shown = await run_in_threadpool(transaction)
    except TransferInvalid as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    _kick(node)
    return shown


@manage.post("/{pid}/approve")
async def approve_job(pid: str, node: Operator) -> dict[str, Any]:
    """As provider: the operator approves the code of a job that waits for it."""
    party = me(node)
    return await _decide(node, pid, lambda s: jobs.approve(s, party, pid, node.clock()))


@manage.post("/{pid}/refuse")
async def refuse_job(pid: str, node: Operator,
                     reason: Annotated[str, Body(embed=True)] = "refused by the operator"
                     ) -> dict[str, Any]:
    party = me(node)
    return await _decide(node, pid, lambda s: jobs.refuse(s, party, pid, reason, node.clock()))

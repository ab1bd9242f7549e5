"""Jobs as plain functions over a database session, like the negotiation engine: each inbound
message, operator decision or worker step is one transaction that checks the transition, moves
the state, writes the receipts it causes and the next outgoing message (the outbox sends it).

Provider: a request is checked (the consumer's signed job request, the agreement and that it
was not terminated or revoked, the policy engine: valid, purpose, mode, remaining uses consumed
atomically), then queued or held for the operator's approval; every refusal leaves a refusal
receipt. A worker claims a queued job (`claim`), reports it started, runs it (outside any
transaction) and `finish`es it: the released result sealed to the consumer, a delivery receipt
for the consumer to countersign.

Consumer: `request_job` signs the job request; the provider's start, completion and termination
messages move its copy; a completed job's sealed result is kept and opened on demand.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustspace.contracts import AgreementEnded, in_force, usage
from trustspace.contracts.negotiation import Me
from trustspace.contracts.policy import Decision, Request, evaluate
from trustspace.contracts.tables import Agreement, OutboxMessage
from trustspace.crypto import (
    DocumentInvalid,
    SignedDocument,
    SM2PublicKey,
    seal,
    sign_document,
    sm3,
    verify_document,
)
from trustspace.federated.policy import FederatedRefused
from trustspace.federated.policy import RefusalReason as FederatedReason
from trustspace.homomorphic.errors import HomomorphicRefused, RefusalReason
from trustspace.ledger import receipts, store
from trustspace.registry.classification import ComputeMode
from trustspace.registry.credentials import Membership, iso
from trustspace.registry.products import ProductSpec
from trustspace.registry.tables import ProductVersion

from . import transfer
from .tables import Job
from .transfer import TransferInvalid, TransferState

MAX_CODE_BYTES = 512 * 1024
# A homomorphic job's "code" is the consumer's public context and ciphertexts (he_jobs).
MAX_HE_REQUEST_BYTES = 64 * 1024 * 1024
MAX_ATTEMPTS = 2  # a job whose worker died is run once more, then failed


class JobRefused(TransferInvalid):
    """Refused by policy: the job is TERMINATED (and kept, with its refusal receipt)."""

    def __init__(self, job: Job, status: int, code: str, detail: str) -> None:
        self.job = job
        super().__init__(status, code, detail)


def digest_of(value: Any) -> str:
    return receipts.digest_of(value)


def max_code_bytes(mode: str) -> int:
    return MAX_HE_REQUEST_BYTES if mode == ComputeMode.HOMOMORPHIC.value else MAX_CODE_BYTES


def _code_digest(code: bytes) -> str:
    return "sm3:" + sm3(code).hex()


def send(session: Session, job: Job, path: str, message: dict[str, Any], now: datetime
          ) -> None:
    session.add(OutboxMessage(pid=job.pid, url=f"{job.counterparty_url.rstrip('/')}{path}",
                              message=message, attempts=0, next_attempt_at=now, failed=False,
                              created_at=now))


def _move(job: Job, event: str, now: datetime) -> None:
    job.state = transfer.next_state(TransferState(job.state), event).value
    job.updated_at = now


# ---- consumer ---------------------------------------------------------------------------------

def request_job(session: Session, me: Me, *, agreement_id: str, provider_url: str,
                code: bytes, parameters: Mapping[str, Any], purpose: str | None,
                mode: ComputeMode, now: datetime) -> tuple[Job, dict[str, Any]]:
    """A new job under one of our agreements (as consumer); returns it and the request message
    to send to the provider."""
    agreement = session.get(Agreement, agreement_id)
    if agreement is None or agreement.role != "consumer" or agreement.consumer_id != \
            me.participant_id:
        raise TransferInvalid(404, "unknown-agreement", f"no agreement {agreement_id} of ours")
    try:  # refused here, before anything is sent: the provider would refuse it anyway
        in_force(agreement)
    except AgreementEnded as exc:
        raise TransferInvalid(409, exc.code, exc.detail) from None
    if len(code) > max_code_bytes(mode.value):
        raise TransferInvalid(413, "code-too-large",
                              f"the code bundle exceeds {max_code_bytes(mode.value)} bytes")
    pid = f"urn:uuid:{uuid.uuid4()}"
    body = {"consumerPid": pid, "agreementId": agreement_id,
            "agreementDigest": agreement.digest, "provider": agreement.provider_id,
            "consumer": me.participant_id, "dataset": agreement.dataset_id, "mode": mode.value,
            "purpose": purpose, "codeDigest": _code_digest(code),
            "parametersDigest": digest_of(dict(parameters)), "requestedAt": iso(now)}
    doc = sign_document(transfer.JOB_REQUEST_TYPE, body, me.signer, role="consumer",
                        signed_at=iso(now))
    job = Job(pid=pid, role="consumer", provider_pid=None, consumer_pid=pid,
              state=TransferState.REQUESTED.value, counterparty_id=agreement.provider_id,
              counterparty_url=provider_url, agreement_id=agreement_id,
              dataset_id=agreement.dataset_id, mode=mode.value, code=code,
              code_digest=body["codeDigest"], parameters=dict(parameters),
              request=doc.to_json(), request_digest=doc.digest, approval="not-required",
              queued=False, attempts=0, created_at=now, updated_at=now)
    session.add(job)
    message = transfer.request(pid, agreement_id, mode.value, me.public_url, doc.to_json(),
                               base64.urlsafe_b64encode(code).decode(), dict(parameters))
    return job, message


def requested(session: Session, pid: str, answer: Mapping[str, Any] | None, now: datetime,
              refusal: tuple[str, str] | None = None) -> Job:
    """The provider answered our request: its pid and state, or a refusal (code, reason)."""
    job = _local(session, pid, "consumer")
    if refusal is not None:
        job.state = TransferState.TERMINATED.value
        job.outcome = "refused"
        job.reason = {"code": refusal[0], "detail": refusal[1]}
        receipt = (answer or {}).get(transfer.RECEIPT)
        job.receipt_id = receipt if isinstance(receipt, str) else None
        job.provider_pid = str((answer or {}).get("providerPid") or "") or None
        job.finished_at = now
    elif answer is not None:
        job.provider_pid = str(answer.get("providerPid") or job.provider_pid or "") or None
        state = answer.get("state")
        if isinstance(state, str) and state in TransferState.__members__:
            job.state = state
    job.updated_at = now
    return job


def on_start(session: Session, sender: Membership, msg: transfer.Parsed, pid: str,
             now: datetime) -> Job:
    job = _theirs(session, pid, sender, msg)
    if job.state == TransferState.REQUESTED.value:
        _move(job, "start", now)
        job.started_at = now
    return job


def on_completion(session: Session, me: Me, sender: Membership, msg: transfer.Parsed, pid: str,
                  now: datetime, open_result: Any) -> Job:
    """The result arrived: open it (we must be able to), check its digest, keep it sealed."""
    job = _theirs(session, pid, sender, msg)
    if job.state == TransferState.COMPLETED.value:
        return job
    sealed = msg.object(transfer.RESULT)
    plain = open_result(sealed, job.pid.encode())
    digest = "sm3:" + sm3(plain).hex()
    if job.state not in (TransferState.STARTED.value, TransferState.REQUESTED.value):
        raise TransferInvalid(409, "illegal-transition", f"cannot complete a {job.state} job")
    job.state = TransferState.COMPLETED.value
    job.result, job.result_digest, job.result_bytes = sealed, digest, len(plain)
    job.receipt_id = msg.body.get(transfer.RECEIPT) if isinstance(
        msg.body.get(transfer.RECEIPT), str) else None
    job.outcome, job.finished_at, job.updated_at = "succeeded", now, now
    return job


def on_termination(session: Session, sender: Membership, msg: transfer.Parsed, pid: str,
                   now: datetime) -> Job:
    job = _theirs(session, pid, sender, msg)
    if TransferState(job.state).final:
        return job
    _move(job, "terminate", now)
    code = msg.body.get("code")
    reason = msg.body.get("reason")
    job.reason = {"code": code, "detail": "; ".join(map(str, reason)) if isinstance(
        reason, list) else str(reason)}
    receipt = msg.body.get(transfer.RECEIPT)
    job.receipt_id = receipt if isinstance(receipt, str) else None
    job.outcome = "refused" if code in REFUSAL_CODES else "withheld" if code == WITHHELD \
        else "failed"
    job.finished_at = now
    return job


def _theirs(session: Session, pid: str, sender: Membership, msg: transfer.Parsed) -> Job:
    job = session.get(Job, pid, with_for_update=True)
    if job is None or job.role != "consumer" or job.counterparty_id != sender.participant_id:
        raise TransferInvalid(404, "unknown-transfer", f"no transfer {pid} with you")
    if msg.consumer_pid != job.consumer_pid:
        raise TransferInvalid(400, "pid-mismatch", "consumerPid does not match the path")
    if job.provider_pid is None:
        job.provider_pid = msg.provider_pid
    elif msg.provider_pid != job.provider_pid:
        raise TransferInvalid(400, "pid-mismatch", "providerPid is not the one we know")
    return job


# ---- provider ---------------------------------------------------------------------------------

REFUSAL_CODES = {"policy-denied", "uses-exhausted", "refused-by-operator", "release-refused",
                 "mode-unsupported", "agreement-terminated", "agreement-revoked",
                 # homomorphic and federated refusals (he_jobs / fl_jobs.refusal_code)
                 *("he-" + r.value.replace("_", "-") for r in RefusalReason),
                 *("fl-" + r.value for r in FederatedReason), "fl-holdout-too-small"}
# A provider's release check (fl_jobs, trustspace.federated.disclosure) withheld a federated
# model: the job ends with a delivery receipt whose outcome is "withheld".
WITHHELD = "fl-model-withheld"
RUNS: tuple[ComputeMode, ...] = tuple(ComputeMode)


def on_request(session: Session, me: Me, sender: Membership, msg: transfer.Parsed,
               now: datetime, modes: Sequence[ComputeMode] = RUNS) -> Job:
    """A consumer asks to run code under an agreement. Idempotent by (consumer, consumerPid)."""
    consumer_pid = str(msg.consumer_pid)
    known = session.scalar(select(Job).where(
        Job.role == "provider", Job.counterparty_id == sender.participant_id,
        Job.consumer_pid == consumer_pid))
    if known is not None:
        return known
    agreement_id = msg.text("agreementId")
    fmt = msg.text("format")
    callback = msg.text("callbackAddress")
    if not fmt.startswith(transfer.FORMAT_PREFIX):
        raise TransferInvalid(400, "unsupported-format", f"this node runs {transfer.FORMAT_PREFIX}"
                              "<mode> transfers, not {fmt}")
    try:
        code = base64.urlsafe_b64decode(msg.text(transfer.CODE))
    except ValueError:
        raise TransferInvalid(400, "malformed", f"{transfer.CODE} is not base64url") from None
    limit = max_code_bytes(fmt.removeprefix(transfer.FORMAT_PREFIX))
    if len(code) > limit:
        raise TransferInvalid(413, "code-too-large", f"the code bundle exceeds {limit} bytes")
    try:
        doc = verify_document(msg.object(transfer.JOB_REQUEST), [sender.public_key],
                              expected_type=transfer.JOB_REQUEST_TYPE,
                              required_signers=[sender.key_id])
    except DocumentInvalid as exc:
        raise TransferInvalid(400, "job-request-invalid", str(exc)) from None
    body = doc.body
    agreement = session.get(Agreement, agreement_id)
    if agreement is None or agreement.role != "provider" or \
            agreement.consumer_id != sender.participant_id:
        raise TransferInvalid(404, "unknown-agreement", f"no agreement {agreement_id} with you")
    expected = {"consumerPid": consumer_pid, "agreementId": agreement_id,
                "agreementDigest": agreement.digest, "provider": me.participant_id,
                "consumer": sender.participant_id, "mode": fmt.removeprefix(
                    transfer.FORMAT_PREFIX), "codeDigest": _code_digest(code)}
    wrong = sorted(k for k, v in expected.items() if body.get(k) != v)
    if wrong:
        raise TransferInvalid(400, "job-request-mismatch",
                              f"the signed job request does not match: {wrong}")
    params = msg.body.get(transfer.PARAMETERS, {})
    if not isinstance(params, dict) or digest_of(params) != body.get("parametersDigest"):
        raise TransferInvalid(400, "job-request-mismatch", "parameters do not match their digest")
    job = Job(pid=f"urn:uuid:{uuid.uuid4()}", role="provider", provider_pid=None,
              consumer_pid=consumer_pid, state=TransferState.REQUESTED.value,
              counterparty_id=sender.participant_id, counterparty_url=callback,
              agreement_id=agreement_id, dataset_id=agreement.dataset_id,
              mode=str(expected["mode"]), code=code, code_digest=str(expected["codeDigest"]),
              parameters=params, request=doc.to_json(), request_digest=doc.digest,
              approval="not-required", queued=False, attempts=0, created_at=now,
              updated_at=now, counterparty_key=sender.public_key.to_pem().decode())
    job.provider_pid = job.pid
    session.add(job)
    session.flush()
    try:
        in_force(agreement)
    except AgreementEnded as exc:
        _refuse(session, me, job, agreement, exc.code, exc.detail, now)
        return job
    if job.mode not in {m.value for m in modes}:
        _refuse(session, me, job, agreement, "mode-unsupported",
                f"this node does not run {job.mode} jobs", now)
        return job
    decision = evaluate(agreement.document["body"]["agreement"], Request(
        assignee=sender.participant_id, roles=sender.roles, purpose=body.get("purpose"),
        target=agreement.dataset_id, compute_mode=ComputeMode(job.mode),
        code_digest=job.code_digest), now=now,
        uses_so_far=usage.uses(session, agreement_id))
    job.decision = decision.to_json()
    if not decision.permitted:
        _refuse(session, me, job, agreement, "policy-denied",
                f"{decision.reason} ({decision.path})", now)
        return job
    if job.mode == ComputeMode.HOMOMORPHIC.value:
        problem = _he_precheck(session, job, agreement)
        if problem is not None:
            _refuse(session, me, job, agreement, *problem, now)
            return job
    if job.mode == ComputeMode.FEDERATED.value:
        problem, unapproved_app = _fl_precheck(session, job, agreement)
        if problem is not None:
            _refuse(session, me, job, agreement, *problem, now)
            return job
        if unapproved_app:  # the operator approves the app (its digest is in the request)
            job.approval = "pending"
            return job
    if decision.approval_required:
        job.approval = "pending"
        return job
    _queue(session, me, job, agreement, decision, now)
    return job


def product_spec(session: Session, agreement: Agreement) -> ProductSpec | None:
    """The product's spec at the version whose data the agreement names, if still held."""
    row = session.execute(select(ProductVersion).where(
        ProductVersion.product_id == agreement.dataset_id,
        ProductVersion.data_digest == agreement.data_digest)
        .order_by(ProductVersion.version.desc()).limit(1)).scalar()
    return None if row is None else ProductSpec.from_json(row.spec)


def _fl_precheck(session: Session, job: Job, agreement: Agreement
                 ) -> tuple[tuple[str, str] | None, bool]:
    """A federated request's checks (fl_jobs.precheck): (refusal, needs the operator)."""
    from .fl_jobs import precheck, refusal_code

    spec = product_spec(session, agreement)
    if spec is None:
        return ("fl-mode-not-allowed", f"the data of {job.dataset_id} is no longer held"), False
    try:
        checked = precheck(job.code, job.parameters or {}, spec)
    except FederatedRefused as exc:
        return (refusal_code(exc.reason), exc.detail), False
    return None, checked.needs_approval


def _he_precheck(session: Session, job: Job, agreement: Agreement) -> tuple[str, str] | None:
    """A homomorphic request's checks that need no TenSEAL (he_jobs.precheck), at once, so
    the consumer hears of a refusal in the answer to its request."""
    from .he_jobs import precheck, refusal_code

    spec = product_spec(session, agreement)
    if spec is None:
        return "he-program-not-allowed", f"the data of {job.dataset_id} is no longer held"
    try:
        precheck(job.code, job.parameters or {}, spec, job.decision or {})
    except HomomorphicRefused as exc:
        return refusal_code(exc.reason), exc.detail
    return None


def _queue(session: Session, me: Me, job: Job, agreement: Agreement, decision: Decision,
           now: datetime) -> None:
    try:
        in_force(agreement)  # it may have ended while the job waited for approval
        usage.consume(session, agreement.agreement_id, decision.use_limit, now)
    except AgreementEnded as exc:
        _refuse(session, me, job, agreement, exc.code, exc.detail, now)
        return
    except usage.UsesExhausted as exc:
        _refuse(session, me, job, agreement, "uses-exhausted", str(exc), now)
        return
    job.queued = True


def approve(session: Session, me: Me, pid: str, now: datetime) -> Job:
    job = _local(session, pid, "provider")
    if job.approval != "pending" or job.state != TransferState.REQUESTED.value:
        raise TransferInvalid(409, "not-pending", f"job {pid} is not waiting for approval")
    agreement = session.get(Agreement, job.agreement_id)
    assert agreement is not None  # noqa: S101 - checked when the request arrived
    job.approval = "approved"
    decision = Decision(permitted=True, policy_id=None, path="", reason="approved",
                        use_limit=(job.decision or {}).get("useLimit"))
    _queue(session, me, job, agreement, decision, now)
    return job


def refuse(session: Session, me: Me, pid: str, reason: str, now: datetime) -> Job:
    job = _local(session, pid, "provider")
    if job.approval != "pending" or job.state != TransferState.REQUESTED.value:
        raise TransferInvalid(409, "not-pending", f"job {pid} is not waiting for approval")
    agreement = session.get(Agreement, job.agreement_id)
    assert agreement is not None  # noqa: S101 - checked when the request arrived
    job.approval = "refused"
    _refuse(session, me, job, agreement, "refused-by-operator", reason, now)
    return job


def _parties(me: Me, job: Job, agreement: Agreement) -> receipts.Parties:
    return receipts.Parties(provider=me.participant_id, consumer=job.counterparty_id,
                            agreement_id=agreement.agreement_id,
                            agreement_digest=agreement.digest)


def _consumer_key(job: Job) -> SM2PublicKey:
    return SM2PublicKey.from_pem(job.counterparty_key.encode())


def _refuse(session: Session, me: Me, job: Job, agreement: Agreement, code: str, detail: str,
            now: datetime) -> None:
    """End the job refused, with a refusal receipt (signed by us alone) and the termination
    message carrying its id."""
    content = receipts.Refusal(subject_digest=job.request_digest, rule=code, reason=detail,
                               details={"decision": job.decision,
                                        "parameters": job.parameters})
    doc = receipts.issue(content, _parties(me, job, agreement), me.signer, "provider", now,
                         [_consumer_key(job), *me.regulators])
    store.keep(session, doc, status=store.PENDING, now=now)
    job.queued = False
    job.state = TransferState.TERMINATED.value
    job.outcome = "refused"
    job.reason = {"code": code, "detail": detail}
    job.receipt_id = str(doc.body["id"])
    job.finished_at = job.updated_at = now
    send(session, job, f"/transfers/{job.consumer_pid}/termination",
          transfer.termination(job.pid, job.consumer_pid, code, [detail], job.receipt_id), now)


def claim(session: Session, worker: str, now: datetime, lease: timedelta) -> Job | None:
    """Take the oldest queued job no live worker holds (a worker that died lets its lease
    expire); rows are locked with SKIP LOCKED so workers never take the same job."""
    query = (select(Job).where(
        Job.role == "provider", Job.queued.is_(True),
        Job.state.in_((TransferState.REQUESTED.value, TransferState.STARTED.value)),
        (Job.lease_until.is_(None)) | (Job.lease_until < now))
        .order_by(Job.created_at).limit(1).with_for_update(skip_locked=True))
    job = session.scalar(query)
    if job is None:
        return None
    job.attempts += 1
    job.claimed_by, job.lease_until = worker, now + lease
    if job.state == TransferState.REQUESTED.value:
        _move(job, "start", now)
        job.started_at = now
        send(session, job, f"/transfers/{job.consumer_pid}/start",
              transfer.start(job.pid, job.consumer_pid), now)
    return job


@dataclass(frozen=True)
class RunReport:
    """What a worker found: the released result (canonical JSON bytes) or why not."""

    outcome: str  # succeeded | failed | refused | withheld (a model, fl_jobs)
    result: bytes | None = None
    code: str | None = None  # the failure or refusal code
    detail: str = ""
    checks: tuple[str, ...] = ()
    log: str = ""
    input_bytes: int = 0
    rows: int | None = None
    started_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # For the delivery receipt's confidential part, beside the job's parameters (under
    # FINDINGS): the numbers of a release check whose outcome the public checks name.
    findings: Mapping[str, Any] | None = None


FINDINGS = "ts:findings"


def finish(session: Session, me: Me, pid: str, worker: str, report: RunReport, now: datetime
           ) -> Job | None:
    """Record a run: complete with the sealed result and a delivery receipt, or terminate with
    a delivery receipt (failed) or a refusal receipt (the release was refused). None if the
    job is no longer this worker's (its lease expired and another took it)."""
    job = session.get(Job, pid, with_for_update=True)
    if job is None or job.claimed_by != worker or TransferState(job.state).final:
        return None
    agreement = session.get(Agreement, job.agreement_id)
    assert agreement is not None  # noqa: S101 - checked when the request arrived
    job.queued, job.lease_until, job.log = False, None, report.log[-20000:]
    if report.outcome == "refused":
        _refuse(session, me, job, agreement, report.code or "release-refused", report.detail,
                now)
        return job
    result_digest = "sm3:" + sm3(report.result).hex() if report.result is not None else None
    content = receipts.Delivery(
        job_id=job.pid, job_request_digest=job.request_digest, mode=job.mode,
        code_digest=job.code_digest, input_digest=agreement.data_digest,
        result_digest=result_digest, input_bytes=report.input_bytes,
        result_bytes=len(report.result or b""), started_at=report.started_at or now,
        finished_at=now, outcome=report.outcome, rows=report.rows, checks=report.checks,
        parameters=job.parameters if report.findings is None else {
            **(job.parameters or {}), FINDINGS: dict(report.findings)})
    doc = receipts.issue(content, _parties(me, job, agreement), me.signer, "provider", now,
                         [_consumer_key(job), *me.regulators])
    store.keep(session, doc, status=store.COUNTERSIGN, now=now,
               counterparty_url=job.counterparty_url, counterparty_key=_consumer_key(job))
    job.receipt_id = str(doc.body["id"])
    job.finished_at = job.updated_at = now
    job.outcome = report.outcome
    if report.outcome == "succeeded" and report.result is not None:
        sealed = seal(report.result, [_consumer_key(job)], job.consumer_pid.encode()).to_json()
        job.result, job.result_digest = sealed, result_digest
        job.result_bytes = len(report.result)
        _move(job, "complete", now)
        send(session, job, f"/transfers/{job.consumer_pid}/completion",
              transfer.completion(job.pid, job.consumer_pid, sealed, job.receipt_id), now)
    else:
        job.reason = {"code": report.code or "failed", "detail": report.detail}
        _move(job, "terminate", now)
        send(session, job, f"/transfers/{job.consumer_pid}/termination",
              transfer.termination(job.pid, job.consumer_pid, report.code or "failed",
                                   [report.detail], job.receipt_id), now)
    return job


def _local(session: Session, pid: str, role: str) -> Job:
    job = session.get(Job, pid, with_for_update=True)
    if job is None or job.role != role:
        raise TransferInvalid(404, "unknown-job", f"no {role} job {pid}")
    return job


def as_document(job: Job) -> SignedDocument:
    return SignedDocument.from_json(job.request)

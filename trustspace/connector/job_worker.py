"""Runs queued jobs: claims one (row lock, SKIP LOCKED, a lease), tells the consumer it started,
runs the code in the sandbox next to the product's data, has the node (not the code) decide what
of the output may leave, and finishes the job in one transaction with its receipt.

`trustspace serve` runs `job_workers` of these in-process; `trustspace worker` runs more in
their own processes against the same database (PostgreSQL), delivering the messages they write.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import logging
import os
import shutil
import socket
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from trustspace.contracts import AgreementEnded, in_force
from trustspace.contracts.policy import Decision, OutputRule
from trustspace.contracts.tables import Agreement
from trustspace.crypto import canonical_json
from trustspace.crypto.jcs import load_json
from trustspace.federated.policy import FederatedRefused
from trustspace.homomorphic.errors import HomomorphicRefused
from trustspace.registry.classification import ComputeMode
from trustspace.registry.datasource import (
    CsvSource,
    ParquetSource,
    SourceError,
    SqlSource,
    scan_source,
)
from trustspace.registry.products import ProductSpec
from trustspace.sandbox import fl_jobs, he_jobs, jobs, release
from trustspace.sandbox.bundle import unpack
from trustspace.sandbox.errors import BundleInvalid, JobInvalid
from trustspace.sandbox.runner import MIB, BubblewrapSandbox, Limits, Sandbox, SandboxJob
from trustspace.sandbox.tables import Job

from .background import Loop
from .negotiation_api import me
from .node import Node

log = logging.getLogger("trustspace.jobs")

MAX_INPUT_ROWS_CHECKED = 200_000  # rows read to check that no input row is released


class JobWorker(Loop):
    name = "job worker"

    def __init__(self, node: Node, name: str | None = None,
                 sandbox: Sandbox | None = None, idle_seconds: float = 1.0) -> None:
        super().__init__()
        self.node = node
        # How long an idle worker waits before it looks for work again. In `serve` a new job
        # kicks the workers at once; a separate `trustspace worker` learns of it only by looking.
        self.idle_seconds = idle_seconds
        self.worker_id = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.sandbox = sandbox or BubblewrapSandbox()

    async def step(self) -> float:
        return 0.0 if await self.run_once() else self.idle_seconds

    def _lease(self) -> timedelta:
        settings = self.node.settings
        longest = max(settings.job_wall_seconds, settings.fl_wall_seconds)
        return timedelta(seconds=settings.job_lease_seconds or longest + 60)

    def _claim(self) -> tuple[str, int] | None:
        with self.node.db.transaction() as session:
            job = jobs.claim(session, self.worker_id, self.node.clock(), self._lease())
            return None if job is None else (job.pid, job.attempts)

    async def run_once(self) -> bool:
        """Run one job if there is one; True if it did."""
        claimed = await run_in_threadpool(self._claim)
        if claimed is None:
            return False
        pid, attempts = claimed
        self.node.outbox.kick()  # the start message
        if attempts > jobs.MAX_ATTEMPTS:
            report = jobs.RunReport(outcome="failed", code="worker-lost",
                                    detail=f"its worker stopped {attempts - 1} time(s)")
        else:
            report = await run_in_threadpool(self.execute, pid)
        await run_in_threadpool(self._finish, pid, report)
        self.node.outbox.kick()
        self.node.receipts.kick()
        return True

    def _finish(self, pid: str, report: jobs.RunReport) -> None:
        party = me(self.node)
        with self.node.db.transaction() as session:
            jobs.finish(session, party, pid, self.worker_id, report, self.node.clock())

    # ---- running one job ------------------------------------------------------------------

    def _load(self, pid: str) -> tuple[Job, ProductSpec]:
        with self.node.db.read() as session:
            job = session.get(Job, pid)
            assert job is not None  # noqa: S101 - claimed a moment ago
            agreement = session.get(Agreement, job.agreement_id)
            assert agreement is not None  # noqa: S101 - checked at the request
            in_force(agreement)  # it may have ended while the job was queued
            spec = jobs.product_spec(session, agreement)
            if spec is None:
                raise LookupError(f"the data of {job.dataset_id} named by the agreement "
                                  f"({agreement.data_digest}) is no longer held")
            session.expunge(job)
            return job, spec

    def execute(self, pid: str) -> jobs.RunReport:
        """Run a claimed job in the sandbox and decide its release (no transaction open)."""
        started = self.node.clock()
        try:
            job, spec = self._load(pid)
        except AgreementEnded as exc:
            return jobs.RunReport(outcome="refused", code=exc.code, detail=exc.detail,
                                  started_at=started)
        except LookupError as exc:
            return jobs.RunReport(outcome="failed", code="data-unavailable", detail=str(exc),
                                  started_at=started)
        workdir = Path(tempfile.mkdtemp(prefix="ts-job-"))
        try:
            return self._execute(job, spec, workdir, started)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _execute(self, job: Job, spec: ProductSpec, workdir: Path, started: datetime
                 ) -> jobs.RunReport:
        settings = self.node.settings
        os.chmod(workdir, 0o755)  # noqa: S103 - the sandbox's user reads the code and data
        homomorphic = job.mode == ComputeMode.HOMOMORPHIC.value
        federated = job.mode == ComputeMode.FEDERATED.value
        entry: str | Path = ""
        if federated:
            try:
                fl_request = fl_jobs.precheck(job.code, job.parameters or {}, spec)
            except FederatedRefused as exc:
                return jobs.RunReport(outcome="refused", code=fl_jobs.refusal_code(exc.reason),
                                      detail=exc.detail, started_at=started)
        elif homomorphic:
            try:  # checked at the request already: the spec may have changed since
                request = he_jobs.precheck(job.code, job.parameters or {}, spec,
                                           job.decision or {})
            except HomomorphicRefused as exc:
                return jobs.RunReport(outcome="refused", code=he_jobs.refusal_code(exc.reason),
                                      detail=exc.detail, started_at=started)
        else:
            try:
                entry = unpack(job.code, workdir / "code")
            except BundleInvalid as exc:
                return jobs.RunReport(outcome="refused", code="code-invalid", detail=str(exc),
                                      started_at=started)
        data = materialize(spec, workdir / "data")
        size = data.stat().st_size
        copy: CsvSource | ParquetSource | SqlSource = spec.source
        if isinstance(copy, CsvSource):
            copy = CsvSource(kind="csv", path=data)
        elif isinstance(copy, ParquetSource):
            copy = ParquetSource(kind="parquet", path=data)
        try:
            digest = scan_source(copy, spec.columns).digest
        except SourceError as exc:
            digest = f"unreadable ({exc.reason})"
        if digest != job_data_digest(self.node, job):
            return jobs.RunReport(outcome="failed", code="data-changed", detail=(
                "the product's data is not the data the agreement names (its SM3 digest "
                "changed): re-register the product and agree again"), started_at=started)
        limits = Limits(cpu_seconds=settings.job_cpu_seconds,
                        wall_seconds=settings.job_wall_seconds,
                        memory_bytes=settings.job_memory_mb * MIB)
        if federated:
            return fl_jobs.serve(settings.home, job.pid, me(self.node).participant_id,
                                 fl_request, data, workdir, settings.fl_wall_seconds, started)
        if homomorphic:
            try:
                return he_jobs.run(self.sandbox, request, data, spec, job.decision or {},
                                   workdir, limits, started)
            except HomomorphicRefused as exc:
                return jobs.RunReport(outcome="refused", code=he_jobs.refusal_code(exc.reason),
                                      detail=exc.detail, started_at=started, input_bytes=size)
        try:
            ran = self.sandbox.run(SandboxJob(workdir / "code", entry, {spec.id: data},
                                              job.parameters, limits), workdir / "run")
        except JobInvalid as exc:
            return jobs.RunReport(outcome="failed", code="sandbox-error", detail=str(exc),
                                  started_at=started, input_bytes=size)
        log_text = (ran.stdout + b"\n--- stderr ---\n" + ran.stderr).decode(errors="replace")
        if not ran.ok:
            return jobs.RunReport(outcome="failed", code=ran.outcome.value, detail=ran.reason,
                                  log=log_text, started_at=started, input_bytes=size)
        results_file = ran.out_dir / "results.json"
        if not results_file.is_file():
            return jobs.RunReport(outcome="failed", code="no-results",
                                  detail="the job released nothing (no results.json)",
                                  log=log_text, started_at=started, input_bytes=size)
        rows = read_rows(data)
        decision = release.check_release(results_file.read_bytes(), ran.out_dir,
                                         release_rules(job, spec), rows)
        if decision.refusal is not None:
            return jobs.RunReport(outcome="refused", code="release-refused",
                                  detail=str(decision.refusal), log=log_text,
                                  started_at=started, input_bytes=size, rows=len(rows))
        payload = canonical_json({
            "release": load_json(decision.require()),
            "files": {f.name: base64.b64encode(f.content).decode() for f in decision.files}})
        return jobs.RunReport(outcome="succeeded", result=payload,
                              checks=tuple(decision.checks), log=log_text, started_at=started,
                              input_bytes=size, rows=len(rows))


def job_data_digest(node: Node, job: Job) -> str:
    with node.db.read() as session:
        agreement = session.get(Agreement, job.agreement_id)
        return agreement.data_digest if agreement else ""


def release_rules(job: Job, spec: ProductSpec) -> release.ReleaseRules:
    """The output rules of the job's policy decision, at the product's classification level."""
    decided = job.decision or {}
    rules = tuple(OutputRule(name, int(value), "")
                  for name, value in (("minAggregation", decided.get("minAggregation")),
                                      ("maxResultBytes", decided.get("maxResultBytes")))
                  if value is not None)
    decision = Decision(permitted=True, policy_id=decided.get("policy"), path="", reason="",
                        output_rules=rules)
    return release.ReleaseRules.from_decision(decision, spec.level)


def read_rows(data: Path) -> list[dict[str, Any]]:
    """The product's rows, for the release checks that compare outputs with inputs."""
    if data.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(data)
        return list(table.slice(0, MAX_INPUT_ROWS_CHECKED).to_pylist())
    with data.open(newline="", encoding="utf-8-sig") as f:
        rows = []
        for i, row in enumerate(csv.DictReader(f)):
            if i >= MAX_INPUT_ROWS_CHECKED:
                break
            rows.append(dict(row))
        return rows


def materialize(spec: ProductSpec, folder: Path) -> Path:
    """The product's data as a file the sandbox can mount read-only: CSV and Parquet sources as
    they are (hard-linked or copied, so nothing else of their folder is exposed), SQL tables
    exported to CSV."""
    folder.mkdir(parents=True)
    source = spec.source
    folder.chmod(0o755)
    if not isinstance(source, SqlSource):
        target = folder / f"{spec.id}.{source.kind}"
        shutil.copyfile(source.path, target)  # a copy: the job's user may read only this
        target.chmod(0o644)
        return target
    import sqlalchemy as sa

    target = folder / f"{spec.id}.csv"
    engine = sa.create_engine(source.url)
    try:
        with engine.connect() as conn, target.open("w", newline="") as out:
            names = [c.name for c in spec.columns]
            writer = csv.writer(out)
            writer.writerow(names)
            table = sa.table(source.table, *(sa.column(n) for n in names))
            for row in conn.execute(sa.select(table)):
                writer.writerow(list(row))
    finally:
        engine.dispose()
    target.chmod(0o644)
    return target


class JobPool:
    """`count` job workers in this process, started and kicked together."""

    def __init__(self, node: Node, count: int, idle_seconds: float = 1.0) -> None:
        self.workers = [JobWorker(node, idle_seconds=idle_seconds) for _ in range(count)]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    async def stop(self) -> None:
        for worker in self.workers:
            await worker.stop()

    def kick(self) -> None:
        for worker in self.workers:
            worker.kick()


async def run_workers(node: Node, count: int) -> None:
    """`trustspace worker`: job workers without the HTTP server, with their own outbox and
    receipt delivery (receivers take a message twice without harm)."""
    from .ledgers import make_ledger
    from .outbox import OutboxSender
    from .receipt_worker import ReceiptWorker

    node.outbox = OutboxSender(node)
    node.receipts = ReceiptWorker(node, make_ledger(node))
    node.jobs = JobPool(node, count, node.settings.job_poll_seconds)
    node.outbox.start()
    node.receipts.start()
    node.jobs.start()
    try:
        await asyncio.Event().wait()  # until cancelled (SIGINT / SIGTERM)
    finally:
        await node.jobs.stop()
        await node.receipts.stop()
        await node.outbox.stop()

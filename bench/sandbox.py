"""Benchmark compute-to-data: the sandbox's overhead per job, the end-to-end time of a one-line
aggregate job between two real nodes, and jobs per minute with one and two workers.

Run from the repository root (as root, like the node that runs jobs)::

    .venv/bin/python bench/sandbox.py                  # about 1 minute
    .venv/bin/python bench/sandbox.py --quick          # smoke test, about 30 s
    .venv/bin/python bench/sandbox.py --postgres       # PostgreSQL and `trustspace worker` too
    .venv/bin/python bench/sandbox.py --profile DIR    # then profile the nodes (py-spy)
    .venv/bin/python bench/sandbox.py --json out.json  # the results as JSON too

**Part 1, the sandbox's overhead.** Timed per round, in a shuffled order (so drift in the
machine's speed hits every mode alike), each from just before the process starts to just after
it has been reaped:

- ``python -c pass``: the venv's interpreter, as a consumer would run the script at home (the
  issue's baseline; it imports `site`, which processes the venv's .pth files);
- ``python -I -S -c pass``: the same interpreter started as the sandbox starts it, for scale;
- ``bwrap true``: bubblewrap alone (all namespaces, a read-only /usr) running /usr/bin/true;
- ``sandbox``: `BubblewrapSandbox().run()` of a one-line ``pass`` job, everything included:
  writing the job's lib folder and parameters, the seccomp program and the uid mapping, the
  sandbox's mounts, the boot script (limits, dropping to uid 65534), running the job, streaming
  and unpacking /work/out. Removing the work folder afterwards is not timed.
- ``sandbox, the aggregate job``: the same with part 2's one-line job over its 300-row CSV
  mounted as the product (it imports `trustspace.sandbox.api`, reads the rows and writes
  results.json), for comparison with the same run inside a node. Not part of the verdict.

The verdict: the sandbox's p50 minus ``python -c pass``'s p50, against the 20 ms target. The
sandbox starts Python with ``-I -S`` (no `site`: the job's packages are put on sys.path by the
boot script), which alone is faster than ``python -c pass``; the report therefore also gives the
sandbox's p50 minus ``python -I -S -c pass``'s, the cost of the isolation itself.

**Part 2, jobs between two nodes.** A data space built with
`trustspace.connector.localspace.local_dataspace` (through `tests.nodes.dataspace`): an
authority, the provider "hospital" with the product ``bp-visits`` (a CSV of 300 visits, offer
`tests.nodes.research_offer(["sandbox"])`, accepted automatically) and the consumer "insurer",
both enrolled; the consumer negotiates one agreement. Both members' `trustspace serve`
processes are then replaced by *bench servers*: this script with ``--serve HOME``, a process
each that builds the app exactly as `serve` does (`create_app(Settings.load(home))`, uvicorn
with serve's options), with TRUSTSPACE_REVOCATION_TTL_SECONDS=30 (the node's default; localspace
uses 0, which fetches the revocation list from the authority on every signed request) and, on
the provider, TRUSTSPACE_JOB_WORKERS=1 or 2. They add, by replacing module and class attributes
before the app is built (nothing in trustspace/ changes), a trace: the wall-clock start and end
of every request served, of the provider's worker steps (claim, load, unpack the code, copy the
data and check its SM3 digest, `BubblewrapSandbox.run`, read the rows and check the release,
finish: delivery receipt, sealing, commit) and of every transfer message the outbox sends, at
``GET /bench/trace``.

The job is one line::

    from trustspace.sandbox import api; rows = api.read_rows("bp-visits"); api.aggregate(...)

(the mean systolic pressure of the 300 visits, with its count and column, so the node recomputes
it and applies the minimum-count and dominance checks). Every released value is checked against
the same mean computed here.

- **End to end, one at a time** (N jobs, default 30, after 3 uncounted). This process acts as
  the operator's client: ``POST /api/jobs`` (base64 bundle, purpose research), then
  ``GET /api/jobs/{pid}`` every 5 ms until COMPLETED, then ``GET /api/jobs/{pid}/result`` (the
  node opens the SM2 envelope). *Client*: from just before the POST to the result in hand.
  *Node*: the consumer's own record, its `jobs` row's created_at (while it handles the POST) to
  finished_at (the completion message arrived; read from its database, microseconds, where the
  API shows seconds), plus the result GET. Before the first job the bench waits (up to 10 s)
  until the restarted nodes are idle; a pause of 0.3 s between jobs lets the previous job's
  receipt exchange settle, so each job starts on quiet nodes. The trace splits each job into
  consecutive steps along its critical path that add up to the client's time.
- **Jobs per minute** (M jobs, default 40, submitted at once by as many concurrent POSTs),
  with 1 and with 2 in-process workers (the provider's bench server restarted with
  TRUSTSPACE_JOB_WORKERS). Rate = M ÷ (first POST sent → last job's finished_at in the
  consumer's database) × 60; the steady rate, between the first and the last completion, is
  given beside it. The client polls ``GET /api/jobs`` every 50 ms meanwhile, to know when to
  stop. Every job must end COMPLETED with the expected value; anything else counts as failed.
- With ``--postgres``, the same again on a data space whose nodes use PostgreSQL
  (127.0.0.1:5432, a fresh database per node, dropped afterwards), plus the end-to-end jobs and
  the burst with the provider's in-process workers off (TRUSTSPACE_JOB_WORKERS=0) and one
  separate ``trustspace worker --home <provider home> --count 2`` process.
- With ``--profile DIR``, after the end-to-end jobs the same number again with ``py-spy record
  --nonblocking`` (py-spy on PATH; not a project dependency) sampling both nodes; the report
  sums the samples by where the sampled code lives and by trustspace function, per job.
- **CPU.** Per job, from /proc: each node process, the authority, a `trustspace worker`, this
  process, PostgreSQL's processes, *other* (every other process alive at the end: someone
  else's load) and *rest* (the machine's busy time, /proc/stat, less all those: the sandboxes,
  which bubblewrap's init reaps so that no parent counts them, processes that came and went,
  the kernel). Part 1 gives a sandbox's own cost for comparison. Nothing is pinned: both nodes,
  the authority, the sandboxes and this process share the machine's CPUs, so the report warns
  when other processes took a noticeable share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import datetime
import functools
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import cpu_model, percentile, progress

from trustspace.sandbox import BubblewrapSandbox, Outcome, SandboxJob

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 20.0  # sandbox overhead over `python -c pass`, p50
TARGET_E2E_MS = 300.0  # one-line aggregate job, submit -> released result, p50
DATASET = "bp-visits"
OFFER = f"{DATASET}:v1:offer:0"
ROWS = 300
REVOCATION_TTL = 30  # seconds: TRUSTSPACE_REVOCATION_TTL_SECONDS of the measured nodes
POLL_SECONDS = 0.005  # the end-to-end client's GET /api/jobs/{pid}
BURST_POLL_SECONDS = 0.05
PAUSE_SECONDS = 0.3  # between end-to-end jobs
WARMUP_JOBS = 3
IDLE_SECONDS = 10.0  # at most this long waiting for the nodes to be idle before part 2
GIVE_UP_SECONDS = 60.0
OTHER_LOAD = 0.25  # warn when something else used more than this many CPUs' worth
TRACE_PATH = "/bench/trace"
JOB = ('from trustspace.sandbox import api; rows = api.read_rows("bp-visits"); '
       'api.aggregate("mean_sbp", sum(float(r["sbp"]) for r in rows) / len(rows), len(rows), '
       'statistic="mean", column="sbp")\n')


@dataclass(frozen=True)
class Sizes:
    overhead_runs: int  # part 1, of each mode
    e2e_jobs: int  # part 2, one at a time
    burst_jobs: int  # part 2, submitted at once


DEFAULT = Sizes(overhead_runs=50, e2e_jobs=30, burst_jobs=40)
QUICK = Sizes(overhead_runs=10, e2e_jobs=8, burst_jobs=10)


# ==== part 1: the sandbox's overhead ============================================================

def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def measure_overhead(n: int) -> dict[str, Any]:
    sandbox = BubblewrapSandbox()
    root = Path(tempfile.mkdtemp(prefix="ts-bench-sandbox-"))
    root.chmod(0o755)  # the sandbox's user reads the code and the data
    code = root / "code"
    code.mkdir()
    (code / "main.py").write_text("pass\n")
    aggregate = root / "aggregate"
    aggregate.mkdir()
    (aggregate / "main.py").write_text(JOB)
    data = root / "data"
    data.mkdir()
    _write_visits(data / f"{DATASET}.csv")
    counter = iter(range(10**9))

    def in_sandbox(job: SandboxJob) -> Callable[[], None]:
        def run() -> None:
            result = sandbox.run(job, root / f"w{next(counter)}")
            if result.outcome is not Outcome.OK:
                raise SystemExit(f"the job failed: {result.reason}\n{result.stderr!r}")
        return run

    bwrap = shutil.which("bwrap") or "bwrap"
    isolated = os.path.realpath(sys.executable)

    def spawn(cmd: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)

    modes: dict[str, Callable[[], None]] = {
        "python -c pass": spawn([sys.executable, "-c", "pass"]),
        "python -I -S -c pass": spawn([isolated, "-I", "-S", "-c", "pass"]),
        "bwrap true": spawn([bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                             "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                             "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                             "--proc", "/proc", "--dev", "/dev", "/usr/bin/true"]),
        "sandbox": in_sandbox(SandboxJob(code, "main.py")),
        "sandbox, the aggregate job": in_sandbox(
            SandboxJob(aggregate, "main.py", {DATASET: data / f"{DATASET}.csv"})),
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    job_cpu = dict.fromkeys(modes, 0.0)  # the whole machine's busy time during each mode's runs
    busy = _machine_busy()
    began = time.perf_counter()
    try:
        for action in modes.values():  # warm-up: page cache, imports
            action()
        progress(f"part 1: {n} runs of each mode ...")
        for _ in range(n):
            order = list(modes)
            random.shuffle(order)
            for name in order:
                busy_before = _machine_busy()
                samples[name].append(timed(modes[name]))
                job_cpu[name] += _machine_busy() - busy_before
            for workdir in root.glob("w*"):
                shutil.rmtree(workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = (_machine_busy() - busy) / (time.perf_counter() - began)

    rows: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        values.sort()
        rows[name] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                      "mean": statistics.fmean(values), "min": values[0]}
    overhead = rows["sandbox"]["p50"] - rows["python -c pass"]["p50"]
    return {
        "n": n, "modes": rows, "samples_ms": samples, "overhead_p50_ms": overhead,
        "overhead_p99_ms": rows["sandbox"]["p99"] - rows["python -c pass"]["p99"],
        "isolation_p50_ms": rows["sandbox"]["p50"] - rows["python -I -S -c pass"]["p50"],
        "target_ms": TARGET_MS, "verdict": "PASS" if overhead < TARGET_MS else "BELOW",
        "machine_cpus_busy": machine,
        "machine_cpu_ms": {name: cpu / n * 1e3 for name, cpu in job_cpu.items()},
        "bwrap": subprocess.run([bwrap, "--version"], capture_output=True, text=True,
                                check=False).stdout.strip(),
    }


def _machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (/proc/stat), NaN where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ==== the bench server (a separate process: this script with --serve) ===========================

# (what, pid, start, end), wall clock; list.append is atomic, the worker threads append too.
_TRACE: list[tuple[str, str, float, float]] = []
_CURRENT = threading.local()  # the provider pid a worker thread is executing
_PID = re.compile(r"/urn:[^/]+")


def _traced(name: str, fn: Callable[..., Any],
            pid_of: Callable[[tuple[Any, ...], Any], str | None] | None = None
            ) -> Callable[..., Any]:
    """`fn` (synchronous) with its span added to the trace, under the pid `pid_of` finds
    (default: the job the calling worker thread executes); nothing is added without one."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, result = time.time(), None
        try:
            result = fn(*args, **kwargs)
            return result
        finally:
            pid = pid_of(args, result) if pid_of else getattr(_CURRENT, "pid", None)
            if pid:
                _TRACE.append((name, pid, start, time.time()))

    return wrapper


def _instrument() -> None:
    from trustspace.connector import job_worker, outbox
    from trustspace.sandbox import release

    worker = job_worker.JobWorker
    execute = worker.execute

    @functools.wraps(execute)
    def traced_execute(self: Any, pid: str) -> Any:
        _CURRENT.pid = pid
        try:
            return _traced("execute", execute, lambda a, _r: str(a[1]))(self, pid)
        finally:
            _CURRENT.pid = None

    worker.execute = traced_execute  # type: ignore[method-assign]
    worker._claim = _traced(  # type: ignore[method-assign]
        "claim", worker._claim, lambda _a, r: r[0] if r else None)
    worker._finish = _traced(  # type: ignore[method-assign]
        "finish", worker._finish, lambda a, _r: str(a[1]))
    worker._load = _traced("load", worker._load)  # type: ignore[method-assign]
    for name in ("unpack", "materialize", "scan_source", "job_data_digest", "read_rows"):
        setattr(job_worker, name, _traced(name, getattr(job_worker, name)))
    release.check_release = _traced("check_release", release.check_release)
    BubblewrapSandbox.run = _traced("sandbox", BubblewrapSandbox.run)  # type: ignore

    deliver = outbox.OutboxSender._deliver

    @functools.wraps(deliver)
    async def traced_deliver(self: Any, row: Any) -> bool:
        start = time.time()
        try:
            return bool(await deliver(self, row))
        finally:
            if "/transfers/" in row.url:  # .../transfers/{consumer pid}/{start|completion}
                pid, _, kind = row.url.split("/transfers/", 1)[1].partition("/")
                _TRACE.append((f"send {kind}", pid, start, time.time()))

    outbox.OutboxSender._deliver = traced_deliver  # type: ignore[method-assign]


class _RequestTrace:
    """ASGI wrapper: the span of every request served, by route, under the job's pid (from the
    path, or from the answer to POST /api/jobs and POST /transfers/request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/bench/"):
            await self.app(scope, receive, send)
            return
        start = time.time()
        path: str = scope["path"]
        keep = scope["method"] == "POST" and path in ("/api/jobs", "/transfers/request")
        body = b""

        async def traced_send(message: Any) -> None:
            nonlocal body
            if keep and message["type"] == "http.response.body":
                body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        finally:
            found = _PID.search(path)
            pid = found.group(0)[1:] if found else ""
            if keep:
                with contextlib.suppress(ValueError, AttributeError):
                    answer = json.loads(body)
                    pid = str(answer.get("pid") or answer.get("providerPid") or "")
            _TRACE.append((f"{scope['method']} {_PID.sub('/{pid}', path)}", pid, start,
                           time.time()))


def serve(home: Path) -> None:
    """The bench server: the node's app, as `trustspace serve` runs it, plus GET /bench/trace."""
    _instrument()
    import uvicorn

    from trustspace.connector.app import create_app
    from trustspace.connector.config import Settings

    settings = Settings.load(home)
    app = create_app(settings)

    @app.get(TRACE_PATH, include_in_schema=False)
    def trace(clear: bool = False) -> dict[str, Any]:
        spans = list(_TRACE)
        if clear:
            del _TRACE[:len(spans)]
        return {"trace": spans}

    # The options of `trustspace serve` (trustspace/connector/cli_node.py).
    uvicorn.run(_RequestTrace(app), host=settings.host, port=settings.port,
                log_level="warning", server_header=False)


# ==== part 2: jobs between two nodes ===========================================================

def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bench server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/.well-known/dspace-version", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"the bench server did not start: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _bench_server(node: Any, **env: str) -> Iterator[int]:
    """Replace a node's `trustspace serve` with a bench server on its home and port."""
    node.stop()
    log = node.home / "bench-server.log"
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(node.home)],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TRUSTSPACE_REVOCATION_TTL_SECONDS": str(REVOCATION_TTL),
                 "TRUSTSPACE_CRAWL_INTERVAL_SECONDS": "0", **env})
    try:
        _wait_until_up(node.url, server, log)
        yield server.pid
    finally:
        _stop(server)


@contextlib.contextmanager
def _worker_process(home: Path, count: int) -> Iterator[subprocess.Popen[bytes]]:
    """`trustspace worker --home <home> --count <count>`, as an operator starts it."""
    with (home / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trustspace", "worker", "--home", str(home), "--count",
             str(count)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "TRUSTSPACE_REVOCATION_TTL_SECONDS": str(REVOCATION_TTL)})
    try:
        time.sleep(1.5)  # it migrates, builds its node and claims its first (absent) job
        if process.poll() is not None:
            raise RuntimeError(f"trustspace worker exited: "
                               f"{(home / 'worker.log').read_text()[-2000:]}")
        yield process
    finally:
        _stop(process)


def _write_visits(path: Path) -> float:
    """The product's data; returns the mean systolic pressure the job must release."""
    rows = [{"age": 30 + (i * 7) % 50, "sex": "FM"[i % 2], "sbp": 105 + (i * 13) % 60}
            for i in range(ROWS)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["age", "sex", "sbp"])
        writer.writeheader()
        writer.writerows(rows)
    return sum(float(r["sbp"]) for r in rows) / len(rows)


@dataclass
class _Pair:
    provider: Any  # tests.nodes.NodeProcess
    consumer: Any
    agreement: str
    bundle: str  # base64
    expected: float


def _agree(provider: Any, consumer: Any) -> str:
    started = consumer.ok("POST", "/api/negotiations",
                          {"provider_url": provider.url, "dataset": DATASET, "offer": OFFER})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = consumer.ok("GET", f"/api/negotiations/{started['pid']}")
        if shown["state"] == "FINALIZED":
            return str(shown["agreementId"])
        if shown["state"] == "TERMINATED":
            raise RuntimeError(f"the negotiation was terminated: {shown}")
        time.sleep(0.05)
    raise RuntimeError("the negotiation did not finish")


def _job_body(pair: _Pair) -> dict[str, Any]:
    return {"agreement": pair.agreement, "code": pair.bundle, "parameters": {},
            "purpose": "research", "mode": "sandbox"}


def _released(result: dict[str, Any]) -> float:
    outputs = result["result"]["release"]["outputs"]
    return float(next(o for o in outputs if o["name"] == "mean_sbp")["value"])


def _rows(home: Path) -> dict[str, dict[str, Any]]:
    """pid -> the times and state of every job in a node's database (microseconds)."""
    from sqlalchemy import select

    from trustspace.connector.config import Settings
    from trustspace.db import Database
    from trustspace.sandbox.tables import Job

    def ts(t: datetime.datetime | None) -> float:
        return t.timestamp() if t is not None else math.nan

    database = Database(Settings.load(home).db_url)
    try:
        with database.read() as session:
            return {j.pid: {"state": j.state, "outcome": j.outcome, "created": ts(j.created_at),
                            "started": ts(j.started_at), "finished": ts(j.finished_at),
                            "provider_pid": j.provider_pid}
                    for j in session.scalars(select(Job))}
    finally:
        database.dispose()


def _trace(node: Any) -> list[list[Any]]:
    """The bench server's trace since the last call."""
    import httpx

    response = httpx.get(f"{node.url}{TRACE_PATH}", params={"clear": "true"}, timeout=30)
    response.raise_for_status()
    return list(response.json()["trace"])


def _processes() -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, start time) -> (command name, CPU seconds: user + system, all threads) of every
    process on the machine, from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
            comm = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[(int(entry.name), int(fields[19]))] = (comm, (int(fields[11]) + int(fields[12]))
                                                       / tick)
    return out


class _Cpu:
    """CPU time between `start` and `stop`: of the processes taking part (by name), of this one
    (client), of PostgreSQL's, of every other process alive at `stop` (other: someone else's
    load; bubblewrap's left-overs excepted), and of the whole machine (/proc/stat); `rest` is
    the machine less all those: the sandboxes (short-lived, and reaped by bubblewrap's init, so
    no parent counts them), other processes that ended meanwhile, and the kernel's own work."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began: dict[str, Any] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, Any]:
        return {"processes": _processes(), "client": time.process_time(),
                "machine": _machine_busy(), "wall": time.perf_counter()}

    def start(self) -> None:
        self.began = self._now()

    def stop(self) -> None:
        now = self._now()
        self.used = {k: now[k] - self.began[k] for k in ("client", "machine", "wall")}
        named = {pid: name for name, pid in self.pids.items()}
        for name in (*self.pids, "postgresql", "other"):
            self.used.setdefault(name, 0.0)
        before = self.began["processes"]
        for key, (comm, cpu) in now["processes"].items():
            if key[0] == os.getpid() or (key not in before and comm == "bwrap"):
                continue
            used = cpu - before[key][1] if key in before else cpu
            if key[0] in named:
                self.used[named[key[0]]] += used
            elif comm.startswith("postgres"):
                self.used["postgresql"] += used
            else:
                self.used["other"] += used
        self.used["rest"] = self.used["machine"] - sum(
            self.used[k] for k in (*self.pids, "client", "postgresql", "other"))

    def per_job(self, jobs: int) -> dict[str, float]:
        """CPU ms per job of each, the machine's busy CPUs on average and the CPUs' worth
        other processes took."""
        out = {k: v / max(jobs, 1) * 1e3 for k, v in self.used.items() if k != "wall"}
        out["busy_cpus"] = self.used["machine"] / self.used["wall"]
        out["other_cpus"] = self.used["other"] / self.used["wall"]
        return out


# Consecutive steps along one job's critical path: (label, the trace point it ends at). Each
# point is (node, span, start|end, keyed by the consumer's or the provider's pid).
STEPS = (
    ("consumer signs the request, provider checks the policy and queues the job (both commit)",
     ("provider", "POST /transfers/request", "end", "provider")),
    ("worker wakes and claims the job", ("provider", "claim", "end", "provider")),
    ("load the job, unpack the code, copy the data, SM3 digest of it",
     ("provider", "sandbox", "start", "provider")),
    ("sandbox run: bubblewrap + Python + the one-line job + reading its output",
     ("provider", "sandbox", "end", "provider")),
    ("release checks: read the rows, recompute, min count, dominance",
     ("provider", "execute", "end", "provider")),
    ("finish: delivery receipt (SM2 sign), seal the result (SM2), commit",
     ("provider", "finish", "end", "provider")),
    ("completion message: outbox → consumer (signed HTTP, open the envelope, commit)",
     ("consumer", "POST /transfers/{pid}/completion", "end", "consumer")),
    ("the client's next poll sees COMPLETED", ("client", "seen", "end", "consumer")),
    ("GET /api/jobs/{pid}/result (opens the envelope again)",
     ("client", "result", "end", "consumer")),
)
# Spans shown beside the steps (p50 of their durations): (node, span, label).
DETAILS = (
    ("consumer", "POST /api/jobs", "consumer: POST /api/jobs handled (request signed, sent, "
                                   "answered)"),
    ("provider", "POST /transfers/request", "provider: TransferRequestMessage handled"),
    ("provider", "claim", "provider: claim transaction"),
    ("provider", "execute", "provider: execute (everything between claim and finish)"),
    ("provider", "load", "· load job and product"),
    ("provider", "unpack", "· unpack the code bundle"),
    ("provider", "materialize", "· copy the data into the job's folder"),
    ("provider", "scan_source", "· SM3 digest of the copied data"),
    ("provider", "job_data_digest", "· the agreement's data digest (a read)"),
    ("provider", "sandbox", "· BubblewrapSandbox.run"),
    ("provider", "read_rows", "· read the input rows for the release checks"),
    ("provider", "check_release", "· release checks"),
    ("provider", "finish", "provider: finish transaction (receipt, seal, commit)"),
    ("provider", "send start", "provider: outbox sends TransferStartMessage"),
    ("provider", "send completion", "provider: outbox sends TransferCompletionMessage"),
    ("consumer", "POST /transfers/{pid}/start", "consumer: TransferStartMessage handled"),
    ("consumer", "POST /transfers/{pid}/completion",
     "consumer: TransferCompletionMessage handled"),
    ("consumer", "GET /api/jobs/{pid}", "consumer: one poll GET /api/jobs/{pid}"),
    ("consumer", "GET /api/jobs/{pid}/result", "consumer: GET /api/jobs/{pid}/result"),
)


@dataclass
class _Run:
    """One end-to-end job as the client saw it."""

    posted: float
    acked: float = math.nan
    seen: float = math.nan
    result: float = math.nan
    pid: str = ""
    provider_pid: str = ""
    polls: int = 0
    value: float = math.nan
    state: str = ""


def _one_job(client: Any, pair: _Pair) -> _Run:
    run = _Run(posted=time.time())
    response = client.post("/api/jobs", json=_job_body(pair))
    run.acked = time.time()
    if response.status_code != 201:
        run.state = f"POST {response.status_code} {response.text[:120]}"
        return run
    shown = response.json()
    run.pid, run.state = shown["pid"], shown["state"]
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while run.state not in ("COMPLETED", "TERMINATED") and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        shown = client.get(f"/api/jobs/{run.pid}").json()
        run.polls += 1
        run.state = shown["state"]
    run.seen = time.time()
    run.provider_pid = shown.get("providerPid") or ""
    if run.state != "COMPLETED":
        run.state = f"{run.state} {shown.get('reason')}"
        return run
    result = client.get(f"/api/jobs/{run.pid}/result")
    run.result = time.time()
    run.value = _released(result.json())
    return run


def _points(traces: dict[str, list[list[Any]]]) -> dict[tuple[str, str, str, str], float]:
    """(node, span, start|end, pid) -> time, the first span of that name and pid."""
    out: dict[tuple[str, str, str, str], float] = {}
    for node, spans in traces.items():
        for name, pid, start, end in spans:
            out.setdefault((node, name, "start", pid), start)
            out.setdefault((node, name, "end", pid), end)
    return out


def _durations(traces: dict[str, list[list[Any]]], pids: set[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for node, spans in traces.items():
        for name, pid, start, end in spans:
            if pid in pids:
                out.setdefault(f"{node} {name}", []).append((end - start) * 1e3)
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return {"p50": math.nan, "p99": math.nan, "mean": math.nan, "n": 0}
    return {"p50": percentile(ordered, 0.5), "p99": percentile(ordered, 0.99),
            "mean": statistics.fmean(ordered), "n": len(ordered)}


def _settle(pids: dict[str, int]) -> dict[str, float]:
    """Wait (up to IDLE_SECONDS) until the nodes are idle, e.g. done delivering what a restart
    left; then the CPUs' worth other processes used over one more second."""
    deadline = time.monotonic() + IDLE_SECONDS
    while True:
        cpu = _Cpu(pids)
        cpu.start()
        time.sleep(1.0)
        cpu.stop()
        ours = sum(cpu.used[k] for k in pids) / cpu.used["wall"]
        if ours < 0.05 or time.monotonic() > deadline:
            return {"ours_cpus": ours, "other_cpus": cpu.used["other"] / cpu.used["wall"],
                    "machine_cpus": cpu.used["machine"] / cpu.used["wall"]}


def measure_e2e(pair: _Pair, n: int, pids: dict[str, int]) -> dict[str, Any]:
    import httpx

    consumer, provider = pair.consumer, pair.provider
    runs: list[_Run] = []
    idle = _settle(pids)
    cpu = _Cpu(pids)
    with httpx.Client(base_url=consumer.url, timeout=60,
                      headers={"authorization": f"Bearer {consumer.token}"}) as client:
        for _ in range(WARMUP_JOBS):
            _one_job(client, pair)
            time.sleep(PAUSE_SECONDS)
        for node in (provider, consumer):  # the warm-up's spans are not counted
            _trace(node)
        cpu.start()
        for i in range(n):
            runs.append(_one_job(client, pair))
            progress(f"  job {i + 1}/{n}: {(runs[-1].result - runs[-1].posted) * 1e3:.0f} ms"
                     f" ({runs[-1].polls} polls)")
            time.sleep(PAUSE_SECONDS)
        cpu.stop()
    got = {"provider": _trace(provider), "consumer": _trace(consumer)}
    consumer_rows = _rows(consumer.home)
    ok = [r for r in runs if r.state == "COMPLETED" and math.isclose(r.value, pair.expected)
          and consumer_rows.get(r.pid, {}).get("state") == "COMPLETED"]
    failures = [r.state if r.state != "COMPLETED" else f"value {r.value}" for r in runs
                if r not in ok]

    traces = dict(got)
    traces["client"] = [["seen", r.pid, r.seen, r.seen] for r in ok] + \
        [["result", r.pid, r.result, r.result] for r in ok]
    points = _points(traces)
    steps: list[list[float]] = [[] for _ in STEPS]
    for r in ok:
        before = r.posted
        for i, (_label, (node, span, edge, key)) in enumerate(STEPS):
            at = points.get((node, span, edge, r.pid if key == "consumer" else r.provider_pid),
                            math.nan)
            steps[i].append((at - before) * 1e3)
            before = at
    node_ms = [(consumer_rows[r.pid]["finished"] - consumer_rows[r.pid]["created"]
                + (r.result - r.seen)) * 1e3 for r in ok]
    jobs = {r.pid for r in ok} | {r.provider_pid for r in ok}
    return {
        "n": n, "completed": len(ok), "failures": failures,
        "client": _summary([(r.result - r.posted) * 1e3 for r in ok]),
        "node": _summary(node_ms),
        "post": _summary([(r.acked - r.posted) * 1e3 for r in ok]),
        "polls": statistics.fmean([r.polls for r in ok]) if ok else math.nan,
        "steps": [{"label": label, **_summary(values)}
                  for (label, _), values in zip(STEPS, steps, strict=True)],
        "details": {key: _summary(values)
                    for key, values in _durations(traces, jobs).items()},
        "cpu_ms_per_job": cpu.per_job(len(runs)),  # the pauses between jobs included
        "idle_cpus_busy": idle["other_cpus"],
        "idle": idle,
    }


# ---- profiling (--profile) ----------------------------------------------------------------------

PROFILE_RATE = 500  # samples per second
# Where a sampled frame's file lives -> the label its self time is summed under (first match).
BUCKETS = (
    ("trustspace/crypto/", "trustspace.crypto (SM2, SM3, SM4, canonical JSON)"),
    ("trustspace/sandbox/runner", "trustspace.sandbox.runner (spawning, supervising)"),
    ("trustspace/", "trustspace, other"),
    ("sqlalchemy/", "SQLAlchemy"), ("sqlite3/", "sqlite3"), ("psycopg", "psycopg"),
    ("alembic/", "Alembic"), ("http_message_signatures/", "http-message-signatures"),
    ("httpx/", "httpx / httpcore / h11"), ("httpcore/", "httpx / httpcore / h11"),
    ("h11/", "httpx / httpcore / h11"), ("uvicorn/", "uvicorn"), ("starlette/", "starlette"),
    ("fastapi/", "FastAPI"), ("pydantic", "pydantic"), ("anyio/", "anyio (thread pool)"),
    ("asyncio/", "asyncio"), ("json/", "json"), ("subprocess.py", "subprocess"),
    ("logging/", "logging"), ("selectors.py", "selectors"),
)


def _frame_file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")").rsplit(":", 1)[0]


def _bucket(frame: str) -> str:
    path = _frame_file(frame)
    if frame.startswith("Connection.wait (psycopg/"):
        return "waiting for PostgreSQL's answers (psycopg's Connection.wait)"
    if frame.startswith("Runner.run "):  # no Python frame below it: uvloop's C code runs
        return "event loop in C (uvloop: sockets, HTTP parsing), or runnable waiting for a CPU"
    if path.endswith(("threading.py", "anyio/_backends/_asyncio.py", "thread.py", "queue.py")):
        return "thread-pool hand-offs (waking a thread, taking the GIL, waiting for a CPU)"
    for key, label in BUCKETS:
        if key in path:
            return label
    return f"other: {Path(path).name}"


def _top_costs(raw: Path, jobs: int) -> dict[str, Any]:
    """py-spy's collapsed stacks -> samples by where the CPU was (self) and by trustspace
    function (inclusive), in ms per job."""
    per_ms = 1e3 / PROFILE_RATE / max(jobs, 1)
    total = 0
    buckets: dict[str, float] = {}
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        buckets[_bucket(frames[-1])] = buckets.get(_bucket(frames[-1]), 0) + n
        name = re.sub(r":\d+\)$", ")", frames[-1])
        own[name] = own.get(name, 0) + n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames if "trustspace/" in f}:
            inclusive[frame] = inclusive.get(frame, 0) + n

    def top(counts: dict[str, float], k: int) -> list[tuple[str, float]]:
        return [(name, c * per_ms) for name, c in sorted(counts.items(), key=lambda x: -x[1])
                [:k]]

    return {"ms_per_job": total * per_ms, "where": top(buckets, 12),
            "functions": top(own, 12), "trustspace": top(inclusive, 25)}


def profile_e2e(pair: _Pair, n: int, pids: dict[str, int], folder: Path) -> dict[str, Any]:
    """`n` more end-to-end jobs, with py-spy sampling both nodes (not the sandboxes)."""
    import httpx

    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    folder.mkdir(parents=True, exist_ok=True)
    spies = {}
    for name in ("provider", "consumer"):
        spies[name] = subprocess.Popen(
            [spy, "record", "--pid", str(pids[name]), "--rate", str(PROFILE_RATE),
             "--format", "raw", "--nonblocking", "--output", str(folder / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    times = []
    with httpx.Client(base_url=pair.consumer.url, timeout=60,
                      headers={"authorization": f"Bearer {pair.consumer.token}"}) as client:
        for _ in range(n):
            run = _one_job(client, pair)
            times.append((run.result - run.posted) * 1e3)
            time.sleep(PAUSE_SECONDS)
    for spy_process in spies.values():
        spy_process.send_signal(signal.SIGINT)
    for spy_process in spies.values():
        spy_process.wait(30)
    for node in (pair.provider, pair.consumer):
        _trace(node)
    return {"jobs": n, "client": _summary(times), "folder": str(folder),
            "nodes": {name: _top_costs(folder / f"{name}.txt", n) for name in spies}}


def render_profile(profile: dict[str, Any]) -> str:
    out = [f"Profile: {profile['jobs']} more jobs with py-spy sampling both nodes at "
           f"{PROFILE_RATE} Hz, non-blocking (client p50 {_ms(profile['client']['p50'])} ms "
           f"with it attached; collapsed stacks in {profile['folder']}). A sample is a thread "
           "running or runnable: on a busy machine that includes waiting for a CPU. ms per "
           "job by where the sampled frame's code lives (self), then trustspace functions "
           "with what they call (inclusive):"]
    for name, costs in profile["nodes"].items():
        out += ["", f"| {name}: {costs['ms_per_job']:.0f} ms per job sampled | ms/job |",
                "|---|--:|"]
        out += [f"| {label} | {ms:.1f} |" for label, ms in costs["where"]]
        out += ["", f"| {name}: trustspace function (inclusive) | ms/job |", "|---|--:|"]
        out += [f"| `{frame}` | {ms:.1f} |" for frame, ms in costs["trustspace"]]
    return "\n".join(out)


async def _burst_async(pair: _Pair, m: int) -> tuple[float, list[str], list[str]]:
    import httpx

    consumer = pair.consumer
    body = _job_body(pair)
    async with httpx.AsyncClient(base_url=consumer.url, timeout=GIVE_UP_SECONDS,
                                 headers={"authorization": f"Bearer {consumer.token}"},
                                 limits=httpx.Limits(max_connections=m + 4)) as client:
        started = time.time()
        answers = await asyncio.gather(*(client.post("/api/jobs", json=body)
                                         for _ in range(m)), return_exceptions=True)
        pids, refused = [], []
        for answer in answers:
            if isinstance(answer, httpx.Response) and answer.status_code == 201:
                pids.append(answer.json()["pid"])
            else:
                refused.append(repr(answer)[:120] if not isinstance(answer, httpx.Response)
                               else f"POST {answer.status_code} {answer.text[:80]}")
        deadline = time.monotonic() + GIVE_UP_SECONDS + m
        waiting = set(pids)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(BURST_POLL_SECONDS)
            listed = (await client.get("/api/jobs", params={"limit": 1000})).json()["jobs"]
            waiting -= {j["pid"] for j in listed if j["state"] in ("COMPLETED", "TERMINATED")}
        results = await asyncio.gather(*(client.get(f"/api/jobs/{pid}/result") for pid in pids
                                         if pid not in waiting))
        wrong = [f"value {_released(r.json())}" for r in results if r.status_code == 200
                 and not math.isclose(_released(r.json()), pair.expected)]
    return started, pids, refused + wrong + [f"not done in time: {p}" for p in waiting]


def measure_burst(pair: _Pair, m: int, workers: str, processes: dict[str, int]
                  ) -> dict[str, Any]:
    for node in (pair.provider, pair.consumer):  # earlier spans are not counted
        _trace(node)
    cpu = _Cpu(processes)
    cpu.start()
    started, pids, failures = asyncio.run(_burst_async(pair, m))
    cpu.stop()
    got = _trace(pair.provider)
    consumer_rows = _rows(pair.consumer.home)
    done = [consumer_rows[p] for p in pids if consumer_rows.get(p, {}).get("state")
            == "COMPLETED"]
    failures += [f"{consumer_rows.get(p, {}).get('state')} "
                 f"{consumer_rows.get(p, {}).get('outcome')}" for p in pids
                 if consumer_rows.get(p, {}).get("state") != "COMPLETED"]
    finished = sorted(r["finished"] for r in done)
    span = (finished[-1] - started) if finished else math.nan
    steady = (finished[-1] - finished[0]) if len(finished) > 1 else math.nan
    durations = _durations({"provider": got},
                           {r["provider_pid"] for r in done})
    latency = sorted((r["finished"] - started) * 1e3 for r in done)
    return {
        "workers": workers, "m": m, "completed": len(done), "failures": failures,
        "seconds": span, "per_minute": len(done) / span * 60 if done else 0.0,
        "steady_per_minute": (len(done) - 1) / steady * 60 if steady and steady > 0
        else math.nan,
        "first_ms": latency[0] if latency else math.nan,
        "last_ms": latency[-1] if latency else math.nan,
        "execute_ms": _summary(durations.get("provider execute", [])),
        "sandbox_ms": _summary(durations.get("provider sandbox", [])),
        "finish_ms": _summary(durations.get("provider finish", [])),
        "cpu_ms_per_job": cpu.per_job(len(done)),
    }


def run_nodes(backend: str, sizes: Sizes, tmp: Path, profile: Path | None
              ) -> dict[str, Any]:
    from tests.nodes import dataspace, product_spec, research_offer
    from trustspace.sandbox.bundle import pack

    began = time.perf_counter()
    root = tmp / backend
    root.mkdir()
    out: dict[str, Any] = {"backend": backend, "bursts": []}
    with dataspace(root, backend) as space:
        progress(f"{backend}: setting up an authority, a provider and a consumer ...")
        provider = space.add_member("hospital", "provider")
        consumer = space.add_member("insurer", "consumer")
        data = root / "visits.csv"
        spec = product_spec(data, DATASET, offers=[research_offer(["sandbox"])],
                            modes=["sandbox"])
        expected = _write_visits(data)  # product_spec wrote its own small file there
        provider.ok("POST", "/api/products", spec)
        script = root / "job.py"
        script.write_text(JOB)
        pair = _Pair(provider, consumer, _agree(provider, consumer),
                     base64.b64encode(pack(script)).decode(), expected)
        assert space.authority.process is not None
        pids = {"authority": space.authority.process.pid}
        with _bench_server(consumer) as pids["consumer"]:
            with _bench_server(provider, TRUSTSPACE_JOB_WORKERS="1") as pids["provider"]:
                out["setup_seconds"] = time.perf_counter() - began
                progress(f"{backend}: end to end, {sizes.e2e_jobs} jobs one at a time ...")
                out["e2e"] = measure_e2e(pair, sizes.e2e_jobs, pids)
                if profile is not None:
                    progress(f"{backend}: {sizes.e2e_jobs} more with py-spy attached ...")
                    out["profile"] = profile_e2e(pair, sizes.e2e_jobs, pids, profile / backend)
                progress(f"{backend}: {sizes.burst_jobs} jobs at once, 1 worker ...")
                out["bursts"].append(measure_burst(pair, sizes.burst_jobs, "1 in-process",
                                                   pids))
            with _bench_server(provider, TRUSTSPACE_JOB_WORKERS="2") as pids["provider"]:
                progress(f"{backend}: {sizes.burst_jobs} jobs at once, 2 workers ...")
                out["bursts"].append(measure_burst(pair, sizes.burst_jobs, "2 in-process",
                                                   pids))
            if backend == "postgresql":
                with _bench_server(provider, TRUSTSPACE_JOB_WORKERS="0") as pids["provider"], \
                        _worker_process(provider.home, 2) as worker:
                    progress(f"{backend}: end to end with `trustspace worker --count 2`, "
                             f"{sizes.e2e_jobs} jobs one at a time ...")
                    out["e2e_worker"] = measure_e2e(pair, sizes.e2e_jobs,
                                                    {**pids, "worker": worker.pid})
                    progress(f"{backend}: {sizes.burst_jobs} jobs at once, "
                             "`trustspace worker --count 2` ...")
                    out["bursts"].append(measure_burst(
                        pair, sizes.burst_jobs, "0 in-process + `trustspace worker --count 2`",
                        {**pids, "worker": worker.pid}))
    out["seconds"] = time.perf_counter() - began
    return out


# ==== the report ================================================================================

def _ms(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.1f}"


def _cpu(per_job: dict[str, float]) -> str:
    parts = [f"{k} {per_job[k]:.0f}" for k in ("provider", "worker", "consumer", "authority",
                                               "client", "postgresql", "rest", "other")
             if per_job.get(k) or k in ("provider", "consumer", "rest", "other")]
    return f"machine {per_job['machine']:.0f} = " + " + ".join(parts)


def _rest_warning(cpu: dict[str, float], part1: dict[str, Any], what: str) -> list[str]:
    """A warning when `rest` is well above what a sandbox costs (part 1): processes that came
    and went meanwhile were not all ours."""
    sandbox = part1["machine_cpu_ms"]["sandbox, the aggregate job"]
    if cpu["rest"] <= 2 * sandbox + 30:
        return []
    return [f"warning ({what}): rest {cpu['rest']:.0f} ms per job, where a sandbox costs about "
            f"{sandbox:.0f}: short-lived processes of someone else ran meanwhile."]


def render(result: dict[str, Any]) -> str:
    meta, part1, nodes = result["meta"], result["overhead"], result["nodes"]
    out = [f"# Compute-to-data ({meta['date']}, nproc {meta['nproc']}, {meta['cpu']}, "
           f"Python {meta['python']}, {part1['bwrap']}, kernel {meta['kernel']})", "",
           "| measurement | figure | target | result |", "|---|--:|---|---|",
           f"| sandbox overhead over `python -c pass`, p50 ({part1['n']} runs) | "
           f"{part1['overhead_p50_ms']:+.1f} ms | < {TARGET_MS:g} ms | {part1['verdict']} |"]
    for cell in nodes:
        e2e, backend = cell["e2e"], cell["backend"]
        verdict = "PASS" if e2e["client"]["p50"] < TARGET_E2E_MS else "BELOW"
        out += [f"| {backend}: end to end, client (POST → result, polling every "
                f"{POLL_SECONDS * 1e3:g} ms), p50 / p99 ({e2e['completed']} jobs) | "
                f"{_ms(e2e['client']['p50'])} / {_ms(e2e['client']['p99'])} ms | "
                f"< {TARGET_E2E_MS:g} ms p50 | {verdict} |",
                f"| {backend}: end to end, node-recorded (consumer created → completed, + "
                f"result GET), p50 / p99 | {_ms(e2e['node']['p50'])} / "
                f"{_ms(e2e['node']['p99'])} ms | < {TARGET_E2E_MS:g} ms p50 | "
                f"{'PASS' if e2e['node']['p50'] < TARGET_E2E_MS else 'BELOW'} |"]
        if "e2e_worker" in cell:
            w = cell["e2e_worker"]
            out.append(f"| {backend}: end to end with `trustspace worker --count 2` (no "
                       f"in-process workers), client / node-recorded p50 | "
                       f"{_ms(w['client']['p50'])} / {_ms(w['node']['p50'])} ms | "
                       f"< {TARGET_E2E_MS:g} ms p50 | "
                       f"{'PASS' if w['client']['p50'] < TARGET_E2E_MS else 'BELOW'} |")
        for b in cell["bursts"]:
            out.append(f"| {backend}: jobs per minute, {b['workers']} worker(s), "
                       f"{b['m']} at once | {b['per_minute']:,.0f} | (none given) | — |")
    out += ["", f"Part 1, per run (ms; {part1['n']} runs of each, shuffled):", "",
            "| mode | p50 | p99 | mean | min | machine CPU, mean |",
            "|---|--:|--:|--:|--:|--:|"]
    for name, row in part1["modes"].items():
        out.append(f"| {name} | {row['p50']:.1f} | {row['p99']:.1f} | {row['mean']:.1f} | "
                   f"{row['min']:.1f} | {part1['machine_cpu_ms'][name]:.0f} |")
    out += ["", f"Sandbox over `python -c pass`: {part1['overhead_p50_ms']:+.1f} ms p50, "
                f"{part1['overhead_p99_ms']:+.1f} ms p99; over `python -I -S -c pass` (the "
                f"same interpreter start-up, so the cost of the isolation itself): "
                f"{part1['isolation_p50_ms']:+.1f} ms p50."]
    for cell in nodes:
        e2e, backend = cell["e2e"], cell["backend"]
        out += ["", f"Part 2, {backend}: where one job's time goes, one at a time "
                f"({e2e['completed']} jobs; consecutive steps along the critical path, ms; "
                f"the p50s of the steps need not add up to the p50 of the whole):", "",
                "| step | p50 | p99 | mean |", "|---|--:|--:|--:|"]
        for s in e2e["steps"]:
            out.append(f"| {s['label']} | {_ms(s['p50'])} | {_ms(s['p99'])} | "
                       f"{_ms(s['mean'])} |")
        c = e2e["client"]
        out += [f"| **client: POST → result in hand** | **{_ms(c['p50'])}** | "
                f"**{_ms(c['p99'])}** | **{_ms(c['mean'])}** |",
                "", "Spans (ms, p50 / p99 of each span's duration; · = inside execute):", "",
                "| span | p50 | p99 | per job |", "|---|--:|--:|--:|"]
        for node, span, label in DETAILS:
            d = e2e["details"].get(f"{node} {span}")
            if d:
                out.append(f"| {label} | {_ms(d['p50'])} | {_ms(d['p99'])} | "
                           f"{d['n'] / max(e2e['completed'], 1):.1f}× |")
        cpu = e2e["cpu_ms_per_job"]
        out += ["", f"CPU per job (ms, the pauses between jobs included; rest = the "
                f"sandboxes, short-lived processes and the kernel; other = other long-lived "
                f"processes): {_cpu(cpu)}; "
                f"{cpu['busy_cpus']:.2f} CPUs busy on average, "
                f"{e2e['idle']['machine_cpus']:.2f} with the nodes idle just before (of which "
                f"other processes {e2e['idle_cpus_busy']:.2f}). The consumer "
                f"answered {e2e['polls']:.0f} polls per job; POST /api/jobs was answered "
                f"after {_ms(e2e['post']['p50'])} ms p50."]
        load = max(e2e["idle_cpus_busy"], cpu["other_cpus"])
        out += _rest_warning(cpu, part1, "one at a time")
        if load > OTHER_LOAD:
            out.append(f"warning: other processes kept up to {load:.2f} CPUs busy (before: "
                       f"{e2e['idle_cpus_busy']:.2f}, during: {cpu['other_cpus']:.2f}): these "
                       "figures are slower than on a quiet machine.")
        if "profile" in cell:
            out += ["", render_profile(cell["profile"])]
        if e2e["failures"]:
            out.append(f"FAILED: {', '.join(e2e['failures'])}")
        if "e2e_worker" in cell:
            w = cell["e2e_worker"]
            out += ["", f"End to end with the provider's jobs run by a `trustspace worker "
                    f"--count 2` process ({w['completed']} jobs): client p50 / p99 "
                    f"{_ms(w['client']['p50'])} / {_ms(w['client']['p99'])} ms, node-recorded "
                    f"{_ms(w['node']['p50'])} / {_ms(w['node']['p99'])} ms; POST → provider "
                    f"queued p50 {_ms(w['steps'][0]['p50'])} ms. CPU per job: "
                    f"{_cpu(w['cpu_ms_per_job'])}."]
            if w["failures"]:
                out.append(f"FAILED: {', '.join(w['failures'])}")
        out += ["", f"Part 2, {backend}: jobs at once:", "",
                "| workers | jobs | done | jobs/min (first POST → last done) | steady jobs/min "
                "| first / last done, s | execute p50 ms | sandbox p50 ms | CPU ms per job | "
                "machine busy |", "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"]
        for b in cell["bursts"]:
            out.append(
                f"| {b['workers']} | {b['m']} | {b['completed']} | {b['per_minute']:,.0f} | "
                f"{b['steady_per_minute']:,.0f} | {b['first_ms'] / 1e3:.2f} / "
                f"{b['last_ms'] / 1e3:.2f} | {_ms(b['execute_ms']['p50'])} | "
                f"{_ms(b['sandbox_ms']['p50'])} | {_cpu(b['cpu_ms_per_job'])} | "
                f"{b['cpu_ms_per_job']['busy_cpus']:.2f} CPUs |")
            if b["failures"]:
                out.append(f"FAILED ({b['workers']}): {', '.join(b['failures'][:5])}")
            out += _rest_warning(b["cpu_ms_per_job"], part1, b["workers"])
            if b["cpu_ms_per_job"]["other_cpus"] > OTHER_LOAD:
                out.append(f"warning ({b['workers']}): other processes took "
                           f"{b['cpu_ms_per_job']['other_cpus']:.2f} CPUs meanwhile.")
        out.append(f"\n{backend}: set-up {cell['setup_seconds']:.0f} s, in all "
                   f"{cell['seconds']:.0f} s.")
    if part1["machine_cpus_busy"] - 1.0 > OTHER_LOAD:
        out.append(f"warning: during part 1 the machine was busy on "
                   f"{part1['machine_cpus_busy']:.1f} CPUs (this bench uses about one).")
    out.append(f"Whole run {meta['seconds']:.0f} s.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, help="part 1: runs of each mode (default 50)")
    parser.add_argument("--jobs", type=int, help="part 2: jobs one at a time (default 30)")
    parser.add_argument("--burst", type=int, help="part 2: jobs at once (default 40)")
    parser.add_argument("--quick", action="store_true", help="smoke test, about 30 s")
    parser.add_argument("--postgres", action="store_true",
                        help="part 2 on PostgreSQL too, with a `trustspace worker` process")
    parser.add_argument("--no-nodes", action="store_true", help="part 1 only")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="then run the end-to-end jobs again under py-spy (on PATH) and "
                             "report the nodes' top costs; the profiles go to DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--serve", type=Path, metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    base = QUICK if args.quick else DEFAULT
    sizes = Sizes(args.n or base.overhead_runs, args.jobs or base.e2e_jobs,
                  args.burst or base.burst_jobs)
    # The nodes this bench starts run the trustspace of this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(ROOT))
    began = time.perf_counter()
    result: dict[str, Any] = {"overhead": measure_overhead(sizes.overhead_runs), "nodes": []}
    if not args.no_nodes:
        with tempfile.TemporaryDirectory(prefix="ts-bench-jobs-") as tmp:
            for backend in ("sqlite", "postgresql") if args.postgres else ("sqlite",):
                result["nodes"].append(run_nodes(backend, sizes, Path(tmp), args.profile))
    result["meta"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "sizes": sizes.__dict__,
        "seconds": time.perf_counter() - began,
    }
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark federated mode (issue 9): seconds and bytes per round through trustspace beside a
plain Flower deployment, with the same app and the same data, in the same run.

Run from the repository root::

    .venv/bin/python bench/federated.py                  # 2 repetitions x 3 rounds, ~6 min
    .venv/bin/python bench/federated.py --quick          # 1 repetition x 2 rounds, ~2.5 min
    .venv/bin/python bench/federated.py --reps 3 --rounds 4
    .venv/bin/python bench/federated.py --json out.json  # the results as JSON too

**Data and app.** scikit-learn's breast-cancer table (569 rows, bundled), split as
tests/test_federated.py splits it: 114 rows held out (permutation seed 7), the rest in three
disjoint parts, one CSV per provider. Every variant runs the shipped app
`trustspace/federated/apps/logreg` (`LOGREG_APP`: a query round for the pooled scale, then
FedAvg; each round trains on all three nodes and evaluates on all three) with
``min-nodes=3``, for the same number of rounds, and writes its `result.json` and `model.npz`.

**Variants**, each started from nothing and stopped again in every repetition, in a shuffled
order per repetition (so drift in the machine's load hits all of them alike):

- *plain Flower*: what a user would type, started by this script with `subprocess` (not through
  trustspace): ``flower-superlink --insecure --disable-runtime-dependency-installation`` (the
  last flag is needed offline: by default the SuperLink runs `uv sync` against a package
  index), three ``flower-supernode --insecure --node-config data-path="<csv>"``, then
  ``flwr run <app> plain --stream``. Each process has its own FLWR_HOME, telemetry and update
  checks off, the venv's bin first on PATH. Flower's own waits: SuperExec poll 1 s, reply
  poll 3 s (the app's default `reply-poll-interval`, as Flower's grid).
- *trustspace, Flower's waits*: `Deployment` (TLS with a throw-away CA, SuperNode
  authentication), each provider's SuperNode key generated, bound to the provider's SM2
  identity (`bind_supernode_key`) and admitted (`Deployment.admit`: binding checked, then
  `flwr supernode register`), each SuperNode started as a provider's node starts it in a
  federated job (`RemoteSuperNode`, the class `trustspace.sandbox.fl_jobs` uses: TLS, the
  node's private key), `Deployment.run`. `Intervals()` = Flower's defaults.
  **Framework overhead** = median seconds per round of this variant ÷ plain Flower's − 1;
  target ≤ 10%.
- *trustspace, tuned*: the same with the waits trustspace ships for federated jobs
  (`trustspace.sandbox.fl_jobs.INTERVALS`: SuperExec poll 0.1 s, reply poll 0.2 s), the
  only ones Flower 1.42 lets a deployment choose (docs/federated.md, "Round times").

**Seconds.** *Start-up*: from the first process started (trustspace: `Deployment.start`, so the
throw-away CA, the three key bindings and admissions are in it; the admissions are also given
alone) until all three SuperNodes have logged their ``SuperNode ID`` (the SuperLink activated
them). *Run start*: `flwr run` submitted → the first FedAvg round's training messages sent (the
ServerApp process starting, waiting for the nodes, the query round). *Per round*: from the
round's training messages sent to the last evaluation reply received, as the app's grid records
it (wall clock in the ServerApp process; rounds are back to back, the aggregation between them
takes milliseconds). Median, min and max over all rounds of all repetitions, the mean, and each
run's median. Rounds of one run are not independent samples: the SuperNodes' 3 s pull wait and
the 3 s reply poll lock into phase, so a run's rounds take nearly the same time, 12.2 s or
15.3 s (one more pull cycle) with Flower's waits; independent runs are what the repetitions
add.

**Bytes on the wire**: every variant's SuperNodes reach the SuperLink through a small TCP relay
in this process (an asyncio thread: 127.0.0.1:<relay> → 127.0.0.1:<SuperLink port>), which
timestamps every chunk it forwards. Counted: TCP payload each way (for trustspace TLS records,
so the TLS handshake, record overhead and the authentication's signed request metadata count),
not TCP/IP headers. *Per round*: bytes forwarded within the round's span above. *Requests per
round*: request/answer exchanges the relay sees within the span (an answer's first chunk after
a request's last). *Idle*: bytes per second over 6 s after start-up, before `flwr run` (the
SuperNodes' polling), in the first repetition only. Only the SuperNode ↔ SuperLink traffic
passes the relay, the traffic that crosses between provider and consumer; the ServerApp, the
`flwr` CLI and each node's SuperExec talk to their own host's ports directly. Both variants pay
the relay's hop alike.

**CPU per round** of the processes that do the TLS and the signing and checking of the
SuperNodes' requests: the SuperLink and the three SuperNode processes (trustspace: and the
`_reaper.py` above each), their utime + stime from /proc sampled every 0.2 s and interpolated
at the round's span. Their SuperExecs and ClientApps (local traffic, the same code in every
variant) are left out. CPU time is barely disturbed by other processes on the machine, unlike
the round times, so trustspace − plain here is the framework's own cost, independent of where it
falls in the 3 s cycles.

**Check**: every run's held-out accuracy is printed and the final weights of all runs must
agree (rtol 1e-9): all variants trained the same model. A failed run stops the bench (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import importlib.metadata
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import cpu_model, progress
from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]

from trustspace.crypto import SM2PrivateKey
from trustspace.federated import (
    LOGREG_APP,
    Deployment,
    Intervals,
    SuperNodeKey,
    bind_supernode_key,
)
from trustspace.federated.app_digest import fab_sha256
from trustspace.federated.apps.logreg.logreg_app import task
from trustspace.federated.clientapp_sandbox import Guard
from trustspace.federated.deployment import RemoteSuperNode
from trustspace.sandbox.fl_jobs import INTERVALS as TUNED

HOST = "127.0.0.1"
PROVIDERS = ("hospital-a", "hospital-b", "hospital-c")
TEST_ROWS, SEED = 114, 7  # as tests/test_federated.py
TARGET_OVERHEAD = 0.10  # trustspace (Flower's waits) / plain Flower - 1, seconds per round
IDLE_SECONDS = 6.0  # two of the SuperNode's 3 s pull waits
ACTIVE = "SuperNode ID:"  # a SuperNode logs it once the SuperLink activated it
START_TIMEOUT = 120.0
RUN_TIMEOUT = 900.0
GRACE = 10.0  # seconds a plain Flower process group has after SIGTERM
PLAIN, TS, TUNED_NAME = "plain Flower", "trustspace, Flower's waits", "trustspace, tuned waits"
# What a provider's federated job runs (fl_jobs.serve): tuned waits, each ClientApp in the
# bubblewrap sandbox, the Guard (approved FAB only, each reply digested and recorded).
SANDBOXED = "trustspace as providers run it (sandboxed, guarded, tuned)"
VARIANTS = (PLAIN, TS, TUNED_NAME, SANDBOXED)
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Sizes:
    reps: int
    rounds: int


DEFAULT, QUICK = Sizes(reps=2, rounds=3), Sizes(reps=1, rounds=2)


# ==== the relay =================================================================================

UP, DOWN = 0, 1  # SuperNode -> SuperLink, SuperLink -> SuperNode


class Relay:
    """127.0.0.1:<port> → 127.0.0.1:<target>; `events` holds (time.time(), connection,
    direction, bytes) for every chunk forwarded (appended from the relay's own thread)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self.events: list[tuple[float, int, int, int]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._main, name="relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer, conn, UP),
                             self._pump(up_reader, writer, conn, DOWN))
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    conn: int, direction: int) -> None:
        try:
            while data := await reader.read(65536):
                self.events.append((time.time(), conn, direction, len(data)))
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()

    def bytes_between(self, start: float, end: float) -> tuple[int, int]:
        up = down = 0
        for t, _, direction, n in list(self.events):
            if start <= t <= end:
                if direction == UP:
                    up += n
                else:
                    down += n
        return up, down

    def exchanges(self, start: float, end: float) -> list[float]:
        """Each request/answer within [start, end], per connection: seconds from the last
        chunk of a SuperNode → SuperLink burst to the first chunk back (the SuperLink's answer
        time, TLS and the authentication check included, as the relay sees it)."""
        by_conn: dict[int, list[tuple[float, int]]] = {}
        for t, conn, direction, _ in list(self.events):
            if start <= t <= end:
                by_conn.setdefault(conn, []).append((t, direction))
        out = []
        for chunks in by_conn.values():
            last_up: float | None = None
            for t, direction in chunks:
                if direction == UP:
                    last_up = t
                elif last_up is not None:
                    out.append(t - last_up)
                    last_up = None
        return out

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            await asyncio.sleep(0.2)  # let the pumps see their sockets closed

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# ==== CPU of the long-lived Flower processes ===================================================

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()  # from the state on: fields 3, 4, ...


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK  # utime+stime


def _flower_child(reaper: int) -> int:
    """The Flower process a trustspace `_reaper.py` started (its child running `flower-*`)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            fields = _stat(int(entry.name)) if entry.name.isdigit() else None
            if fields is not None and int(fields[1]) == reaper:
                with contextlib.suppress(OSError):
                    if b"flower-" in (entry / "cmdline").read_bytes():
                        return int(entry.name)
        time.sleep(0.05)
    raise RuntimeError(f"no Flower process under reaper {reaper}")


class CpuSampler:
    """Samples, every 0.2 s, the summed CPU time of the SuperLink and SuperNode processes (and,
    for trustspace, of the `_reaper.py` above each): the processes that speak TLS and sign or
    check the SuperNodes' requests. Their SuperExecs and ClientApps (local, the same in every
    variant) are not counted."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cpu", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def _main(self) -> None:
        while True:
            self.samples.append((time.time(), sum(_cpu_seconds(p) for p in self.pids)))
            if self._stop.wait(0.2):
                return

    def at(self, t: float) -> float:
        """CPU seconds at time t, interpolated between samples."""
        samples = list(self.samples)
        for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return samples[-1][1] if samples and t > samples[-1][0] else (
            samples[0][1] if samples else 0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# ==== data ======================================================================================

@dataclass(frozen=True)
class Data:
    csvs: dict[str, Path]
    x_test: np.ndarray
    y_test: np.ndarray


def write_data(folder: Path) -> Data:
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(y))
    test, parts = order[:TEST_ROWS], np.array_split(order[TEST_ROWS:], len(PROVIDERS))
    csvs = {}
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + [task.LABEL])
    for name, rows in zip(PROVIDERS, parts, strict=True):
        path = csvs[name] = folder / name / "data.csv"
        path.parent.mkdir(parents=True)
        np.savetxt(path, np.column_stack([x[rows], y[rows]]), delimiter=",", header=header,
                   comments="", fmt="%.10g")
        path.chmod(0o644)  # the sandbox's uid reads it (clientapp_sandbox.prepare checks)
        for folder_ in (path.parent, path.parent.parent):
            folder_.chmod(0o755)
    return Data(csvs, x[test], y[test])


# ==== one run ===================================================================================

@dataclass
class RunResult:
    variant: str
    rep: int
    startup: float
    run_start: float
    flwr_run: float
    rounds: list[dict[str, Any]]  # {round, seconds, up, down, requests, rtt_ms, cpu}
    idle_bytes_per_second: float | None
    connections: int
    accuracy: float
    load: tuple[float, float, float]
    weights: list[float] = field(repr=False)
    admissions: float | None = None  # trustspace: seconds in the three `Deployment.admit`


def _wait_active(logs: Sequence[Path], alive: Callable[[], bool], tails: Callable[[], str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        texts = [p.read_text(errors="replace") if p.exists() else "" for p in logs]
        if all(ACTIVE in t for t in texts):
            return
        if not alive():
            raise RuntimeError("a Flower process exited during start-up\n" + tails())
        if time.monotonic() > deadline:
            raise RuntimeError("the SuperNodes were not activated in time\n" + tails())
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _idle(relay: Relay, rep: int) -> float | None:
    """Idle traffic, measured in the first repetition only (it hardly varies)."""
    if rep:
        return None
    start = time.time()
    time.sleep(IDLE_SECONDS)
    up, down = relay.bytes_between(start, time.time())
    return (up + down) / IDLE_SECONDS


def _summarise(variant: str, rep: int, relay: Relay, cpu: CpuSampler, result_dir: Path,
               startup: float,
               flwr_started: float, flwr_seconds: float, idle: float | None, data: Data,
               load: tuple[float, float, float]) -> RunResult:
    summary = json.loads((result_dir / "result.json").read_text())
    times = {(t, r): span for t, r, span in summary["times"]}
    rounds = []
    for key in sorted(summary["train"], key=int):
        r = int(key)
        start = times[("train", r)][0]
        end = max(span[1] for (_, rr), span in times.items() if rr == r)
        up, down = relay.bytes_between(start, end)
        rtt = relay.exchanges(start, end)
        rounds.append({"round": r, "seconds": end - start, "up": up, "down": down,
                       "requests": len(rtt), "rtt_ms": [x * 1e3 for x in rtt],
                       "cpu": cpu.at(end) - cpu.at(start)})
    with np.load(result_dir / "model.npz") as npz:
        w, mean, std = npz["weights"], npz["mean"], npz["std"]
    _, accuracy = task.evaluate(w, task.standardise(data.x_test, mean, std), data.y_test)
    first = times[("train", 1)][0]
    return RunResult(variant, rep, startup, first - flwr_started, flwr_seconds, rounds, idle,
                     relay.connections, accuracy, load, w.tolist())


def _plain_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
    bin_dir = Path(sys.executable).parent
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_plain(work: Path, data: Data, rounds: int, rep: int) -> RunResult:
    """Plain Flower, as a user would start it (no trustspace code involved)."""
    bin_dir = Path(sys.executable).parent
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            p = subprocess.Popen([str(bin_dir / argv[0]), *argv[1:]],  # noqa: S603
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=_plain_env(work / "home" / name), cwd=work,
                                 start_new_session=True)
        procs.append((name, p, log))
        return p

    def tails() -> str:
        return "\n".join(f"--- {n} ---\n" + "\n".join(log.read_text(errors="replace")
                                                      .splitlines()[-20:])
                         for n, _, log in procs)

    relay: Relay | None = None
    cpu: CpuSampler | None = None
    load = os.getloadavg()
    started = time.monotonic()
    try:
        port = _free_port()
        superlink = spawn("superlink", ["flower-superlink", "--insecure", "--host", HOST,
                                        "--port", str(port),
                                        "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if superlink.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the SuperLink did not start\n" + tails())
            time.sleep(0.05)
        relay = Relay(port).start()
        for name, csv in data.csvs.items():
            spawn(f"supernode-{name}", [
                "flower-supernode", "--insecure", "--superlink", f"{HOST}:{relay.port}",
                "--host", HOST, "--port", str(_free_port()),
                "--node-config", f"data-path={json.dumps(str(csv))}"])
        _wait_active([log for n, _, log in procs if n.startswith("supernode")],
                     lambda: all(p.poll() is None for _, p, _ in procs), tails)
        startup = time.monotonic() - started
        cpu = CpuSampler([p.pid for _, p, _ in procs]).start()
        idle = _idle(relay, rep)

        cli = work / "home" / "cli"
        cli.mkdir(parents=True, exist_ok=True)
        (cli / "config.toml").write_text(
            f'[superlink]\ndefault = "plain"\n\n[superlink.plain]\n'
            f'address = "{HOST}:{port}"\ninsecure = true\n')
        result_dir = work / "result"
        result_dir.mkdir()
        config = (f"num-server-rounds={rounds} min-nodes={len(PROVIDERS)} "
                  f"result-dir={json.dumps(str(result_dir))}")
        flwr_started, t = time.time(), time.monotonic()
        done = subprocess.run(  # noqa: S603
            [str(bin_dir / "flwr"), "run", str(LOGREG_APP), "plain", "--stream",
             "--run-config", config], capture_output=True, text=True, env=_plain_env(cli),
            cwd=cli, timeout=RUN_TIMEOUT, check=False)
        flwr_seconds = time.monotonic() - t
        (work / "logs" / "flwr-run.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not (result_dir / "result.json").exists():
            raise RuntimeError(f"flwr run ended with {done.returncode}\n"
                               + (done.stdout + done.stderr)[-3000:] + tails())
        return _summarise(PLAIN, rep, relay, cpu, result_dir, startup, flwr_started, flwr_seconds,
                          idle, data, load)
    finally:
        if cpu is not None:
            cpu.stop()
        for _, p, _ in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for _, p, _ in reversed(procs):
            try:
                p.wait(GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        _reap_orphans()
        if relay is not None:
            relay.stop()


def run_trustspace(variant: str, intervals: Intervals, work: Path, data: Data, rounds: int,
                   rep: int, sandboxed: bool = False) -> RunResult:
    """trustspace's Deployment: TLS, SuperNode keys bound to SM2 identities and admitted;
    `sandboxed`: each ClientApp in the sandbox under the provider's Guard, as fl_jobs runs it
    (the FAB hash computed once here: a provider computes it once per job)."""
    guard = Guard(fab_sha256=fab_sha256(LOGREG_APP)) if sandboxed else None
    # The providers' SM2 identities exist before any job (their membership keys).
    identities = {name: SM2PrivateKey.generate() for name in PROVIDERS}
    deployment = Deployment(work / "deployment", intervals=intervals)
    nodes: list[RemoteSuperNode] = []
    relay: Relay | None = None
    cpu: CpuSampler | None = None

    def tails() -> str:
        return "\n".join(f"--- {n.process.name} ---\n{n.process.tail(20)}" for n in nodes)

    load = os.getloadavg()
    admissions = 0.0
    started = time.monotonic()
    try:
        deployment.start()
        relay = Relay(deployment.port).start()
        for name, csv in data.csvs.items():
            identity, key = identities[name], SuperNodeKey.generate()
            binding = bind_supernode_key(name, key.public_openssh, identity)
            t = time.monotonic()
            deployment.admit(binding.to_bytes(), name, identity.public_key)
            admissions += time.monotonic() - t
            private, _ = key.write(work / name / "keys", "supernode")
            nodes.append(RemoteSuperNode(work / name, f"{HOST}:{relay.port}",
                                         deployment.ca_certificate, private, csv,
                                         intervals=intervals, name=f"supernode-{name}",
                                         sandboxed=sandboxed, guard=guard))
        _wait_active([n.process.log_path for n in nodes], lambda: all(n.running for n in nodes),
                     tails)
        startup = time.monotonic() - started
        reapers = deployment.root_pids() + [n.process.popen.pid for n in nodes]
        cpu = CpuSampler(reapers + [_flower_child(pid) for pid in reapers]).start()
        idle = _idle(relay, rep)
        flwr_started = time.time()
        result = deployment.run(LOGREG_APP, rounds, {"min-nodes": len(PROVIDERS),
                                                     "fraction-evaluate": 1.0},
                                timeout=RUN_TIMEOUT)
        (result_dir,) = [p.parent for p in (work / "deployment" / "runs").glob("*/result.json")]
        run = _summarise(variant, rep, relay, cpu, result_dir, startup, flwr_started,
                         result.seconds, idle, data, load)
        run.admissions = admissions
        return run
    finally:
        if cpu is not None:
            cpu.stop()
        for n in nodes:
            if n.running:
                n.process.popen.send_signal(signal.SIGTERM)
        for n in nodes:
            n.stop()
        deployment.stop()
        if relay is not None:
            relay.stop()


def _become_subreaper() -> None:
    """Orphans of the plain Flower trees (SuperExec does not wait for its ClientApps) become
    this process's children, so `_reap_orphans` can reap them (Linux prctl(2))."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    """Kill and reap this process's children that no Popen owns any more (called once every
    process this script started directly has been waited for)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) != me:
            continue
        pid = int(entry.name)
        if fields[0] != "Z":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


# ==== summary ===================================================================================

def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarise(runs: list[RunResult]) -> dict[str, Any]:
    by: dict[str, list[RunResult]] = {v: [r for r in runs if r.variant == v] for v in VARIANTS}
    out: dict[str, Any] = {"variants": {}}
    for v, rs in by.items():
        rounds = [x for r in rs for x in r.rounds]
        out["variants"][v] = {
            "startup": _stats([r.startup for r in rs]),
            "admissions": [r.admissions for r in rs if r.admissions is not None],
            "run_start": _stats([r.run_start for r in rs]),
            "flwr_run": _stats([r.flwr_run for r in rs]),
            "round_seconds": _stats([x["seconds"] for x in rounds]),
            "round_bytes": _stats([x["up"] + x["down"] for x in rounds]),
            "round_up": _stats([x["up"] for x in rounds]),
            "round_down": _stats([x["down"] for x in rounds]),
            "round_mean_seconds": statistics.fmean(x["seconds"] for x in rounds),
            "idle_bytes_per_second": _stats([r.idle_bytes_per_second for r in rs
                                             if r.idle_bytes_per_second is not None]),
            "requests": _stats([x["requests"] for x in rounds]),
            "rtt_ms": _stats([m for x in rounds for m in x["rtt_ms"]]),
            "cpu": _stats([x["cpu"] for x in rounds]),
            "connections": _stats([r.connections for r in rs]),
            "run_medians": [statistics.median(x["seconds"] for x in r.rounds) for r in rs],
            "accuracy": sorted({round(r.accuracy, 4) for r in rs}),
        }
    med = {v: out["variants"][v]["round_seconds"]["median"] for v in VARIANTS}
    byt = {v: out["variants"][v]["round_bytes"]["median"] for v in VARIANTS}

    def total(x: dict[str, Any]) -> float:
        return float(x["up"] + x["down"])

    def paired(a: str, b: str, key: str) -> list[float]:
        """Per repetition: median over a's rounds ÷ median over b's rounds."""
        value: Callable[[dict[str, Any]], float] = (
            (lambda x: float(x["seconds"])) if key == "seconds" else total)
        ratios = []
        for rep in sorted({r.rep for r in runs}):
            (ra,) = [r for r in by[a] if r.rep == rep]
            (rb,) = [r for r in by[b] if r.rep == rep]
            ratios.append(statistics.median(map(value, ra.rounds))
                          / statistics.median(map(value, rb.rounds)))
        return ratios

    overhead = med[TS] / med[PLAIN] - 1
    v = out["variants"]
    out["overhead"] = {
        "seconds": overhead, "seconds_per_rep": [x - 1 for x in paired(TS, PLAIN, "seconds")],
        "bytes": byt[TS] / byt[PLAIN] - 1,
        "bytes_per_rep": [x - 1 for x in paired(TS, PLAIN, "bytes")],
        "mean_seconds": v[TS]["round_mean_seconds"] / v[PLAIN]["round_mean_seconds"] - 1,
        "cpu_seconds": v[TS]["cpu"]["median"] - v[PLAIN]["cpu"]["median"],
        "cpu_share": (v[TS]["cpu"]["median"] - v[PLAIN]["cpu"]["median"]) / med[PLAIN],
        "target": TARGET_OVERHEAD, "verdict": "PASS" if overhead <= TARGET_OVERHEAD else "BELOW",
    }
    out["tuned"] = {
        "vs_ts": med[TUNED_NAME] / med[TS] - 1,
        "vs_ts_per_rep": [x - 1 for x in paired(TUNED_NAME, TS, "seconds")],
        "vs_plain": med[TUNED_NAME] / med[PLAIN] - 1,
        "vs_plain_per_rep": [x - 1 for x in paired(TUNED_NAME, PLAIN, "seconds")],
        "seconds_saved": med[TS] - med[TUNED_NAME],
        "bytes": byt[TUNED_NAME] / byt[TS] - 1,
    }
    out["sandboxed"] = {
        "vs_tuned": med[SANDBOXED] / med[TUNED_NAME] - 1,
        "vs_tuned_per_rep": [x - 1 for x in paired(SANDBOXED, TUNED_NAME, "seconds")],
        "vs_plain": med[SANDBOXED] / med[PLAIN] - 1,
        "vs_plain_per_rep": [x - 1 for x in paired(SANDBOXED, PLAIN, "seconds")],
    }
    return out


def _pct(x: float) -> str:
    return f"{x * 100:+.0f}%"


def _range(values: Sequence[float]) -> str:
    return ", ".join(_pct(v) for v in values)


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    s = meta["sizes"]
    out = [f"Federated rounds, {s['reps']} repetition(s) × {s['rounds']} rounds per variant, "
           f"3 SuperNodes, breast-cancer data ({meta['date']}; {meta['cpu']}, {meta['nproc']} "
           f"CPUs, Python {meta['python']}, flwr {meta['flwr']}; 1-minute load average "
           f"{meta['load'][0]:.1f}–{meta['load'][1]:.1f} at the runs' starts)", "",
           "| variant | s/round median | min | max | mean | per run (median) | start-up s | "
           "of which admissions, s | flwr run → round 1, s |",
           "|---|--:|--:|--:|--:|---|--:|--:|--:|"]
    for v in VARIANTS:
        x = summary["variants"][v]
        rs, su, rn = x["round_seconds"], x["startup"], x["run_start"]
        out.append(
            f"| {v} | **{rs['median']:.1f}** | {rs['min']:.1f} | {rs['max']:.1f} | "
            f"{x['round_mean_seconds']:.1f} | "
            f"{', '.join(f'{m:.1f}' for m in x['run_medians'])} | "
            f"{su['median']:.1f} ({su['min']:.1f}–{su['max']:.1f}) | "
            + (f"{statistics.median(x['admissions']):.1f}" if x["admissions"] else "—")
            + f" | {rn['median']:.1f} ({rn['min']:.1f}–{rn['max']:.1f}) |")
    out += ["", "| variant | bytes/round median | up / down | min–max | requests/round | "
            "CPU s/round, median (min–max) | idle B/s | TCP connections per run |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for v in VARIANTS:
        x = summary["variants"][v]
        b, c = x["round_bytes"], x["cpu"]
        idle = x["idle_bytes_per_second"]
        out.append(
            f"| {v} | **{b['median'] / 1e3:.1f} kB** | {x['round_up']['median'] / 1e3:.1f} / "
            f"{x['round_down']['median'] / 1e3:.1f} kB | "
            f"{b['min'] / 1e3:.1f}–{b['max'] / 1e3:.1f} kB | {x['requests']['median']:.0f} | "
            f"{c['median']:.2f} ({c['min']:.2f}–{c['max']:.2f}) | "
            f"{idle['median']:.0f} | {x['connections']['median']:.0f} |")
    o, t = summary["overhead"], summary["tuned"]
    out += ["", "| figure | value | per repetition | target | verdict |", "|---|--:|---|--:|---|",
            f"| framework overhead, s/round medians (trustspace with Flower's waits ÷ plain "
            f"− 1) | {_pct(o['seconds'])} | {_range(o['seconds_per_rep'])} | "
            f"≤ {o['target'] * 100:.0f}% | {o['verdict']} |",
            f"| the same, means over rounds | {_pct(o['mean_seconds'])} | | | |",
            f"| CPU/round of SuperLink + SuperNodes (+ reapers), trustspace − plain (TLS, "
            f"signing and checking requests) | {o['cpu_seconds']:+.2f} s "
            f"({o['cpu_share'] * 100:+.1f}% of plain's round) | | | |",
            f"| bytes/round, trustspace ÷ plain − 1 | "
            f"{_pct(o['bytes'])} | {_range(o['bytes_per_rep'])} | | |",
            f"| tuned waits ÷ Flower's waits − 1, s/round (trustspace) | {_pct(t['vs_ts'])} "
            f"({-t['seconds_saved']:+.1f} s) | {_range(t['vs_ts_per_rep'])} | | |",
            f"| tuned trustspace ÷ plain Flower − 1, s/round | {_pct(t['vs_plain'])} | "
            f"{_range(t['vs_plain_per_rep'])} | | |",
            f"| as providers run it ÷ tuned − 1 (the sandbox and the guard), s/round | "
            f"{_pct(summary['sandboxed']['vs_tuned'])} | "
            f"{_range(summary['sandboxed']['vs_tuned_per_rep'])} | | |",
            f"| as providers run it ÷ plain Flower − 1, s/round | "
            f"{_pct(summary['sandboxed']['vs_plain'])} | "
            f"{_range(summary['sandboxed']['vs_plain_per_rep'])} | | |"]
    accs = {v: summary["variants"][v]["accuracy"] for v in VARIANTS}
    out += ["", "Held-out accuracy (114 rows): " + "; ".join(
        f"{v} {', '.join(f'{a:.4f}' for a in accs[v])}" for v in VARIANTS)
        + f"; final weights of all runs equal to rtol 1e-9: {meta['same_model']}.",
        f"Whole run {meta['seconds']:.0f} s."]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, help="repetitions per variant (default 2)")
    parser.add_argument("--rounds", type=int, help="FedAvg rounds per run (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 repetition × 2 rounds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULT
    sizes = Sizes(args.reps or base.reps, args.rounds or base.rounds)
    _become_subreaper()
    began = time.perf_counter()
    runs: list[RunResult] = []
    order_rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="ts-bench-fl-") as tmp:
        root = Path(tmp)
        data = write_data(root / "data")
        for rep in range(sizes.reps):
            order = list(VARIANTS)
            order_rng.shuffle(order)
            for variant in order:
                work = root / f"rep{rep}" / {PLAIN: "plain", TS: "default", TUNED_NAME: "tuned",
                                              SANDBOXED: "sandboxed"}[variant]
                progress(f"rep {rep + 1}/{sizes.reps}: {variant} ...")
                t_run = time.monotonic()
                try:
                    if variant == PLAIN:
                        r = run_plain(work, data, sizes.rounds, rep)
                    else:
                        r = run_trustspace(variant, TUNED if variant in (TUNED_NAME, SANDBOXED)
                                           else Intervals(), work, data, sizes.rounds, rep,
                                           sandboxed=variant == SANDBOXED)
                except Exception as e:  # noqa: BLE001 - report and stop, exit 1
                    progress(f"FAILED: {variant}: {e}")
                    return 1
                runs.append(r)
                progress(f"  {time.monotonic() - t_run:.0f} s in all: start-up {r.startup:.1f} s, "
                         f"run start {r.run_start:.1f} s, rounds "
                         + ", ".join(f"{x['seconds']:.1f} s / {(x['up'] + x['down']) / 1e3:.0f} kB"
                                     for x in r.rounds)
                         + f", acc {r.accuracy:.4f}")
    w0 = np.asarray(runs[0].weights)
    same = all(np.allclose(np.asarray(r.weights), w0, rtol=1e-9, atol=1e-12) for r in runs)
    loads = [r.load[0] for r in runs]
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
        "flwr": importlib.metadata.version("flwr"), "sizes": asdict(sizes),
        "load": (min(loads), max(loads)), "same_model": same,
        "tuned": asdict(TUNED), "seconds": time.perf_counter() - began,
    }
    summary = summarise(runs)
    print(render(summary, meta))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "summary": summary,
                                         "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

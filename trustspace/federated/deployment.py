"""Real Flower processes on loopback: one SuperLink, one SuperNode per provider, `flwr run`.

Flower 1.42's Deployment Engine (not its simulation engine), started the way
docs/federated.md describes: every process gets its own FLWR_HOME under the deployment's work
directory, telemetry and update checks off, runtime dependency installation off, ports chosen
free at start. With `auth=True` (the default) the SuperLink serves TLS with a throw-away CA and
admits only SuperNode keys registered through `admit`, which first checks the provider's SM2
binding of the key (`keys.verify_binding`).

Each Flower process runs under `_reaper.py`, a small init that adopts and reaps the whole tree
(SuperNodes start a `flower-superexec`, which starts a `flwr-clientapp` per message and leaves
them zombies); `stop` asks each to end its tree and waits for it.

A trustspace Flower app accepts a `result-dir` run-config value and writes there, when the run
ends, `result.json` (per-round metrics, the node ids that replied, round times) and
`model.npz` (the final arrays); `run` reads both into a `FederatedResult`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from trustspace.crypto import SignedDocument, SM2PublicKey

from . import clientapp_sandbox
from ._tls import TlsFiles, make_loopback_tls
from .app_digest import app_digest
from .keys import KeyBinding, SuperNodeKey, verify_binding

_HOST = "127.0.0.1"
_CONNECTION = "trustspace"
_REAPER = Path(__file__).with_name("_reaper.py")
_GRACE = 5.0  # seconds a Flower process has to stop after SIGTERM before its tree is killed


class FlowerError(RuntimeError):
    """A Flower process or command failed; `log` is the tail of what it wrote."""

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        super().__init__(message + (f"\n--- log tail ---\n{log}" if log else ""))


@dataclass(frozen=True)
class Intervals:
    """The waits Flower 1.42 lets a deployment choose (see docs/federated.md).

    - `superexec_poll`: how often a SuperExec asks for work before it starts a ClientApp or
      ServerApp process (FLWR_SUPEREXEC_TASK_POLL_INTERVAL; Flower's default 1 s, 0.01..60).
    - `reply_poll`: how often the ServerApp asks the SuperLink for replies; Flower's grid
      sleeps a fixed 3 s, the shipped app's grid takes this value (`reply-poll-interval`).

    Not settable in 1.42: the SuperNode's 3 s sleep between two empty pulls
    (`supernode/start_client_internal.py`) and the start of a fresh `flwr-clientapp` process
    for every message.
    """

    superexec_poll: float = 1.0
    reply_poll: float = 3.0

    def __post_init__(self) -> None:
        for name in ("superexec_poll", "reply_poll"):
            if not 0.01 <= getattr(self, name) <= 60:
                raise ValueError(f"{name} must be within [0.01, 60] seconds")


@dataclass(frozen=True)
class RoundReport:
    round: int
    train: Mapping[str, float]
    evaluate: Mapping[str, float]
    trained_by: tuple[str, ...]  # provider names (a node id when no provider is known)
    evaluated_by: tuple[str, ...]
    failed: tuple[str, ...]
    seconds: float  # from sending the round's training messages to its last reply


@dataclass(frozen=True)
class Progress:
    """One exchange of a running federated job as it ended: a query, a train or an evaluate
    round; who answered, who failed, the replies' metrics averaged by number of examples."""

    kind: str  # the message type: "query", "train", "evaluate"
    round: int  # the server round (-1: not part of a round)
    replied: tuple[str, ...]
    failed: tuple[str, ...]
    seconds: float
    metrics: Mapping[str, float]
    digests: Mapping[str, str] = field(default_factory=dict)  # provider -> reply's SM3


@dataclass(frozen=True)
class FederatedResult:
    rounds: tuple[RoundReport, ...]
    arrays: Mapping[str, npt.NDArray[Any]]
    app_digest: str
    seconds: float  # wall time of `flwr run`, from submission to the end of the run
    log: str  # what `flwr run --stream` printed


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class SuperNode:
    provider: str
    port: int
    data_path: Path
    process: _Process
    node_id: int | None = None
    superexec: _Process | None = None  # sandboxed: the SuperExec that launches its ClientApps
    sandbox: Path | None = None  # sandboxed: the clientapp_sandbox folder

    @property
    def running(self) -> bool:
        return _alive(self.process, self.superexec)

    def sent_updates(self) -> list[dict[str, Any]]:
        """What each sandboxed ClientApp recorded of its reply (`clientapp_sandbox`)."""
        return [] if self.sandbox is None else clientapp_sandbox.sent_updates(self.sandbox)

    def log(self) -> str:
        return _tails(self.process, self.superexec, 200, 120)


def _alive(process: _Process, superexec: _Process | None) -> bool:
    """A SuperNode runs while its process and, when sandboxed, its SuperExec both do."""
    return process.popen.poll() is None and (superexec is None or superexec.popen.poll() is None)


def _tails(process: _Process, superexec: _Process | None, alone: int, each: int) -> str:
    if superexec is None:
        return process.tail(alone)
    return process.tail(each) + "\n--- superexec ---\n" + superexec.tail(each)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((_HOST, port)) == 0


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string for these paths


def _run_config(values: Mapping[str, str | int | float | bool]) -> str:
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = _toml_string(value)
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


@dataclass
class Deployment:
    """One SuperLink and its SuperNodes, all on loopback, all under `workdir`."""

    workdir: Path
    auth: bool = True
    intervals: Intervals = field(default_factory=Intervals)
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self._processes: list[_Process] = []
        self._tls: TlsFiles | None = None
        self._node_names: dict[int, str] = {}
        self.supernodes: list[SuperNode] = []
        self._sandboxes: list[Path] = []  # clientapp_sandbox folders, cleaned up at stop
        self.port = 0

    # ---- processes ---------------------------------------------------------------------------

    def _env(self, home: Path) -> dict[str, str]:
        return _flower_env(home, self.intervals, self.bin_dir)

    def _spawn(self, name: str, argv: list[str], home: Path,
               path_first: Path | None = None) -> _Process:
        process = _spawn(name, argv, home, self.workdir / "logs", self.intervals, self.bin_dir,
                         path_first)
        self._processes.append(process)
        return process

    @property
    def superlink_address(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def ca_certificate(self) -> bytes:
        """The PEM of the throw-away CA the SuperLink's certificate chains to (SuperNodes
        elsewhere need it as their root certificate)."""
        if self._tls is None:
            raise RuntimeError("this deployment runs without TLS")
        return self._tls.ca_cert.read_bytes()

    def _wait_listening(self, process: _Process, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not _listening(port):
            if process.popen.poll() is not None:
                raise FlowerError(f"{process.name} exited with {process.popen.returncode}",
                                  process.tail())
            if time.monotonic() > deadline:
                raise FlowerError(f"{process.name} did not listen on {port}", process.tail())
            time.sleep(0.1)

    def start(self) -> Deployment:
        """Start the SuperLink and write the `flwr` CLI's connection to it."""
        if self._processes:
            raise RuntimeError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = ["flower-superlink", "--host", _HOST, "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.auth:
            self._tls = make_loopback_tls(self.workdir / "tls")
            argv += ["--ssl-certfile", str(self._tls.server_cert),
                     "--ssl-keyfile", str(self._tls.server_key),
                     "--ssl-ca-certfile", str(self._tls.ca_cert), "--enable-supernode-auth"]
        else:
            argv.append("--insecure")
        superlink = self._spawn("superlink", argv, self.workdir / "home" / "superlink")
        self._write_cli_config()
        self._wait_listening(superlink, self.port)
        return self

    def _cli_home(self) -> Path:
        return self.workdir / "home" / "consumer-cli"

    def _write_cli_config(self) -> None:
        home = self._cli_home()
        home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f"default = {_toml_string(_CONNECTION)}", "",
                 f"[superlink.{_CONNECTION}]", f"address = {_toml_string(f'{_HOST}:{self.port}')}"]
        if self._tls is None:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {_toml_string(str(self._tls.ca_cert))}")
        (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _flwr(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed argv of Flower's own CLI
            [str(self.bin_dir / "flwr"), *args], capture_output=True, text=True,
            env=self._env(self._cli_home()), cwd=self._cli_home(), timeout=timeout,
            check=False)

    def _flwr_following(self, args: list[str], timeout: float, progress: Path,
                        on_progress: Callable[[Progress], None]
                        ) -> subprocess.CompletedProcess[str]:
        """`_flwr`, calling `on_progress` for each new line of `progress` while it runs."""
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            popen = subprocess.Popen(  # noqa: S603 - fixed argv of Flower's own CLI
                [str(self.bin_dir / "flwr"), *args], stdout=stdout, stderr=stderr, text=True,
                env=self._env(self._cli_home()), cwd=self._cli_home())
            deadline = time.monotonic() + timeout
            seen = 0
            while True:
                ended = popen.poll() is not None
                lines = progress.read_text(encoding="utf-8").splitlines() \
                    if progress.exists() else []
                for line in lines[seen:]:
                    if line.endswith("}"):  # a line still being written waits for next time
                        on_progress(self._progress(json.loads(line)))
                        seen += 1
                    else:
                        break
                if ended:
                    break
                if time.monotonic() > deadline:
                    popen.kill()
                    popen.wait()
                    raise subprocess.TimeoutExpired(args, timeout)
                time.sleep(0.2)
            stdout.seek(0)
            stderr.seek(0)
            return subprocess.CompletedProcess(args, popen.returncode, stdout.read(),
                                               stderr.read())

    def _progress(self, line: dict[str, Any]) -> Progress:
        return Progress(kind=str(line["type"]), round=int(line["round"]),
                        replied=self._who(line.get("replied", [])),
                        failed=self._who(line.get("failed", [])),
                        seconds=float(line.get("seconds", 0.0)),
                        metrics={k: float(v) for k, v in line.get("metrics", {}).items()},
                        digests={self._who([int(n)])[0]: str(d)
                                 for n, d in line.get("digests", {}).items()})

    def registered_nodes(self) -> list[dict[str, Any]]:
        """The SuperNodes the SuperLink knows (`flwr supernode ls --format json`)."""
        done = self._flwr(["supernode", "ls", _CONNECTION, "--format", "json"], timeout=60)
        try:
            nodes: list[dict[str, Any]] = json.loads(done.stdout)["nodes"]
        except (ValueError, KeyError, TypeError):
            raise FlowerError("flwr supernode ls failed", done.stdout + done.stderr) from None
        return nodes

    # ---- SuperNodes --------------------------------------------------------------------------

    def admit(self, binding: SignedDocument | bytes | dict[str, Any], provider: str,
              provider_key: SM2PublicKey) -> int:
        """Register the SuperNode key `binding` binds to `provider` (checked first, raising
        `keys.BindingInvalid`); return the node id the SuperLink gives it."""
        bound: KeyBinding = verify_binding(binding, provider, provider_key)
        if not self.auth:
            raise RuntimeError("this deployment runs without SuperNode authentication")
        pub = self.workdir / "keys" / f"admitted-{len(self._node_names)}.pub"
        pub.parent.mkdir(parents=True, exist_ok=True)
        pub.write_bytes(bound.public_openssh + b"\n")
        done = self._flwr(["supernode", "register", str(pub), _CONNECTION, "--name", provider,
                           "--format", "json"], timeout=60)
        try:
            node_id = int(json.loads(done.stdout)["node-id"])
        except (ValueError, KeyError, TypeError):
            raise FlowerError(f"registering {provider}'s SuperNode key failed",
                              done.stdout + done.stderr) from None
        self._node_names[node_id] = provider
        return node_id

    def start_supernode(self, provider: str, data_path: Path,
                        key: SuperNodeKey | None = None, wait: bool = True, *,
                        sandboxed: bool = False,
                        guard: clientapp_sandbox.Guard | None = None) -> SuperNode:
        """Start `provider`'s SuperNode; its ClientApp gets `data-path` in its node config.
        `sandboxed`: each ClientApp runs in the bubblewrap sandbox (`clientapp_sandbox`),
        with only that file, at the sandbox path its node config then names."""
        if not self._processes:
            raise RuntimeError("start the SuperLink first")
        port = free_port()
        index = len(self.supernodes)
        name = f"supernode-{index}-{provider}"
        home = self.workdir / "home" / name
        argv = ["flower-supernode", "--superlink", f"{_HOST}:{self.port}",
                "--host", _HOST, "--port", str(port),
                "--node-config", _node_config(data_path, sandboxed)]
        if sandboxed:
            argv += ["--isolation", "process"]
        if self._tls is None:
            argv.append("--insecure")
        else:
            if key is None:
                raise ValueError("an authenticated deployment needs the SuperNode's key")
            private, _ = key.write(home / "keys", "supernode")
            argv += ["--root-certificates", str(self._tls.ca_cert),
                     "--auth-supernode-private-key", str(private)]
        process = self._spawn(name, argv, home)
        superexec = None
        if sandboxed:
            self._sandboxes.append(self.workdir / "sandbox" / name)
            sandbox_bin = clientapp_sandbox.prepare(self._sandboxes[-1], port, data_path,
                                                    guard=guard)
            superexec = self._spawn(f"{name}-superexec", _superexec_argv(port),
                                    self.workdir / "home" / f"{name}-superexec", sandbox_bin)
        node = SuperNode(provider, port, Path(data_path), process, superexec=superexec,
                         sandbox=self._sandboxes[-1] if sandboxed else None)
        self.supernodes.append(node)
        if wait:
            self._wait_listening(process, port)
        return node

    # ---- runs --------------------------------------------------------------------------------

    def run(self, app_dir: Path, rounds: int,
            config: Mapping[str, str | int | float | bool] | None = None,
            timeout: float = 900.0,
            on_progress: Callable[[Progress], None] | None = None) -> FederatedResult:
        """`flwr run <app_dir> --stream` for `rounds` rounds; wait for the end, read results.
        `on_progress` is called (in this thread) with each exchange of the run as it ends, as
        the app reports it (`progress.jsonl` in its result dir; apps/logreg writes it)."""
        app_dir = Path(app_dir).resolve()
        digest = app_digest(app_dir)
        out = self.workdir / "runs" / f"run-{time.monotonic_ns()}"
        out.mkdir(parents=True)
        values: dict[str, str | int | float | bool] = {
            "num-server-rounds": rounds, "reply-poll-interval": self.intervals.reply_poll,
            "result-dir": str(out)}
        values.update(config or {})
        started = time.monotonic()
        args = ["run", str(app_dir), _CONNECTION, "--stream", "--run-config", _run_config(values)]
        if on_progress is None:
            done = self._flwr(args, timeout=timeout)
        else:
            done = self._flwr_following(args, timeout, out / "progress.jsonl", on_progress)
        seconds = time.monotonic() - started
        log = done.stdout + done.stderr
        (out / "flwr-run.log").write_text(log, encoding="utf-8")
        if done.returncode != 0 or not (out / "result.json").exists():
            raise FlowerError(f"flwr run ended with {done.returncode} and no result",
                              "\n".join(log.splitlines()[-60:]))
        summary = json.loads((out / "result.json").read_text(encoding="utf-8"))
        with np.load(out / "model.npz") as npz:
            arrays = {name: npz[name] for name in npz.files}
        return FederatedResult(self._rounds(summary), arrays, digest, seconds, log)

    def _who(self, node_ids: list[int]) -> tuple[str, ...]:
        return tuple(sorted(self._node_names.get(n, str(n)) for n in node_ids))

    def _rounds(self, summary: dict[str, Any]) -> tuple[RoundReport, ...]:
        def table(name: str) -> dict[tuple[str, int], list[int]]:
            return {(t, r): ids for t, r, ids in summary[name]}

        replied, failed = table("replied"), table("failed")
        times = {(t, r): span for t, r, span in summary["times"]}
        reports = []
        for key in sorted(summary["train"], key=int):
            r = int(key)
            start = times[("train", r)][0]
            end = max(span[1] for (t, rr), span in times.items() if rr == r)
            reports.append(RoundReport(
                round=r, train=summary["train"][key],
                evaluate=summary["evaluate"].get(key, {}),
                trained_by=self._who(replied.get(("train", r), [])),
                evaluated_by=self._who(replied.get(("evaluate", r), [])),
                failed=self._who(failed.get(("train", r), []) + failed.get(("evaluate", r), [])),
                seconds=end - start))
        return tuple(reports)

    @property
    def admitted(self) -> dict[int, str]:
        """Node id -> provider, of every SuperNode key `admit` registered."""
        return dict(self._node_names)

    def root_pids(self) -> list[int]:
        """The pid of the reaper at the root of each process tree this deployment started."""
        return [p.popen.pid for p in self._processes]

    # ---- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """End every process tree this deployment started (SuperNodes first); reap them."""
        for process in reversed(self._processes):  # all asked at once: each may take _GRACE
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in reversed(self._processes):
            _end(process.popen)
        self._processes.clear()
        for folder in self._sandboxes:
            clientapp_sandbox.cleanup(folder)

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _node_config(data_path: Path, sandboxed: bool) -> str:
    """The SuperNode's node config: the ClientApp's `data-path`, as the ClientApp sees it."""
    if sandboxed:
        return _run_config({"data-path": clientapp_sandbox.inside_data_path(data_path)})
    return _run_config({"data-path": str(Path(data_path).resolve())})


def _superexec_argv(port: int) -> list[str]:
    """The SuperExec of a sandboxed SuperNode (`--isolation process`): it polls the node's
    runtime API and starts `flwr-clientapp`, which its PATH makes `clientapp_sandbox`'s."""
    return ["flower-superexec", "--insecure", "--runtime-api-address", f"{_HOST}:{port}"]


def _flower_env(home: Path, intervals: Intervals, bin_dir: Path,
                path_first: Path | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    path = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if path_first is not None:
        path = f"{path_first}{os.pathsep}{path}"
    env.update({
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": repr(intervals.superexec_poll),
        "PATH": path,
        "PYTHONUNBUFFERED": "1",
        "TS_REAPER_PARENT": str(os.getpid()),  # _reaper.py ends the tree when we are gone
    })
    return env


def _spawn(name: str, argv: list[str], home: Path, logs: Path, intervals: Intervals,
           bin_dir: Path, path_first: Path | None = None) -> _Process:
    log_path = logs / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(  # noqa: S603 - fixed argv of Flower's own executables
            [sys.executable, str(_REAPER), repr(_GRACE), "--",
             str(bin_dir / argv[0]), *argv[1:]], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT,
            env=_flower_env(home, intervals, bin_dir, path_first),
            cwd=home, start_new_session=True)
    return _Process(name, popen, log_path)


class RemoteSuperNode:
    """A provider's SuperNode for a consumer's SuperLink elsewhere (a federated job): TLS to
    the SuperLink with the CA the consumer sent, authenticated with the provider's key (its
    binding sent to the consumer beforehand), the ClientApp's `data-path` the provider's file.
    `sandboxed`: each ClientApp runs in the bubblewrap sandbox (`clientapp_sandbox`) with that
    file alone, under a SuperExec of its own (`--isolation process`)."""

    def __init__(self, workdir: Path, superlink: str, root_certificate: bytes,
                 private_key: Path, data_path: Path, *, intervals: Intervals | None = None,
                 bin_dir: Path | None = None, name: str = "supernode",
                 sandboxed: bool = False,
                 guard: clientapp_sandbox.Guard | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ca = workdir / "superlink-ca.pem"
        ca.write_bytes(root_certificate)
        self.port = free_port()
        intervals = intervals or Intervals()
        bin_dir = bin_dir or Path(sys.executable).parent
        argv = ["flower-supernode", "--superlink", superlink, "--host", _HOST,
                "--port", str(self.port), "--node-config", _node_config(data_path, sandboxed),
                "--root-certificates", str(ca), "--auth-supernode-private-key", str(private_key)]
        sandbox_bin = None
        self._sandbox = workdir / "sandbox"
        if sandboxed:
            argv += ["--isolation", "process"]
            sandbox_bin = clientapp_sandbox.prepare(self._sandbox, self.port, data_path,
                                                    guard=guard)
        self.process = _spawn(name, argv, workdir / "home", workdir / "logs", intervals, bin_dir)
        self.superexec: _Process | None = None
        if sandbox_bin is not None:
            self.superexec = _spawn(f"{name}-superexec", _superexec_argv(self.port),
                                    workdir / "home-superexec", workdir / "logs", intervals,
                                    bin_dir, sandbox_bin)

    @property
    def running(self) -> bool:
        return _alive(self.process, self.superexec)

    def sent_updates(self) -> list[dict[str, Any]]:
        """What each sandboxed ClientApp recorded of its reply (`clientapp_sandbox`)."""
        return clientapp_sandbox.sent_updates(self._sandbox)

    def log(self) -> str:
        return _tails(self.process, self.superexec, 60, 50)

    def stop(self) -> None:
        if self.superexec is not None:
            _end(self.superexec.popen)
        _end(self.process.popen)
        if self.superexec is not None:
            clientapp_sandbox.cleanup(self._sandbox)


def _end(popen: subprocess.Popen[bytes]) -> None:
    """Stop one reaper (`_reaper.py`) and the tree under it; reap it. If the reaper itself
    hangs, SIGKILL its process group (it leads one: start_new_session=True)."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=_GRACE + 10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()

"""A provider's Flower ClientApp in the bubblewrap sandbox (issue 9).

A SuperNode started with ``--isolation process`` launches no ClientApp itself: a separately
started ``flower-superexec --insecure --runtime-api-address 127.0.0.1:<runtime port>`` polls it
and runs ``flwr-clientapp --runtime-api-address A --token T --insecure`` for every message,
found on its PATH. `prepare` writes a folder whose ``flwr-clientapp`` the deployment puts first
on that SuperExec's PATH; it runs `launch`, which for each message

1. listens on a fresh Unix socket (in a 0700 folder of its own) and relays each connection to
   the SuperNode's runtime port on 127.0.0.1, and nowhere else (`_Relay`);
2. runs the real ClientApp in `BubblewrapSandbox` (the sandbox jobs use: every namespace,
   uid 65534 mapped to an unused host uid, seccomp, rlimits, scrubbed environment) with
   `_clientapp_entry.py` as the job's code, the provider's file alone at `DATA_DIR/<name>`
   (`inside_data_path`: the SuperNode's node config names that path, not the host's), the
   socket at /job/sockets/runtime, a tmpfs /work where Flower unpacks the app (FAB) it
   receives, and the node's site-packages read-only;
3. writes the sandbox's outcome and output to its stderr (the SuperExec's log), appends what
   the entry recorded of the message (the reply's SM3 digest, whether DP was applied, or why
   the app was refused) to the folder's ``updates.jsonl`` (`sent_updates` reads it), and
   exits with the sandbox's status.

`Guard` is what the provider enforces inside (the entry script's docstring): the approved
app's FAB hash and the differential privacy every train reply gets.

Inside, the entry script points Flower's runtime HTTP client at the socket (Flower refuses
``unix:`` addresses and the seccomp filter refuses every socket but AF_UNIX, so the sandbox has
no TCP port at all) and runs flwr-clientapp's own ``main``. A ClientApp that opens another
file finds nothing (only its data file, Python and the packages are mounted), one that opens a
TCP socket or resolves a name gets EACCES, and one that runs away hits the limits; the SuperNode
is a separate process outside and sees a ClientApp that failed.

`launch` is run by the node's own Python as root (bubblewrap needs it for the uid mapping, as
for sandbox jobs); it trusts its configuration file (written by `prepare`) and checks the
arguments the SuperExec passes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trustspace import strict_json
from trustspace.sandbox.errors import SandboxError
from trustspace.sandbox.runner import DEFAULT_HOST_ID, BubblewrapSandbox, Limits, SandboxJob

__all__ = ["CLIENTAPP_LIMITS", "DATA_DIR", "Guard", "cleanup", "inside_data_path", "launch",
           "prepare", "sent_updates"]

#: Where the provider's file appears inside the sandbox.
DATA_DIR = "/data"
#: Per ClientApp process (one message): Flower and NumPy need more address space and
#: threads than a plain job; a message that takes longer than the wall limit is killed.
CLIENTAPP_LIMITS = Limits(cpu_seconds=300, wall_seconds=600.0, memory_bytes=4096 * 1024 * 1024,
                          processes=64, open_files=256, work_bytes=256 * 1024 * 1024)
_HOST = "127.0.0.1"
_ENTRY = Path(__file__).with_name("_clientapp_entry.py")
_DIGEST = Path(__file__).with_name("update_digest.py")
_UPDATES = "updates.jsonl"
_MAX_RECORD = 4096  # bytes of one update.json: the entry writes a few hundred
_SOCKET_BASE = 80  # longest folder for the sockets (a socket's path has at most 108 bytes)
_CONFIG = "clientapp-sandbox.json"
_MAX_CONNECTIONS = 16  # relayed connections open at once, per ClientApp
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Guard:
    """What the provider enforces on each sandboxed ClientApp: the sha256 of the approved
    app's FAB (None: not checked) and differential privacy for every train reply (None:
    none), as ``{"clipping_norm": C, "noise_multiplier": z}``."""

    fab_sha256: str | None = None
    dp: Mapping[str, float] | None = None
    metrics: Sequence[str] | None = None  # the metrics train/evaluate replies may carry


def inside_data_path(data_path: Path) -> str:
    """The path of the provider's file inside the sandbox: ``/data/dataset<ext>``."""
    suffix = Path(data_path).resolve().suffix.lower()
    ok = 1 < len(suffix) <= 17 and suffix[1:].isascii() and suffix[1:].isalnum()
    return f"{DATA_DIR}/dataset{suffix if ok else ''}"


def prepare(folder: Path, runtime_port: int, data_path: Path,
            limits: Limits = CLIENTAPP_LIMITS, guard: Guard | None = None) -> Path:
    """Write `folder`/bin/flwr-clientapp (the launcher) and its configuration; return the bin
    folder, to put first on the SuperExec's PATH. `cleanup(folder)` when the SuperNode ended."""
    data = Path(data_path).resolve()
    info = data.stat()
    if not (info.st_mode & 0o004 or (info.st_gid == DEFAULT_HOST_ID and info.st_mode & 0o040)):
        raise PermissionError(f"{data} is not readable by the sandbox's user: make it "
                              f"world-readable or give group {DEFAULT_HOST_ID} read access")
    folder = Path(folder).resolve()
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    sockets = folder / "s"
    if len(str(sockets)) <= _SOCKET_BASE:
        sockets.mkdir(mode=0o700, exist_ok=True)
    else:
        sockets = Path(tempfile.mkdtemp(prefix="ts-fl-"))
    config = folder / _CONFIG
    config.write_text(json.dumps({
        "runtime_port": runtime_port, "data_path": str(data),
        "inside": inside_data_path(data_path), "limits": asdict(limits),
        "runs": str(folder / "runs"), "sockets": str(sockets),
        "updates": str(folder / _UPDATES),
        "guard": {"fab_sha256": guard.fab_sha256, "dp": dict(guard.dp) if guard.dp else None,
                  "metrics": None if guard.metrics is None else sorted(guard.metrics)}
        if guard else {}}), encoding="utf-8")
    root = Path(__file__).resolve().parents[2]  # the folder that holds the trustspace package
    script = bin_dir / "flwr-clientapp"
    script.write_text(
        f"#!{sys.executable} -I\n"
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from trustspace.federated.clientapp_sandbox import launch\n"
        f"sys.exit(launch({str(config)!r}, sys.argv[1:]))\n", encoding="utf-8")
    script.chmod(0o755)
    return bin_dir


def sent_updates(folder: Path) -> list[dict[str, Any]]:
    """What each sandboxed ClientApp of this folder's SuperNode recorded, in launch order:
    ``{"type", "round", "dp", "error", "digest"}`` per reply, or ``{"refused", ...}``."""
    try:
        lines = (Path(folder) / _UPDATES).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line]


def _record_update(config: Mapping[str, Any], out_dir: Path) -> None:
    """Append the entry's update.json (written by code in the sandbox: checked, size-bound)."""
    path = out_dir / "update.json"
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_RECORD:
            return
        record = strict_json.loads(path.read_bytes())
    except (OSError, ValueError):
        return
    if isinstance(record, dict):
        keep = {k: record[k] for k in ("type", "round", "dp", "error", "digest", "refused",
                                        "fab_sha256") if k in record}
        with open(config["updates"], "a", encoding="utf-8") as f:
            f.write(json.dumps(keep) + "\n")


def cleanup(folder: Path) -> None:
    """Remove what launches killed with their SuperNode left behind (sockets, work folders)."""
    try:
        config = json.loads((Path(folder) / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for key in ("sockets", "runs"):
        shutil.rmtree(config[key], ignore_errors=True)


class _Relay:
    """A Unix socket whose every connection is relayed to 127.0.0.1:`port` (threads)."""

    def __init__(self, path: Path, port: int) -> None:
        self.port = port
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        # the sandbox's uid connects; the folder (0700) keeps every other host user out
        os.chmod(path, 0o666)  # noqa: S103
        self._listener.listen(_MAX_CONNECTIONS)
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                inner.close()
                continue
            try:
                outer = socket.create_connection((_HOST, self.port), timeout=10)
                outer.settimeout(None)
            except OSError:
                inner.close()
                self._slots.release()
                continue
            threading.Thread(target=self._pair, args=(inner, outer), daemon=True).start()

    def _pair(self, inner: socket.socket, outer: socket.socket) -> None:
        back = threading.Thread(target=_pump, args=(outer, inner), daemon=True)
        back.start()
        _pump(inner, outer)
        back.join()
        inner.close()
        outer.close()
        self._slots.release()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(_CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _arguments(argv: list[str]) -> argparse.Namespace:
    """flwr-clientapp's arguments as Flower 1.42's SuperExec passes them."""
    parser = argparse.ArgumentParser(prog="flwr-clientapp (trustspace sandbox)")
    parser.add_argument("--runtime-api-address", required=True)
    token = parser.add_mutually_exclusive_group(required=True)
    token.add_argument("--token")
    token.add_argument("--token-file")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)  # a host pid: meaningless inside; unused
    parser.add_argument("--allow-runtime-dependency-installation", action="store_true")
    return parser.parse_args(argv)


def launch(config_path: str, argv: list[str]) -> int:
    """Run one ClientApp (one message) in the sandbox; see the module's docstring."""
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    args = _arguments(argv)
    port = int(config["runtime_port"])
    if args.runtime_api_address != f"{_HOST}:{port}":
        print(f"trustspace: refused: the ClientApp's runtime API {args.runtime_api_address} is "
              f"not this SuperNode's {_HOST}:{port}", file=sys.stderr)
        return 2
    if not args.insecure or args.root_certificates or args.allow_runtime_dependency_installation:
        print("trustspace: refused: only a plain loopback runtime API and no dependency "
              "installation are supported", file=sys.stderr)
        return 2
    token = args.token
    if token is None:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    runs = Path(config["runs"])
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir = Path(tempfile.mkdtemp(prefix="clientapp-", dir=runs))
    sockets = Path(tempfile.mkdtemp(dir=config["sockets"]))
    try:
        code = workdir / "code"
        code.mkdir(mode=0o755)
        shutil.copyfile(_ENTRY, code / "clientapp.py")
        shutil.copyfile(_DIGEST, code / "update_digest.py")
        for script in code.iterdir():
            script.chmod(0o644)
        relay = _Relay(sockets / "runtime", port)
        try:
            name = Path(config["inside"]).name
            job = SandboxJob(code, "clientapp.py",
                             data={Path(name).stem: Path(config["data_path"])},
                             parameters={"address": f"{_HOST}:{port}", "token": token,
                                         **config.get("guard", {})},
                             limits=Limits(**config["limits"]))
            result = BubblewrapSandbox().run(job, workdir / "job",
                                             sockets={"runtime": sockets / "runtime"})
        except SandboxError as exc:
            print(f"trustspace: the ClientApp's sandbox could not start: {exc}",
                  file=sys.stderr)
            return 1
        finally:
            relay.close()
        _record_update(config, result.out_dir)
        err = sys.stderr.buffer
        err.write(result.stdout + result.stderr)
        err.write(f"trustspace: sandboxed ClientApp: {result.outcome.value}: "
                  f"{result.reason} ({result.wall_seconds:.1f} s)\n".encode())
        err.flush()
        return 0 if result.ok else 1
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

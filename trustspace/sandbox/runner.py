"""Running a job's code in an isolated sandbox: the job, its limits, its result, the `Sandbox`
seam and the bubblewrap backend. docs/security.md says what is and is not isolated.

    job = SandboxJob(code_dir, "main.py", data={"patients": Path("/srv/p.csv")},
                     parameters={"k": 10}, limits=Limits(wall_seconds=30))
    result = BubblewrapSandbox().run(job, workdir)
    result.outcome, result.reason      # Outcome.OK / TIMEOUT / ..., and why
    read_results(result.out_dir)       # what the job wrote through trustspace.sandbox.api

Inside the sandbox the job sees::

    /usr /bin /lib /lib64     the host's, read-only (the /bin, /lib ... symlinks as they are)
    <python prefix>           the interpreter's installation, read-only, at its own path
    /job/site-packages        the node's virtual environment's packages, read-only
    /job/code                 the bundle, read-only; /job/params.json the parameters
    /job/lib                  trustspace.sandbox.api (and the boot script), read-only
    /data/<name><ext>         each dataset of the job, read-only, nothing else of its folder
    /job/sockets/<name>       only when `run(sockets=...)` names some: Unix sockets the
                              caller relays (the federated ClientApp's path to its SuperNode)
    /work                     a private tmpfs of `Limits.work_bytes`: /work/out (outputs)
                              and /work/tmp (= /tmp)
    /proc /dev                a fresh procfs (the sandbox's processes only), a minimal /dev
    /etc/passwd, /etc/group   two lines naming the job's user, not the host's files

and runs as uid/gid 65534, with no capability, no network (a loopback of its own), its own PID,
IPC, UTS, cgroup, mount and user namespaces, a new session, a scrubbed environment, no inherited
file descriptor but the three standard ones, a seccomp filter, and resource limits.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from . import _seccomp
from ._outstream import StreamInvalid, unpack_stream
from .errors import JobInvalid, SandboxUnavailable
from .results import Results, read_results

__all__ = [
    "DEFAULT_HOST_ID",
    "BubblewrapSandbox",
    "Limits",
    "Outcome",
    "Sandbox",
    "SandboxJob",
    "SandboxResult",
]

MIB = 1024 * 1024
SANDBOX_ID = 65534  # the job's uid and gid inside the sandbox
# The host uid/gid the job runs as when the node is root: one no account and no other program
# uses, so no host process shares the job's uid (RLIMIT_NPROC, signals, ptrace).
DEFAULT_HOST_ID = 2_000_000_000
EXIT_MEMORY = 121  # _boot.EXIT_MEMORY
EXIT_BOOT = 122  # _boot.EXIT_BOOT
MAX_OUTPUT_FILES = 1000
SOCKETS_DIR = "/job/sockets"  # where `BubblewrapSandbox.run(sockets=...)` binds them
_DATA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATA_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")
_GRACE = 2.0  # seconds to wait for the pipes to close once the sandbox is gone
_HERE = Path(__file__).resolve().parent
_PASSWD = f"job:x:{SANDBOX_ID}:{SANDBOX_ID}:trustspace job:/work:/usr/sbin/nologin\n"
_GROUP = f"job:x:{SANDBOX_ID}:\n"


class Outcome(enum.StrEnum):
    OK = "ok"  # exited 0 and sent its outputs
    FAILED = "failed"  # non-zero exit, an exception, or outputs that could not be read
    TIMEOUT = "timeout"  # the wall-clock limit: the whole process tree was killed
    CPU_LIMIT = "cpu-limit"  # RLIMIT_CPU (SIGXCPU)
    MEMORY_LIMIT = "memory-limit"  # RLIMIT_AS (MemoryError)
    OUTPUT_TOO_LARGE = "output-too-large"  # stdout, stderr or the outputs over their cap
    KILLED = "killed"  # died of another signal
    SANDBOX_ERROR = "sandbox-error"  # the sandbox could not be set up; the job never ran


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 60  # RLIMIT_CPU per process
    wall_seconds: float = 120.0  # the whole job, then everything is killed
    memory_bytes: int = 1024 * MIB  # RLIMIT_AS per process (virtual memory; no swap escape)
    processes: int = 32  # RLIMIT_NPROC: processes and threads of the job, all together
    open_files: int = 256  # RLIMIT_NOFILE per process
    file_size_bytes: int = 64 * MIB  # RLIMIT_FSIZE: the largest file the job may write
    work_bytes: int = 128 * MIB  # /work (outputs and /tmp included): the tmpfs size
    stdout_bytes: int = 1 * MIB  # each of stdout and stderr; more and the job is killed

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "processes", "open_files",
                     "file_size_bytes", "work_bytes", "stdout_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer")
        if not (isinstance(self.wall_seconds, int | float) and math.isfinite(self.wall_seconds)
                and self.wall_seconds > 0):
            raise ValueError("Limits.wall_seconds must be a positive number")
        if self.open_files < 16:
            raise ValueError("Limits.open_files must be at least 16 (Python needs a few)")


@dataclass(frozen=True)
class SandboxJob:
    code_dir: Path  # the unpacked bundle (bundle.unpack)
    entry: str | Path  # the script to run: relative to code_dir, or a path inside it
    data: Mapping[str, Path] = field(default_factory=dict)  # name -> host file
    parameters: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class SandboxResult:
    outcome: Outcome
    reason: str  # one line, written by the node (never text the job controls)
    exit_code: int | None  # the job's exit status, when it exited
    signal: int | None  # the signal that killed it, when one did
    stdout: bytes  # at most Limits.stdout_bytes: the provider's log, not the consumer's
    stderr: bytes
    out_dir: Path  # what the job wrote to /work/out, unpacked on the host
    wall_seconds: float
    cpu_seconds: float | None = None  # reported from inside the sandbox: informative only
    peak_memory: int | None = None  # bytes, ditto

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def results(self) -> Results:
        """The job's results, strictly parsed (`read_results`); raises `ResultsInvalid`."""
        return read_results(self.out_dir)


class Sandbox(Protocol):
    """A backend that runs a job in isolation. `run` returns whatever the job did (failures
    included) and raises `JobInvalid` only when the job cannot be started as specified."""

    def run(self, job: SandboxJob, workdir: Path) -> SandboxResult: ...


# ---- preparing a job ---------------------------------------------------------------------------

def _readable(info: os.stat_result, uid: int, gid: int, *, folder: bool = False) -> bool:
    """Whether uid/gid may read the file (and list and enter the folder), by its mode bits."""
    if info.st_uid == uid:
        shift = 6
    elif info.st_gid == gid:
        shift = 3
    else:
        shift = 0
    need = 0o5 if folder else 0o4
    return (info.st_mode >> shift) & need == need


def _entry(job: SandboxJob) -> PurePosixPath:
    code = Path(job.code_dir)
    if not code.is_dir():
        raise JobInvalid(f"the code folder {code} does not exist")
    entry = Path(job.entry)
    if entry.is_absolute():
        try:
            entry = entry.relative_to(code)
        except ValueError:
            raise JobInvalid(f"the entry point {entry} is not inside {code}") from None
    rel = PurePosixPath(entry.as_posix())
    if rel.is_absolute() or any(p in ("", ".", "..") for p in rel.parts) or not rel.parts:
        raise JobInvalid(f"bad entry point {job.entry}")
    target = code / rel
    if target.is_symlink() or not target.is_file():
        raise JobInvalid(f"the entry point {rel} is not a file of the bundle")
    return rel


def _datasets(job: SandboxJob, uid: int, gid: int) -> list[tuple[Path, str]]:
    mounts = []
    for name, host in sorted(job.data.items()):
        if not isinstance(name, str) or not _DATA_NAME.fullmatch(name):
            raise JobInvalid(f"bad dataset name {name!r} (1..64 letters, digits, '_', '-')")
        source = Path(host).resolve()
        try:
            info = source.stat()
        except OSError as exc:
            raise JobInvalid(f"dataset {name}: {exc.strerror}: {host}") from None
        if not stat.S_ISREG(info.st_mode):
            raise JobInvalid(f"dataset {name}: {host} is not a regular file")
        if not _readable(info, uid, gid):
            raise JobInvalid(
                f"dataset {name}: {host} is not readable by the sandbox's host uid {uid} / gid "
                f"{gid}; give that group read access (BubblewrapSandbox(host_gid=...)) or make "
                "the file world-readable")
        suffix = source.suffix.lower() if _DATA_SUFFIX.fullmatch(source.suffix) else ""
        mounts.append((source, f"/data/{name}{suffix}"))
    return mounts


def _sockets(sockets: Mapping[str, Path]) -> list[tuple[Path, str]]:
    mounts = []
    for name, host in sorted(sockets.items()):
        if not isinstance(name, str) or not _DATA_NAME.fullmatch(name):
            raise JobInvalid(f"bad socket name {name!r} (1..64 letters, digits, '_', '-')")
        source = Path(host)
        try:
            info = source.lstat()
        except OSError as exc:
            raise JobInvalid(f"socket {name}: {exc.strerror}: {host}") from None
        if not stat.S_ISSOCK(info.st_mode):
            raise JobInvalid(f"socket {name}: {host} is not a Unix socket")
        mounts.append((source, f"{SOCKETS_DIR}/{name}"))
    return mounts


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


_LIB_FILES = {
    "_trustspace_boot.py": (_HERE / "_boot.py").read_bytes(),
    "trustspace/__init__.py": b'"""trustspace inside a sandbox: only the job API."""\n',
    "trustspace/sandbox/__init__.py": b'"""The job API: trustspace.sandbox.api."""\n',
    "trustspace/sandbox/api.py": (_HERE / "api.py").read_bytes(),
}


def _write_lib(lib: Path) -> None:
    """The boot script and the job API, as the sandbox sees them under /job/lib."""
    for rel, content in _LIB_FILES.items():
        target = lib / rel
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _write(target, content)
    for folder in (lib, lib / "trustspace", lib / "trustspace" / "sandbox"):
        os.chmod(folder, 0o755)  # noqa: S103 - the sandbox's user must read it


def _prepare(workdir: Path, job: SandboxJob) -> tuple[Path, Path]:
    """workdir/params.json and workdir/out (empty)."""
    try:
        params = json.dumps(dict(job.parameters), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobInvalid(f"the parameters are not JSON: {exc}") from None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    params_file, out = workdir / "params.json", workdir / "out"
    for taken in (params_file, out):
        if taken.exists() or taken.is_symlink():
            raise JobInvalid(f"{taken} already exists: give each job a fresh work folder")
    _write(params_file, params.encode("utf-8"))
    out.mkdir(mode=0o755)
    return params_file, out


# ---- the bubblewrap backend --------------------------------------------------------------------

@dataclass(frozen=True)
class _Python:
    executable: str  # real path of the interpreter
    binds: tuple[tuple[str, str], ...]  # (host, sandbox) read-only binds for the installation
    path: tuple[str, ...]  # site-packages folders, as seen inside


def _python(executable: str | None) -> _Python:
    exe = os.path.realpath(executable or sys.executable)
    base = os.path.realpath(sys.base_prefix)
    binds: list[tuple[str, str]] = []
    if not exe.startswith("/usr/"):
        if not exe.startswith(base + "/"):
            raise SandboxUnavailable(f"the interpreter {exe} is not under {base}")
        if base.split("/")[1] in ("job", "data", "work", "tmp", "proc", "dev", "etc"):
            raise SandboxUnavailable(f"the Python installation {base} collides with a path of "
                                     "the sandbox")
        binds.append((base, base))
    path: list[str] = []
    seen: set[str] = set()
    for key in ("purelib", "platlib"):
        site = os.path.realpath(sysconfig.get_paths()[key])
        if site in seen or not os.path.isdir(site):
            continue
        seen.add(site)
        if site.startswith("/usr/") or (binds and site.startswith(base + "/")):
            path.append(site)
        else:
            inside = "/job/site-packages" + ("" if not path else f"-{len(path) + 1}")
            binds.append((site, inside))
            path.append(inside)
    return _Python(exe, tuple(binds), tuple(path))


def _parents(path: str, made: set[str]) -> list[str]:
    args: list[str] = []
    parts = PurePosixPath(path).parts[1:-1]
    for i in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:i])
        if folder not in made:
            made.add(folder)
            args += ["--perms", "0755", "--dir", folder]
    return args


def _pipe_with(data: bytes) -> int:
    """A pipe's read end already holding `data` (small: it must fit in the pipe's buffer)."""
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class BubblewrapSandbox:
    """The bubblewrap backend (Debian package ``bubblewrap``).

    Run by root, bubblewrap builds the sandbox as root of a fresh user namespace in which the
    job's uid 65534 maps to `host_uid` (default `DEFAULT_HOST_ID`, an unused uid) and the job
    runs as that uid, so RLIMIT_NPROC applies to it (root is exempt) and a process escaping the
    namespaces would hold no privilege. `host_gid` (default: the same number) is the job's
    group on the host: set it to a group that may read the product files (mode 0640) instead of
    making them world-readable. Run by another user, bubblewrap maps the job to that user.
    """

    def __init__(self, *, bwrap: str = "bwrap", python: str | None = None,
                 host_uid: int = DEFAULT_HOST_ID, host_gid: int | None = None,
                 seccomp: bool = True) -> None:
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxUnavailable(f"{bwrap} not found (Debian package bubblewrap)")
        self.bwrap = found
        self.python = _python(python)
        self.privileged = os.geteuid() == 0
        self.host_uid = host_uid if self.privileged else os.getuid()
        self.host_gid = (host_gid if host_gid is not None else host_uid) if self.privileged \
            else os.getgid()
        self.seccomp = _seccomp.build(_seccomp.host_arch()) if seccomp else None
        self._lib: Path | None = None

    def _lib_dir(self) -> Path:
        """The /job/lib folder, written once and shared (read-only) by this backend's jobs;
        written again if something (a /tmp cleaner) removed it. Removed when the backend is
        garbage-collected or the process exits."""
        if self._lib is None or not (self._lib / "_trustspace_boot.py").is_file():
            lib = Path(tempfile.mkdtemp(prefix="trustspace-joblib-"))
            _write_lib(lib)
            weakref.finalize(self, shutil.rmtree, lib, True)
            self._lib = lib
        return self._lib

    # -- the command line --

    def _args(self, job: SandboxJob, entry: PurePosixPath, lib: Path, params: Path,
              datasets: list[tuple[Path, str]], fds: dict[str, int],
              sockets: list[tuple[Path, str]] | None = None) -> tuple[list[str], list[str]]:
        """bubblewrap's options (they name host paths, so they go through ``--args FD`` and
        never show in the sandbox's /proc/1/cmdline) and the command it runs."""
        limits = job.limits
        made = {"/job", "/data", "/work", "/etc"}
        args = [self.bwrap, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net",
                "--unshare-uts", "--unshare-cgroup", "--hostname", "sandbox",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if self.privileged:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                     "--info-fd", str(fds["info"]), "--userns-block-fd", str(fds["block"])]
        if "seccomp" in fds:
            args += ["--seccomp", str(fds["seccomp"])]
        args += ["--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID)]
        for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        for host, inside in self.python.binds:
            if not inside.startswith("/job/"):
                args += [*_parents(inside, made), "--ro-bind", host, inside]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "0755", "--dir", "/etc",
                 "--perms", "0644", "--ro-bind-data", str(fds["passwd"]), "/etc/passwd",
                 "--perms", "0644", "--ro-bind-data", str(fds["group"]), "/etc/group",
                 "--perms", "0755", "--dir", "/job",
                 "--ro-bind", str(Path(job.code_dir).resolve()), "/job/code",
                 "--ro-bind", str(lib), "/job/lib",
                 "--ro-bind", str(params), "/job/params.json",
                 *[a for host, inside in self.python.binds if inside.startswith("/job/")
                   for a in ("--ro-bind", host, inside)],
                 "--perms", "0755", "--dir", "/data"]
        if sockets:
            args += ["--perms", "0755", "--dir", SOCKETS_DIR]
            for source, inside in sockets:
                args += ["--ro-bind", str(source), inside]
        for source, inside in datasets:
            args += ["--ro-bind", str(source), inside]
        args += ["--size", str(limits.work_bytes), "--perms", "0777", "--tmpfs", "/work",
                 "--perms", "0777", "--dir", "/work/out",
                 "--perms", "01777", "--dir", "/work/tmp",
                 "--symlink", "/work/tmp", "/tmp",  # noqa: S108 - inside the sandbox
                 # POSIX semaphores and shared memory (multiprocessing) need a /dev/shm
                 "--size", str(limits.work_bytes), "--perms", "01777", "--tmpfs", "/dev/shm",  # noqa: S108
                 "--remount-ro", "/",
                 "--chdir", "/work", "--clearenv"]
        sys_path = ["/job/lib", *self.python.path]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp",  # noqa: S108
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "USER": "job", "LOGNAME": "job",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
               "PYTHONPATH": ":".join(["/job/code", *sys_path])}
        # Thread pools (OpenMP, OpenBLAS, MKL, Arrow) size themselves by the CPU count: keep
        # them well inside the process limit, which counts threads.
        threads = str(max(1, min(4, limits.processes // 4, os.cpu_count() or 1)))
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "ARROW_NUM_THREADS"):
            env[key] = threads
        for key, value in env.items():
            args += ["--setenv", key, value]
        caps = (f"{limits.cpu_seconds},{limits.memory_bytes},{limits.processes},"
                f"{limits.open_files},{limits.file_size_bytes}")
        command = [self.python.executable, "-I", "-S", "-B", "/job/lib/_trustspace_boot.py",
                   str(fds["out"]), str(PurePosixPath("/job/code") / entry), caps,
                   ":".join(sys_path)]
        return args[1:], command

    # -- running --

    def run(self, job: SandboxJob, workdir: Path, *,
            sockets: Mapping[str, Path] | None = None) -> SandboxResult:
        """Run `job` with `workdir` as its fresh host-side folder. `sockets` (name -> host
        path of a listening Unix socket) are bound read-only at ``/job/sockets/<name>``: the
        only way out of the sandbox's network isolation, for a caller that relays one
        connection (the federated ClientApp's path to its SuperNode); none by default."""
        entry = _entry(job)
        code = Path(job.code_dir).resolve()
        if not _readable(code.stat(), self.host_uid, self.host_gid, folder=True):
            raise JobInvalid(f"the code folder {code} is not readable by the sandbox's user")
        datasets = _datasets(job, self.host_uid, self.host_gid)
        params, out = _prepare(Path(workdir), job)
        lib = self._lib_dir()

        mine: list[int] = []  # our ends, closed at the end
        theirs: dict[str, int] = {}  # the child's ends, closed once it started
        try:
            theirs["passwd"] = _pipe_with(_PASSWD.encode())
            theirs["group"] = _pipe_with(_GROUP.encode())
            if self.seccomp is not None:
                theirs["seccomp"] = _pipe_with(self.seccomp)
            out_r, theirs["out"] = os.pipe()
            mine.append(out_r)
            if self.privileged:
                info_r, theirs["info"] = os.pipe()
                theirs["block"], block_w = os.pipe()
                mine += [info_r, block_w]
            options, command = self._args(job, entry, lib, params, datasets, theirs,
                                          _sockets(sockets or {}))
            theirs["args"] = os.memfd_create("bwrap-args")
            os.write(theirs["args"], b"\0".join(a.encode() for a in options) + b"\0")
            os.lseek(theirs["args"], 0, os.SEEK_SET)
            argv = [self.bwrap, "--args", str(theirs["args"]), "--", *command]
            started = time.monotonic()
            proc = subprocess.Popen(  # noqa: S603 - a fixed program and our own arguments
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=tuple(theirs.values()), start_new_session=True, close_fds=True,
                env={})  # nothing of the node's environment, not even in bubblewrap's memory
            for fd in theirs.values():
                os.close(fd)
            theirs.clear()
            try:
                if self.privileged:
                    try:
                        self._map_ids(info_r, block_w, started + 10.0)
                    except _SetupFailed as exc:
                        return self._setup_failed(proc, str(exc), out, started)
                return self._supervise(proc, out_r, job.limits, out, started)
            finally:
                if proc.returncode is None:
                    self._kill(proc)
                    proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
        finally:
            for fd in [*mine, *theirs.values()]:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _map_ids(self, info_r: int, block_w: int, deadline: float) -> None:
        """bubblewrap reports its child's pid and waits: map the job's uid/gid 65534 to the
        host ids (and root to root, so bubblewrap can set up mounts), then let it go on."""
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _SetupFailed("bubblewrap did not report its child in time")
            ready = selectors.DefaultSelector()
            ready.register(info_r, selectors.EVENT_READ)
            events = ready.select(left)
            ready.close()
            if not events:
                continue
            chunk = os.read(info_r, 4096)
            if not chunk:
                break
            data += chunk
        try:
            pid = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            raise _SetupFailed("bubblewrap did not start") from None
        try:
            for name, host in (("uid_map", self.host_uid), ("gid_map", self.host_gid)):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(f"0 0 1\n{SANDBOX_ID} {host} 1\n")
        except OSError as exc:
            raise _SetupFailed(f"cannot map the sandbox's ids: {exc.strerror}") from None
        os.write(block_w, b"1")

    def _setup_failed(self, proc: subprocess.Popen[bytes], reason: str, out: Path,
                      started: float) -> SandboxResult:
        self._kill(proc)
        try:
            stdout, stderr = proc.communicate(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            stdout, stderr = b"", b""
        last = stderr.decode("utf-8", "replace").strip().splitlines()
        if last:
            reason += f": {last[-1][:300]}"
        return SandboxResult(Outcome.SANDBOX_ERROR, reason, None, None, stdout[:1 << 16],
                             stderr[:1 << 16], out, time.monotonic() - started)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL bubblewrap's monitor and its process group: its child, pid 1 of the
        sandbox's PID namespace, gets SIGKILL from --die-with-parent, and when that init dies
        the kernel kills every process left in the namespace (setsid or not, SIGTERM handlers
        or not)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.kill()

    def _supervise(self, proc: subprocess.Popen[bytes], out_r: int, limits: Limits,
                   out: Path, started: float) -> SandboxResult:
        assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPE above
        caps = {proc.stdout.fileno(): limits.stdout_bytes,
                proc.stderr.fileno(): limits.stdout_bytes,
                out_r: limits.work_bytes + MAX_OUTPUT_FILES * 1100 + 4096}
        names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
                 out_r: "the outputs"}
        buffers: dict[int, bytearray] = {fd: bytearray() for fd in caps}
        selector = selectors.DefaultSelector()
        for fd in caps:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        deadline = started + limits.wall_seconds
        killed: str | None = None  # why we killed it
        exited_at: float | None = None
        try:
            while selector.get_map():
                now = time.monotonic()
                if killed is None and now >= deadline:
                    killed = "timeout"
                    self._kill(proc)
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > _GRACE:
                    self._kill(proc)  # something still holds a pipe: it is ours to end
                    break
                timeout = max(0.0, deadline - now) if killed is None else _GRACE
                for key, _ in selector.select(min(timeout, 0.25)):
                    fd = int(key.fd)
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    room = caps[fd] - len(buffers[fd])
                    buffers[fd] += chunk[:room]
                    if len(chunk) > room and killed is None:
                        killed = f"output:{names[fd]}"
                        self._kill(proc)
        finally:
            selector.close()
        proc.wait()
        wall = time.monotonic() - started
        return self._result(proc.returncode, killed, limits, buffers[proc.stdout.fileno()],
                            buffers[proc.stderr.fileno()], bytes(buffers[out_r]), out, wall)

    def _result(self, rc: int, killed: str | None, limits: Limits, stdout: bytearray,
                stderr: bytearray, stream: bytes, out: Path, wall: float) -> SandboxResult:
        try:
            sent = unpack_stream(stream, out, max_files=MAX_OUTPUT_FILES)
            stream_error = None
        except StreamInvalid as exc:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(mode=0o755)
            sent, stream_error = None, str(exc)
        exit_code: int | None = None
        sig: int | None = None
        if rc < 0:
            sig = -rc  # bubblewrap itself was killed
        elif rc > 128:
            sig = rc - 128  # bubblewrap reports a signal death as 128 + n
        else:
            exit_code = rc

        def result(outcome: Outcome, reason: str) -> SandboxResult:
            return SandboxResult(
                outcome, reason, exit_code, sig, bytes(stdout), bytes(stderr), out, wall,
                sent.cpu_seconds if sent else None, sent.peak_memory if sent else None)

        if killed == "timeout":
            return result(Outcome.TIMEOUT, f"the wall-clock limit of {limits.wall_seconds:g} s "
                                           "was reached; every process of the job was killed")
        if killed is not None:
            what = killed.split(":", 1)[1]
            cap = limits.work_bytes if what == "the outputs" else limits.stdout_bytes
            return result(Outcome.OUTPUT_TOO_LARGE,
                          f"{what} exceeded {cap} bytes; every process of the job was killed")
        if sent is None and stream_error is not None:
            return result(Outcome.FAILED, f"the job's output stream was refused: {stream_error}")
        if sent is None or not sent.started:
            last = bytes(stderr).decode("utf-8", "replace").strip().splitlines()
            return result(Outcome.SANDBOX_ERROR, "the sandbox could not start"
                          + (f": {last[-1][:300]}" if last else f" (exit status {rc})"))
        if sig is not None:
            if sig == signal.SIGXCPU:
                return result(Outcome.CPU_LIMIT,
                              f"the CPU limit of {limits.cpu_seconds} s was reached")
            if sig == signal.SIGKILL:
                return result(Outcome.KILLED, "killed by SIGKILL (the CPU hard limit, or the "
                                              "kernel out of memory)")
            return result(Outcome.KILLED, f"killed by {_signal_name(sig)}")
        if exit_code == EXIT_MEMORY:
            return result(Outcome.MEMORY_LIMIT,
                          f"the memory limit of {limits.memory_bytes} bytes was reached")
        if exit_code == EXIT_BOOT:
            return result(Outcome.SANDBOX_ERROR, "the sandbox's start-up script failed")
        if exit_code != 0:
            return result(Outcome.FAILED, f"the job exited with status {exit_code}")
        if not sent.complete:
            return result(Outcome.FAILED, "the job exited before its outputs were sent")
        return result(Outcome.OK, "the job exited with status 0")


class _SetupFailed(Exception):
    pass

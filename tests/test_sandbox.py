"""The bubblewrap sandbox: real jobs, and the attack suite (tests/sandbox_attacks/).

Every attack must end in a failure outcome with a clear reason written by the node, and leave the
host as it was: no process of the sandbox's uid left running, no file changed or planted outside
the job's work folder, nothing of the host (files, environment, processes, network) seen.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trustspace.sandbox import (
    DEFAULT_HOST_ID,
    Aggregate,
    BubblewrapSandbox,
    File,
    JobInvalid,
    Limits,
    Outcome,
    SandboxJob,
    SandboxResult,
    Table,
    _seccomp,
    pack,
    unpack,
)

ATTACKS = Path(__file__).parent / "sandbox_attacks"
MIB = 1024 * 1024
SMALL = Limits(cpu_seconds=10, wall_seconds=10, memory_bytes=512 * MIB, processes=32,
               open_files=64, file_size_bytes=4 * MIB, work_bytes=8 * MIB,
               stdout_bytes=256 * 1024)

AGGREGATE_JOB = '''
from trustspace.sandbox import api

rows = api.read_rows("patients")
by_ward = {}
for row in rows:
    by_ward.setdefault(row["ward"], []).append(float(row["cost"]))
costs = [float(r["cost"]) for r in rows]
api.aggregate("total_cost", round(sum(costs), 6), len(costs), statistic="sum", column="cost")
api.aggregate("mean_age", round(sum(int(r["age"]) for r in rows) / len(rows), 6), len(rows),
              statistic="mean", column="age")
api.table("patients_by_ward", ["ward", "n"],
          [[w, len(v)] for w, v in sorted(by_ward.items())], statistic="count")
api.table("mean_cost_by_ward", ["ward", "cost"],
          [[w, round(sum(v) / len(v), 6)] for w, v in sorted(by_ward.items())],
          counts=[len(v) for _, v in sorted(by_ward.items())], statistic="mean")
api.file("summary.txt", f"{len(rows)} rows, threshold {api.params()['threshold']}".encode())
print("done")
'''


@pytest.fixture(scope="module")
def sandbox() -> BubblewrapSandbox:
    return BubblewrapSandbox()


def sandbox_pids() -> list[int]:
    """Host processes running as the sandbox's host uid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and str(DEFAULT_HOST_ID) in line.split():
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def host_left_clean() -> Iterator[None]:
    """After every test: no process of the sandbox's uid is left on the host."""
    yield
    deadline = time.monotonic() + 2
    while sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox_pids() == []


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run(sandbox: BubblewrapSandbox, tmp_path: Path, script: str | Path, *,
        data: dict[str, Path] | None = None, params: dict[str, Any] | None = None,
        limits: Limits = SMALL) -> SandboxResult:
    """Pack the script as a consumer would, unpack it as the provider does, run it."""
    source = tmp_path / "src" / "main.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(script if isinstance(script, str) else script.read_text())
    entry = unpack(pack(source), tmp_path / "code")
    job = SandboxJob(tmp_path / "code", entry, data or {}, params or {}, limits)
    return sandbox.run(job, tmp_path / "work")


def attack(sandbox: BubblewrapSandbox, tmp_path: Path, name: str, **kwargs: Any) -> SandboxResult:
    return run(sandbox, tmp_path, ATTACKS / f"{name}.py", **kwargs)


def write_patients(path: Path, n: int = 300, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "ward", "age", "cost"])
        for i in range(n):
            writer.writerow([i, rng.choice("ABCD"), rng.randint(18, 90),
                             round(rng.uniform(10, 5000), 2)])


# ---- jobs that work ----------------------------------------------------------------------------

def test_aggregate_matches_the_same_script_outside(sandbox: BubblewrapSandbox,
                                                   tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_patients(data / "patients.csv")
    params = {"threshold": 10}
    result = run(sandbox, tmp_path, AGGREGATE_JOB, data={"patients": data / "patients.csv"},
                 params=params)
    assert result.outcome is Outcome.OK, (result.reason, result.stderr)
    assert result.exit_code == 0 and result.signal is None
    assert result.stdout == b"done\n"
    inside = result.results()

    # The same script, run by the host's Python with the API pointed at host folders.
    outside = tmp_path / "outside"
    (outside / "out").mkdir(parents=True)
    (outside / "params.json").write_text(json.dumps(params))
    script = tmp_path / "src" / "main.py"
    env = {**os.environ, "TRUSTSPACE_JOB_PARAMS": str(outside / "params.json"),
           "TRUSTSPACE_JOB_DATA": str(data), "TRUSTSPACE_JOB_OUT": str(outside / "out")}
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
    assert (result.out_dir / "results.json").read_bytes() == \
        (outside / "out" / "results.json").read_bytes()

    with (data / "patients.csv").open() as f:
        rows = list(csv.DictReader(f))
    total = inside["total_cost"]
    assert isinstance(total, Aggregate)
    assert total.value == round(sum(float(r["cost"]) for r in rows), 6)
    assert total.count == 300 and total.statistic == "sum" and total.column == "cost"
    by_ward = inside["patients_by_ward"]
    assert isinstance(by_ward, Table) and by_ward.statistic == "count"
    assert sum(row[-1] for row in by_ward.rows) == 300
    summary = inside["summary.txt"]
    assert isinstance(summary, File)
    assert summary.path.read_bytes() == b"300 rows, threshold 10"
    assert result.cpu_seconds is not None and 0 < result.cpu_seconds < 5
    assert result.peak_memory is not None and result.peak_memory > 1 * MIB


def test_parquet_dataset_and_pyarrow_inside(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3, 4], "g": ["a", "b", "a", "b"]}), tmp_path / "t.parquet")
    script = ("from trustspace.sandbox import api\n"
              "rows = api.read_rows('t')\n"
              "api.aggregate('sum_x', sum(r['x'] for r in rows), len(rows))\n"
              "print(api.datasets(), api.path('t'))\n")
    result = run(sandbox, tmp_path, script, data={"t": tmp_path / "t.parquet"},
                 limits=Limits(wall_seconds=20))
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == b"['t'] /data/t.parquet\n"
    assert result.results()["sum_x"] == Aggregate("sum_x", 10, 4)


def test_multiprocessing_and_threads_work(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    script = ("import multiprocessing as mp, concurrent.futures as cf\n"
              "def sq(x):\n    return x * x\n"
              "if __name__ == '__main__':\n"
              "    with mp.get_context('fork').Pool(2) as pool:\n"
              "        a = sum(pool.map(sq, range(10)))\n"
              "    with cf.ThreadPoolExecutor(4) as ex:\n"
              "        b = sum(ex.map(sq, range(10)))\n"
              "    print(a, b)\n")
    result = run(sandbox, tmp_path, script)
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == b"285 285\n"


def test_failures_are_reported_not_raised(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = run(sandbox, tmp_path, "raise ValueError('bad input')\n")
    assert result.outcome is Outcome.FAILED
    assert result.reason == "the job exited with status 1"
    assert b"ValueError: bad input" in result.stderr
    result = run(sandbox, tmp_path / "b", "import sys\nsys.exit(300)\n")
    assert (result.outcome, result.exit_code) == (Outcome.FAILED, 125)  # never read as a signal


def test_a_job_that_cannot_start_is_refused(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("pass\n")
    with pytest.raises(JobInvalid, match="bad dataset name"):
        sandbox.run(SandboxJob(code, "main.py", {"../x": code / "main.py"}), tmp_path / "w")
    with pytest.raises(JobInvalid, match="bad entry point"):
        sandbox.run(SandboxJob(code, "../main.py"), tmp_path / "w")
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    secret.chmod(0o600)
    with pytest.raises(JobInvalid, match="not readable by the sandbox"):
        sandbox.run(SandboxJob(code, "main.py", {"s": secret}), tmp_path / "w")
    with pytest.raises(JobInvalid, match="not JSON"):
        sandbox.run(SandboxJob(code, "main.py", parameters={"x": {1, 2}}), tmp_path / "w")


def test_a_sandbox_that_cannot_be_built(tmp_path: Path) -> None:
    broken = BubblewrapSandbox()
    broken.python = dataclasses.replace(
        broken.python, binds=((str(tmp_path / "gone"), "/opt/python"),))
    result = run(broken, tmp_path, "pass\n")
    assert result.outcome is Outcome.SANDBOX_ERROR
    assert result.reason.startswith("the sandbox could not start: bwrap: Can't find source path")
    assert result.exit_code == 1


def test_a_group_readable_dataset_through_host_gid(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n2\n")
    os.chown(data, 0, 4242)
    data.chmod(0o640)
    result = run(BubblewrapSandbox(host_gid=4242), tmp_path,
                 "from trustspace.sandbox import api\nprint(len(api.read_rows('d')))\n",
                 data={"d": data})
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == b"2\n"


# ---- the attack suite --------------------------------------------------------------------------

@pytest.fixture
def listener() -> Iterator[tuple[int, list[Any]]]:
    """A TCP server on the host's loopback; records every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_attack_network_tcp(sandbox: BubblewrapSandbox, tmp_path: Path,
                            listener: tuple[int, list[Any]]) -> None:
    port, accepted = listener
    result = attack(sandbox, tmp_path, "network_tcp", params={"port": port})
    assert result.outcome is Outcome.FAILED, result.stdout
    tried = json.loads(result.stdout)
    assert tried == {"5432": "PermissionError: [Errno 13] Permission denied",
                     str(port): "PermissionError: [Errno 13] Permission denied"}
    assert b"no network" in result.stderr
    assert accepted == []


def test_attack_network_dns(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "network_dns")
    assert result.outcome is Outcome.FAILED
    assert b"udp: PermissionError" in result.stdout
    assert b"socket.gaierror" in result.stderr  # no resolver reachable, no /etc/resolv.conf


def test_attack_read_node_key_and_other_product(sandbox: BubblewrapSandbox,
                                                tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    key = node / "node.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY----- not for jobs")
    key.chmod(0o600)
    products = tmp_path / "products"
    products.mkdir()
    (products / "mine.csv").write_text("a\n1\n")
    other = products / "other.csv"
    other.write_text("name,phone\nZhang San,13800138000\n")
    result = attack(sandbox, tmp_path, "read_host_files", data={"mine": products / "mine.csv"},
                    params={"node_key": str(key), "other_product": str(other)})
    assert result.outcome is Outcome.FAILED
    assert b"READ" not in result.stdout
    # the paths do not exist in the sandbox; /proc/1/root is bubblewrap's init, not ours to enter
    assert result.stdout.count(b"No such file or directory") == 4
    assert result.stdout.count(b"Permission denied") == 1
    assert b"visible datasets: ['mine.csv']" in result.stdout
    assert b"every host file was out of reach" in result.stderr


def test_attack_etc_passwd_is_not_the_hosts(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "read_passwd")
    assert result.outcome is Outcome.OK
    seen = (result.out_dir / "files" / "passwd").read_bytes()
    assert seen != Path("/etc/passwd").read_bytes()
    assert seen == b"job:x:65534:65534:trustspace job:/work:/usr/sbin/nologin\n"
    assert b"root:" not in seen


def test_attack_write_outside_work(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.csv").write_text("a\n1\n")
    before = tree_digest(data)
    result = attack(sandbox, tmp_path, "write_outside", data={"mine": data / "mine.csv"})
    assert result.outcome is Outcome.FAILED, result.stdout
    assert b"WRITTEN" not in result.stdout
    assert b"every write outside /work was refused (11 paths)" in result.stderr
    assert result.stdout.count(b"Read-only file system") + result.stdout.count(
        b"Permission denied") == 11
    assert tree_digest(data) == before
    assert tree_digest(tmp_path / "code") == {
        "main.py": hashlib.sha256((ATTACKS / "write_outside.py").read_bytes()).hexdigest()}
    assert sorted(p.name for p in data.iterdir()) == ["mine.csv"]
    assert not Path("/planted").exists() and not Path("/usr/planted").exists()


def test_attack_fork_count_is_capped(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "fork_count")
    assert result.outcome is Outcome.OK
    count, error = result.stdout.decode().split(" ", 1)
    assert int(count) < SMALL.processes  # the job's own process counts too
    assert "Resource temporarily unavailable" in error


def test_attack_fork_bomb(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    started = time.monotonic()
    result = attack(sandbox, tmp_path, "fork_bomb",
                    limits=Limits(wall_seconds=1.5, processes=32, work_bytes=MIB))
    assert result.outcome is Outcome.TIMEOUT
    assert result.reason == ("the wall-clock limit of 1.5 s was reached; every process of the "
                             "job was killed")
    assert time.monotonic() - started < 5
    # and the host can still start processes (host_left_clean checks nothing is left)
    assert subprocess.run(["true"]).returncode == 0


def test_attack_memory_bomb(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "memory_bomb", limits=Limits(memory_bytes=256 * MIB))
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert result.reason == f"the memory limit of {256 * MIB} bytes was reached"
    assert result.peak_memory is not None and result.peak_memory <= 256 * MIB


def test_attack_busy_loop_cpu_limit(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "busy_loop", limits=Limits(cpu_seconds=1, wall_seconds=10))
    assert result.outcome is Outcome.CPU_LIMIT
    assert result.reason == "the CPU limit of 1 s was reached"
    assert result.wall_seconds < 5


def test_attack_busy_loop_wall_clock(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "busy_loop", limits=Limits(wall_seconds=1))
    assert result.outcome is Outcome.TIMEOUT
    assert 1 <= result.wall_seconds < 3


def test_attack_tree_ignoring_sigterm_is_killed(sandbox: BubblewrapSandbox,
                                                tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "immortal_tree", limits=Limits(wall_seconds=1))
    assert result.outcome is Outcome.TIMEOUT
    assert result.stdout == b"tree planted\n"
    # Gone at once, not only after host_left_clean's 2 s: SIGKILL'd processes still take the
    # kernel a moment to tear down on a loaded machine, so allow a few tenths of a second.
    deadline = time.monotonic() + 0.5
    while sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox_pids() == []


def test_attack_daemon_left_behind_is_killed(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "leave_daemon")
    assert result.outcome is Outcome.OK
    assert result.wall_seconds < 2
    assert sandbox_pids() == []


def test_attack_stdout_flood(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "stdout_flood")
    assert result.outcome is Outcome.OUTPUT_TOO_LARGE
    assert result.reason == (f"stdout exceeded {SMALL.stdout_bytes} bytes; every process of "
                             "the job was killed")
    assert len(result.stdout) == SMALL.stdout_bytes


def test_attack_huge_file(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = attack(sandbox, tmp_path, "huge_file")
    assert result.outcome is Outcome.FAILED
    assert b"File too large" in result.stderr  # RLIMIT_FSIZE (4 MiB) before the tmpfs (8 MiB)
    assert (result.out_dir / "huge.bin").stat().st_size <= 4 * MIB  # what it managed
    result = attack(sandbox, tmp_path / "b", "huge_file",
                    limits=Limits(work_bytes=4 * MIB, file_size_bytes=64 * MIB))
    assert result.outcome is Outcome.FAILED
    assert b"No space left on device" in result.stderr


def test_attack_environment_secrets(sandbox: BubblewrapSandbox, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("TRUSTSPACE_NODE_KEY_PASSWORD", secret)
    result = attack(sandbox, tmp_path, "env_secrets")
    assert result.outcome is Outcome.OK
    assert secret.encode() not in result.stdout + result.stderr
    assert b"TRUSTSPACE_NODE_KEY_PASSWORD" not in result.stdout
    env = {line.split("=", 1)[0] for line in result.stdout.decode().splitlines()
           if "=" in line and ":" not in line.split("=", 1)[0]}
    assert env == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "LOGNAME",
                   "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONPATH", "PWD",
                   "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "ARROW_NUM_THREADS"}


def test_attack_host_processes_and_descriptors(sandbox: BubblewrapSandbox,
                                               tmp_path: Path) -> None:
    leaked = tmp_path / "leaked.txt"
    leaked.write_text("an open file of the node")
    fd = os.open(leaked, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        result = attack(sandbox, tmp_path, "host_processes")
    finally:
        os.close(fd)
    assert result.outcome is Outcome.OK, result.stderr
    seen = json.loads(result.stdout)
    # only the sandbox's own processes: bubblewrap's init (1) and the job (2)
    assert sorted(seen["pids"], key=int) == ["1", "2"]
    assert seen["me"] == 2
    assert str(tmp_path) not in json.dumps(seen["pids"])  # no host path in any command line
    assert seen["pids"]["1"].startswith("/usr/bin/bwrap --args ")
    assert str(leaked) not in json.dumps(seen["fds"])
    assert set(seen["fds"]) - {"0", "1", "2"} <= {str(i) for i in range(3, 64)}
    assert len(seen["fds"]) <= 5  # 0, 1, 2, the output pipe, listdir's own
    assert (seen["uid"], seen["gid"], seen["groups"]) == (65534, 65534, [])
    assert seen["hostname"] == "sandbox"
    status = seen["status"]
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_attack_forbidden_syscalls(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    numbers = _seccomp.host_arch().numbers
    result = attack(sandbox, tmp_path, "syscalls", params={"nr": dict(numbers)})
    assert result.outcome is Outcome.OK, result.stderr
    seen = json.loads(result.stdout)
    refused = {k: v for k, v in seen.items() if v != "ok"}
    assert refused == {
        "unshare(user)": "EPERM", "unshare(net)": "EPERM", "mount": "EPERM",
        "ptrace(attach 1)": "EPERM", "keyctl": "EPERM", "personality": "EPERM",
        "chroot": "EPERM", "setns": "EPERM", "pivot_root": "EPERM", "clone(user)": "EPERM",
        "io_uring_setup": "EPERM", "bpf": "EPERM", "clone3": "ENOSYS", "memfd_create": "EPERM",
        "shmget": "EPERM", "oom_score_adj": "1000",
        "socket(AF_INET)": "EACCES", "socket(AF_INET6)": "EACCES",
        "socket(AF_NETLINK)": "EACCES", "socket(AF_PACKET)": "EACCES",
    }
    assert {k for k, v in seen.items() if v == "ok"} == {"socketpair(AF_UNIX)", "subprocess",
                                                          "fork"}


def test_outputs_are_unpacked_strictly(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    script = ("import os\n"
              "os.makedirs('/work/out/files/a/b')\n"
              "open('/work/out/files/a/b/c.txt', 'w').write('deep')\n"
              "os.symlink('/etc/passwd', '/work/out/link')\n"
              "os.mkfifo('/work/out/fifo')\n")
    result = run(sandbox, tmp_path, script)
    assert result.outcome is Outcome.OK, result.stderr
    sent = sorted(p.relative_to(result.out_dir).as_posix() for p in result.out_dir.rglob("*")
                  if p.is_file() or p.is_symlink())
    assert sent == ["files/a/b/c.txt"]  # no symlink, no fifo crossed


def test_workdir_must_be_fresh(sandbox: BubblewrapSandbox, tmp_path: Path) -> None:
    result = run(sandbox, tmp_path, "pass\n")
    assert result.ok
    with pytest.raises(JobInvalid, match="fresh work folder"):
        sandbox.run(SandboxJob(tmp_path / "code", "main.py"), tmp_path / "work")


def test_unprivileged_node() -> None:
    """A node that is not root: bubblewrap maps the job to the node's own uid (Debian's Python
    here, since the test venv's interpreter lives under /root, which other users cannot read)."""
    uid = 1_999_000_001
    home = Path(tempfile.mkdtemp(prefix="ts-unprivileged-"))
    try:
        (home / "code").mkdir()
        (home / "code" / "main.py").write_text(
            "import os\nfrom trustspace.sandbox import api\n"
            "api.aggregate('n', 1, 1)\n"
            "print(os.getuid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n")
        home.chmod(0o755)
        for path in (home, home / "code", home / "code" / "main.py"):
            os.chown(path, uid, uid)
        driver = (
            "import sys, json\n"
            f"sys.path[:0] = [{str(Path(__file__).parent.parent)!r}, "
            f"{sysconfig.get_paths()['purelib']!r}]\n"
            "from pathlib import Path\n"
            "from trustspace.sandbox import BubblewrapSandbox, SandboxJob\n"
            f"home = Path({str(home)!r})\n"
            "r = BubblewrapSandbox().run(SandboxJob(home / 'code', 'main.py'), home / 'work')\n"
            "print(json.dumps([r.outcome, r.stdout.decode(), r.results().names]))\n")
        proc = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                               "/usr/bin/python3", "-c", driver], capture_output=True,
                              text=True, timeout=30, cwd=home)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == ["ok", "65534 ['1', '2']\n", ["n"]]
    finally:
        shutil.rmtree(home)

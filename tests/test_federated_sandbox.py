"""The federated ClientApp in the bubblewrap sandbox (issue 9): real SuperLink and sandboxed
SuperNodes (`--isolation process`, a SuperExec whose `flwr-clientapp` is trustspace's launcher)
over loopback. Training works through the one relayed path; an app that reaches for the
SuperNode's key, another provider's file, the host's files, TCP or DNS is refused while the
SuperNode keeps serving; stopping leaves no sandbox process."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.nodes import wait_for
from trustspace.crypto import SM2PrivateKey
from trustspace.federated import (
    LOGREG_APP,
    Deployment,
    FlowerError,
    Intervals,
    Progress,
    SuperNodeKey,
    bind_supernode_key,
)
from trustspace.federated.app_digest import fab_sha256
from trustspace.federated.apps.logreg.logreg_app import task
from trustspace.federated.clientapp_sandbox import (
    Guard,
    cleanup,
    inside_data_path,
    launch,
    prepare,
)
from trustspace.federated.update_digest import content_digest
from trustspace.sandbox import BubblewrapSandbox, JobInvalid, SandboxJob
from trustspace.sandbox.runner import DEFAULT_HOST_ID

PROVIDERS = ("hospital-a", "hospital-b")
FAST = Intervals(superexec_poll=0.1, reply_poll=0.2)
TEST_ROWS = 114


# ---- without Flower ----------------------------------------------------------------------

def test_the_sandbox_sees_the_file_under_its_own_name() -> None:
    assert inside_data_path(Path("/srv/x/Patients.CSV")) == "/data/dataset.csv"
    assert inside_data_path(Path("/srv/x/patients")) == "/data/dataset"
    assert inside_data_path(Path("/srv/x/p.tar.gz")) == "/data/dataset.gz"


def test_prepare_refuses_a_file_the_sandbox_cannot_read(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,label\n1,0\n")
    data.chmod(0o600)
    with pytest.raises(PermissionError):
        prepare(tmp_path / "sb", 9999, data)
    data.chmod(0o644)
    bin_dir = prepare(tmp_path / "sb", 9999, data)
    assert os.access(bin_dir / "flwr-clientapp", os.X_OK)
    cleanup(tmp_path / "sb")


def test_the_launcher_refuses_another_runtime_address(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,label\n1,0\n")
    prepare(tmp_path / "sb", 9999, data)
    config = str(tmp_path / "sb" / "clientapp-sandbox.json")
    assert launch(config, ["--runtime-api-address", "127.0.0.1:5432", "--token", "t",
                           "--insecure"]) == 2
    assert launch(config, ["--runtime-api-address", "127.0.0.1:9999", "--token", "t"]) == 2
    assert launch(config, ["--runtime-api-address", "127.0.0.1:9999", "--token", "t",
                           "--insecure", "--allow-runtime-dependency-installation"]) == 2
    cleanup(tmp_path / "sb")


def test_only_unix_sockets_are_bound_into_a_sandbox(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('hi')\n")
    (tmp_path / "not-a-socket").write_text("")
    with pytest.raises(JobInvalid):
        BubblewrapSandbox().run(SandboxJob(code, "main.py"), tmp_path / "w1",
                                sockets={"runtime": tmp_path / "not-a-socket"})
    with pytest.raises(JobInvalid):
        BubblewrapSandbox().run(SandboxJob(code, "main.py"), tmp_path / "w2",
                                sockets={"../x": tmp_path / "not-a-socket"})


# ---- a real deployment -------------------------------------------------------------------

@dataclasses.dataclass
class Sandboxed:
    root: Path
    deployment: Deployment
    data: dict[str, Path]
    x: np.ndarray
    y: np.ndarray
    parts: list[np.ndarray]
    test: np.ndarray


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + [task.LABEL])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt="%.10g")


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxed]:
    root = tmp_path_factory.mktemp("federated-sandbox")
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(11).permutation(len(y))
    test, parts = order[:TEST_ROWS], np.array_split(order[TEST_ROWS:], len(PROVIDERS))
    deployment = Deployment(root / "deployment", intervals=FAST).start()
    data = {}
    try:
        for name, rows in zip(PROVIDERS, parts, strict=True):
            data[name] = root / name / "data.csv"
            data[name].parent.mkdir()
            _write_csv(data[name], x[rows], y[rows])
            identity = SM2PrivateKey.generate()
            node_key = SuperNodeKey.generate()
            deployment.admit(bind_supernode_key(name, node_key.public_openssh, identity),
                             name, identity.public_key)
            deployment.start_supernode(name, data[name], node_key, sandboxed=True)
        yield Sandboxed(root, deployment, data, x, y, list(parts), test)
    finally:
        deployment.stop()


PROBES = '''

# ---- added by tests/test_federated_sandbox.py: what a malicious ClientApp tries ----------
import socket as _socket

_FORBIDDEN_FILES = {forbidden!r}
_LISTENING_PORTS = {ports!r}


def _refused(attempt) -> float:
    try:
        attempt()
    except Exception:  # noqa: BLE001
        return 1.0
    return 0.0


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _connect(port):
    with _socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def _host_passwd():
    if b"root:" not in _read("/etc/passwd"):
        raise PermissionError("the sandbox's own /etc/passwd, not the host's")


def _write_data(context):
    with open(context.node_config["data-path"], "ab") as f:
        f.write(b"x")


def _probes(context) -> dict:
    probes = {{f"probe-file-{{i}}": _refused(lambda p=p: _read(p))
              for i, p in enumerate(_FORBIDDEN_FILES)}}
    probes.update({{f"probe-tcp-{{i}}": _refused(lambda p=p: _connect(p))
                   for i, p in enumerate(_LISTENING_PORTS)}})
    probes["probe-dns"] = _refused(lambda: _socket.getaddrinfo("pypi.org", 443))
    probes["probe-inet6"] = _refused(lambda: _socket.socket(_socket.AF_INET6).close())
    probes["probe-host-passwd"] = _refused(_host_passwd)
    probes["probe-write-data"] = _refused(lambda: _write_data(context))
    probes["probe-write-root"] = _refused(lambda: open("/evil", "w").close())
    # the control: the provider's own file is there and readable
    probes["own-data-readable"] = 1.0 - _refused(lambda: _read(context.node_config["data-path"]))
    return probes


@app.train()
def train(msg, context):
    reply = _honest_train(msg, context)
    reply.content.metric_records["metrics"].update(_probes(context))
    return reply
'''


def _unregister(source: str, handler: str) -> str:
    """The app's source with its `handler` kept as `_honest_<handler>`, no longer registered
    (Flower refuses a second registration under one name)."""
    old = f"@app.{handler}()\ndef {handler}("
    assert source.count(old) == 1
    return source.replace(old, f"def _honest_{handler}(")


def _malicious_app(target: Path, forbidden: list[Path], ports: list[int]) -> Path:
    shutil.copytree(LOGREG_APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    client = target / "logreg_app" / "client_app.py"
    client.write_text(_unregister(client.read_text(), "train") + PROBES.format(
        forbidden=[str(p) for p in forbidden], ports=ports))
    return target


def _listener() -> socket.socket:
    """A real TCP listener on the host's loopback (the kind of service a ClientApp must not
    reach), accepting in the background."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return server


def test_the_probes_succeed_outside_the_sandbox(tmp_path: Path) -> None:
    """The control: the malicious app's attempts, run on the host, are not refused (so a
    refusal in the sandbox is the sandbox's, not a broken probe's)."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"key")

    class App:
        def train(self) -> object:
            return lambda f: f

    namespace: dict[str, object] = {"app": App(), "_honest_train": None}
    listener = _listener()
    try:
        exec(PROBES.format(forbidden=[str(secret)], ports=[listener.getsockname()[1]]),  # noqa: S102
             namespace)
        refused = namespace["_refused"]
        assert callable(refused)
        assert refused(lambda: namespace["_read"](str(secret))) == 0.0  # type: ignore[operator]
        assert refused(lambda: namespace["_connect"](listener.getsockname()[1])) == 0.0  # type: ignore[operator]
        assert refused(namespace["_host_passwd"]) == 0.0
        assert refused(lambda: socket.socket(socket.AF_INET6).close()) == 0.0
    finally:
        listener.close()


@pytest.mark.slow
def test_a_clientapp_reaching_beyond_its_file_is_refused(sandboxed: Sandboxed) -> None:
    d = sandboxed.deployment
    homes = sorted((d.workdir / "home").glob("supernode-*"))
    keys = [h / "keys" / "supernode" for h in homes if (h / "keys" / "supernode").exists()]
    assert len(keys) == len(PROVIDERS)  # each SuperNode's private key, on this host
    forbidden = [*keys, *sandboxed.data.values(), Path("/etc/shadow"), Path("/etc/hostname"),
                 d.workdir / "tls" / "server.key"]
    for path in forbidden[:len(keys) + len(PROVIDERS)]:
        assert path.read_bytes()  # all there and readable on the host
    before = {name: path.read_bytes() for name, path in sandboxed.data.items()}
    listener = _listener()
    try:
        ports = [listener.getsockname()[1], d.port, *(n.port for n in d.supernodes)]
        app = _malicious_app(sandboxed.root / "malicious", forbidden, ports)
        result = d.run(app, 1, {"min-nodes": len(PROVIDERS)})
    finally:
        listener.close()
    (report,) = result.rounds
    assert report.trained_by == PROVIDERS  # every node ran the app and answered
    probes = {k: v for k, v in report.train.items() if k.startswith("probe-")}
    assert len(probes) == len(forbidden) + len(ports) + 5
    assert probes == dict.fromkeys(probes, 1.0), probes  # everything refused, on every node
    assert report.train["own-data-readable"] == 1.0
    assert all(n.running for n in d.supernodes)  # the SuperNodes survived
    assert {name: path.read_bytes() for name, path in sandboxed.data.items()} == before


@pytest.mark.slow
def test_training_in_the_sandbox_matches_central_training(sandboxed: Sandboxed) -> None:
    rounds = 2
    result = sandboxed.deployment.run(LOGREG_APP, rounds, {"min-nodes": len(PROVIDERS)})
    assert [r.round for r in result.rounds] == list(range(1, rounds + 1))
    for report in result.rounds:
        assert report.trained_by == PROVIDERS and report.failed == ()
    f = sandboxed
    mean, std = task.pooled_scale([task.moments(f.x[p]) for p in f.parts])
    rows = np.concatenate(f.parts)
    central = task.train(task.initial_weights(f.x.shape[1]),
                         task.standardise(f.x[rows], mean, std), f.y[rows],
                         epochs=rounds * 40, lr=0.5, l2=0.0001)
    x_test = task.standardise(f.x[f.test], mean, std)
    _, central_accuracy = task.evaluate(central, x_test, f.y[f.test])
    _, federated_accuracy = task.evaluate(result.arrays["weights"], x_test, f.y[f.test])
    print(f"\nsandboxed: federated {federated_accuracy:.4f}, central {central_accuracy:.4f}; "
          f"rounds " + ", ".join(f"{r.seconds:.1f}" for r in result.rounds) + " s")
    assert abs(federated_accuracy - central_accuracy) <= 0.02
    logs = "".join(n.log() for n in sandboxed.deployment.supernodes)
    assert "trustspace: sandboxed ClientApp: ok" in logs


def _tree(pids: list[int]) -> dict[int, int]:
    """pid -> real uid of every descendant of `pids`."""
    children: dict[int, list[int]] = {}
    uids: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                status = (entry / "status").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(
                int(entry.name))
            uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
            uids[int(entry.name)] = int(uid.split()[1])
    found: dict[int, int] = {}
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = uids.get(child, -1)
            todo.append(child)
    return found


HANG = '''

import time as _time

@app.query()
def query(msg, context):
    _time.sleep(600)
    return _honest_query(msg, context)
'''


@pytest.mark.slow
def test_stop_leaves_no_sandbox_process(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    x, y = load_breast_cancer(return_X_y=True)
    _write_csv(data, x[:40], y[:40])
    app = tmp_path / "hang"
    shutil.copytree(LOGREG_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    client = app / "logreg_app" / "client_app.py"
    client.write_text(_unregister(client.read_text(), "query") + HANG)
    deployment = Deployment(tmp_path / "deployment", auth=False, intervals=FAST).start()
    seen: dict[int, int] = {}
    errors: list[BaseException] = []
    try:
        deployment.start_supernode("hospital-a", data, sandboxed=True)

        def run() -> None:
            try:
                deployment.run(app, 1, {"min-nodes": 1}, timeout=300)
            except (FlowerError, OSError) as exc:
                errors.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()

        def sandbox_running() -> bool:
            seen.update(_tree(deployment.root_pids()))
            return DEFAULT_HOST_ID in seen.values()

        wait_for(sandbox_running, timeout=120, every=0.2)
    finally:
        deployment.stop()
    sandbox = [pid for pid, uid in seen.items() if uid == DEFAULT_HOST_ID]
    assert sandbox  # the ClientApp ran as the sandbox's unprivileged host uid
    time.sleep(0.2)
    left = [pid for pid, uid in seen.items() if _alive_as(pid, uid)]
    assert left == [], left
    assert not any(Path(f"/proc/{pid}").exists() for pid in deployment.root_pids())
    runner.join(timeout=60)
    assert not runner.is_alive()  # `flwr run` ended too (the SuperLink went away)
    # nothing of the killed launch is left: its socket and work folders
    folder = tmp_path / "deployment" / "sandbox" / "supernode-0-hospital-a"
    config = json.loads((folder / "clientapp-sandbox.json").read_text())
    assert not Path(config["sockets"]).exists() and not Path(config["runs"]).exists()


def _alive_as(pid: int, uid: int) -> bool:
    """Whether a process `pid` of real uid `uid` exists (a zombie included)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    line = next(s for s in status.splitlines() if s.startswith("Uid:"))
    return int(line.split()[1]) == uid


# ---- what the provider enforces around the ClientApp (clientapp_sandbox.Guard) ---------------

def _clipped(update: np.ndarray, norm: float) -> np.ndarray:
    return update * min(1.0, norm / float(np.linalg.norm(update)))


@pytest.mark.slow
def test_the_provider_noises_train_replies_and_records_every_reply_digest(
        tmp_path: Path) -> None:
    """One provider requires DP (clip 0.5, noise multiplier 1.0), the other only the approved
    app; both release the train loss alone. The DP provider's update as the aggregate reveals
    it is its clean update clipped to 0.5 plus Gaussian noise of std 0.5; every reply's SM3
    digest is recorded, and the plain provider's train digest is that of the reply recomputed
    here from its data, without the train accuracy the app also reported."""
    with warnings.catch_warnings():  # flwr imports typer, which uses click's deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        from flwr.app import ArrayRecord, MetricRecord, RecordDict

    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(5).permutation(len(y))
    parts = np.array_split(order[:300], 2)
    fab = fab_sha256(LOGREG_APP)
    dp = {"clipping_norm": 0.5, "noise_multiplier": 1.0}
    released = ["train-loss", "num-examples"]  # the same for both: FedAvg needs equal keys
    guards = {"dp": Guard(fab_sha256=fab, dp=dp, metrics=released),
              "plain": Guard(fab_sha256=fab, metrics=released)}
    data = {}
    with Deployment(tmp_path / "deployment", intervals=FAST) as d:
        for (name, guard), rows in zip(guards.items(), parts, strict=True):
            data[name] = tmp_path / name / "data.csv"
            data[name].parent.mkdir()
            _write_csv(data[name], x[rows], y[rows])
            identity, node_key = SM2PrivateKey.generate(), SuperNodeKey.generate()
            d.admit(bind_supernode_key(name, node_key.public_openssh, identity),
                    name, identity.public_key)
            d.start_supernode(name, data[name], node_key, sandboxed=True, guard=guard)
        seen: list[Progress] = []
        result = d.run(LOGREG_APP, 1, {"min-nodes": 2, "fraction-evaluate": 0.0},
                       on_progress=seen.append)
        sent = {n.provider: n.sent_updates() for n in d.supernodes}
    (report,) = result.rounds
    assert sorted(report.trained_by) == ["dp", "plain"]
    for name in guards:
        assert [(u["type"], u["dp"]) for u in sent[name]] == \
            [("query", False), ("train", name == "dp")], sent[name]
        assert all(u["digest"].startswith("sm3:") and len(u["digest"]) == 68
                   for u in sent[name])

    # what the consumer received is what each provider recorded sending, reply by reply
    assert [p.kind for p in seen] == ["query", "train"]
    for i, progress in enumerate(seen):
        assert progress.digests == {name: sent[name][i]["digest"] for name in guards}

    loaded = {name: task.load_csv(path) for name, path in data.items()}
    mean, std = task.pooled_scale([task.moments(lx) for lx, _ in loaded.values()])
    w0 = task.initial_weights(x.shape[1])
    clean = {}
    for name, (lx, ly) in loaded.items():
        clean[name] = task.train(w0, task.standardise(lx, mean, std), ly, 40, 0.5, 0.0001)
    n = {name: len(ly) for name, (_, ly) in loaded.items()}
    # FedAvg by num-examples: recover what the DP provider sent from the aggregate
    sent_dp = ((n["dp"] + n["plain"]) * result.arrays["weights"] - n["plain"] * clean["plain"]) \
        / n["dp"]
    clean_update = clean["dp"] - w0
    assert np.linalg.norm(clean_update) > 1.0  # so clipping to 0.5 really bites
    noise = sent_dp - w0 - _clipped(clean_update, 0.5)
    assert 0.3 < float(np.std(noise)) < 0.75, noise  # std 0.5 (= 1.0 x 0.5), 31 draws
    assert not np.allclose(sent_dp, clean["dp"])

    lx, ly = loaded["plain"]
    loss, accuracy = task.evaluate(clean["plain"], task.standardise(lx, mean, std), ly)
    full = {"train-loss": loss, "train-accuracy": accuracy, "num-examples": len(ly)}
    reply = RecordDict({"arrays": ArrayRecord([clean["plain"]]),
                        "metrics": MetricRecord(full)})
    stripped = RecordDict({"arrays": ArrayRecord([clean["plain"]]),
                           "metrics": MetricRecord({k: full[k] for k in released})})
    # the plain provider released only train-loss: the reply it sent is the app's reply
    # without train-accuracy
    assert sent["plain"][1]["digest"] == content_digest(stripped) != content_digest(reply)


@pytest.mark.slow
def test_a_clientapp_of_another_app_than_the_approved_one_is_not_run(tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    data = tmp_path / "data.csv"
    _write_csv(data, x[:100], y[:100])
    with Deployment(tmp_path / "deployment", intervals=FAST) as d:
        identity, node_key = SM2PrivateKey.generate(), SuperNodeKey.generate()
        d.admit(bind_supernode_key("h", node_key.public_openssh, identity), "h",
                identity.public_key)
        node = d.start_supernode("h", data, node_key, sandboxed=True,
                                 guard=Guard(fab_sha256="0" * 64))
        with pytest.raises(FlowerError):
            d.run(LOGREG_APP, 1, {"min-nodes": 1})
        sent = node.sent_updates()
        log = node.log()
    assert sent and sent[0]["refused"] == "app-not-approved"
    assert sent[0]["fab_sha256"] == [fab_sha256(LOGREG_APP)]
    assert "not the one the provider approved" in log

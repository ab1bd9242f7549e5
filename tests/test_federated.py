"""Federated mode (issue 9), first slice: policy refusals, app digests, SuperNode key bindings,
and one real run of Flower's Deployment Engine (SuperLink + three SuperNodes over loopback)."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sklearn.datasets import load_breast_cancer

from tests.nodes import wait_for
from trustspace.crypto import SM2PrivateKey, sign_document
from trustspace.federated import (
    BINDING_TYPE,
    LOGREG_APP,
    AppInvalid,
    BindingInvalid,
    BindingReason,
    Deployment,
    DifferentialPrivacy,
    DpRequirement,
    FederatedPolicy,
    FederatedRefused,
    FederatedRequest,
    FederatedResult,
    Intervals,
    Progress,
    RefusalReason,
    SuperNodeKey,
    app_digest,
    bind_supernode_key,
    check_request,
    verify_binding,
)
from trustspace.federated.app_digest import fab_sha256
from trustspace.federated.apps.logreg.logreg_app import task
from trustspace.sandbox.fl_jobs import enforced_dp

APP = "sm3:" + "ab" * 32

# ---- policy ----------------------------------------------------------------------------------

POLICY = FederatedPolicy(max_rounds=5, min_clients=3,
                         require_dp=DpRequirement(min_noise_multiplier=1.0,
                                                  max_clipping_norm=2.0),
                         approved_apps=frozenset({APP}))
GOOD = FederatedRequest(app_digest=APP, rounds=5, min_clients=3,
                        dp=DifferentialPrivacy(clipping_norm=1.0, noise_multiplier=1.1))


def test_a_request_within_the_policy_passes() -> None:
    check_request(POLICY, GOOD)
    check_request(dataclasses.replace(POLICY, require_dp=None),
                  dataclasses.replace(GOOD, dp=None))


@pytest.mark.parametrize(("policy", "request_", "reason"), [
    (dataclasses.replace(POLICY, allowed_modes=frozenset({"sandbox"})), GOOD,
     RefusalReason.MODE_NOT_ALLOWED),
    (POLICY, dataclasses.replace(GOOD, mode="sandbox"), RefusalReason.MODE_NOT_ALLOWED),
    (POLICY, dataclasses.replace(GOOD, app_digest="sm3:" + "cd" * 32),
     RefusalReason.APP_NOT_APPROVED),
    (dataclasses.replace(POLICY, approved_apps=frozenset()), GOOD,
     RefusalReason.APP_NOT_APPROVED),  # no approved app approves none
    (POLICY, dataclasses.replace(GOOD, rounds=6), RefusalReason.TOO_MANY_ROUNDS),
    (POLICY, dataclasses.replace(GOOD, min_clients=2), RefusalReason.TOO_FEW_CLIENTS),
    (POLICY, dataclasses.replace(GOOD, dp=None), RefusalReason.DP_MISSING),
    (POLICY, dataclasses.replace(GOOD, dp=DifferentialPrivacy(1.0, 0.5)),
     RefusalReason.DP_TOO_WEAK),
    (POLICY, dataclasses.replace(GOOD, dp=DifferentialPrivacy(3.0, 1.5)),
     RefusalReason.DP_TOO_WEAK),
    (dataclasses.replace(POLICY, require_secagg=True), GOOD, RefusalReason.SECAGG_MISSING),
    (POLICY, dataclasses.replace(GOOD, rounds=0), RefusalReason.MALFORMED),
    (POLICY, dataclasses.replace(GOOD, min_clients=True), RefusalReason.MALFORMED),
    (POLICY, dataclasses.replace(GOOD, app_digest="sha256:00"), RefusalReason.MALFORMED),
    (POLICY, dataclasses.replace(GOOD, dp=DifferentialPrivacy(1.0, float("nan"))),
     RefusalReason.MALFORMED),
])
def test_refusals_name_their_reason(policy: FederatedPolicy, request_: FederatedRequest,
                                    reason: RefusalReason) -> None:
    with pytest.raises(FederatedRefused) as refused:
        check_request(policy, request_)
    assert refused.value.reason is reason
    assert refused.value.detail


# ---- app digest ------------------------------------------------------------------------------

def _copy_app(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(LOGREG_APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.parametrize(("declared", "required", "enforced"), [
    (None, None, None),
    (DifferentialPrivacy(1.0, 0.5), None, DifferentialPrivacy(1.0, 0.5)),
    (DifferentialPrivacy(1.0, 0.5), DpRequirement(0.8), DifferentialPrivacy(1.0, 0.8)),
    (DifferentialPrivacy(3.0, 2.0), DpRequirement(0.8, 1.5), DifferentialPrivacy(1.5, 2.0)),
], ids=["none", "as-declared", "more-noise", "tighter-clip"])
def test_the_provider_applies_dp_at_least_as_strong_as_its_product_requires(
        declared: DifferentialPrivacy | None, required: DpRequirement | None,
        enforced: DifferentialPrivacy | None) -> None:
    assert enforced_dp(declared, required) == enforced


def test_the_fab_hash_is_the_one_flower_builds_and_changes_with_any_file(
        tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(LOGREG_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    first = fab_sha256(app)
    assert first == fab_sha256(LOGREG_APP)  # deterministic: what `flwr run` sends
    (app / "logreg_app" / "task.py").write_text(
        (app / "logreg_app" / "task.py").read_text() + "\n# changed\n")
    assert fab_sha256(app) != first


def test_the_app_digest_covers_every_file_and_nothing_python_writes(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    digest = app_digest(app)
    assert digest.startswith("sm3:") and len(digest) == 68
    assert app_digest(LOGREG_APP) == digest  # independent of where the app lies
    (app / "logreg_app" / "__pycache__").mkdir()
    (app / "logreg_app" / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\0")
    assert app_digest(app) == digest

    task_py = app / "logreg_app" / "task.py"
    task_py.write_text(task_py.read_text() + "\n# one more line\n")
    assert app_digest(app) != digest

    other = _copy_app(tmp_path / "2")
    (other / ".hidden.toml").write_text("x = 1\n")  # Flower would ship it: it counts
    assert app_digest(other) != digest
    other2 = _copy_app(tmp_path / "3")
    (other2 / "logreg_app" / "task.py").rename(other2 / "logreg_app" / "task2.py")
    assert app_digest(other2) != digest  # names count, not only contents


def test_the_app_digest_refuses_symlinks(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    (app / "data.csv").symlink_to("/etc/hostname")
    with pytest.raises(AppInvalid):
        app_digest(app)
    with pytest.raises(AppInvalid):
        app_digest(tmp_path / "missing")


# ---- SuperNode key bindings ------------------------------------------------------------------

def test_a_binding_ties_a_supernode_key_to_its_provider(keys: list[SM2PrivateKey]) -> None:
    provider = keys[0]
    key = SuperNodeKey.generate()
    assert key.public_openssh.startswith(b"ecdsa-sha2-nistp384 ")
    assert b"OPENSSH PRIVATE KEY" in key.private_openssh
    doc = bind_supernode_key("hospital-a", key.public_openssh, provider)
    bound = verify_binding(doc.to_bytes(), "hospital-a", provider.public_key,
                           key.public_openssh)
    assert bound.provider == "hospital-a" and bound.digest == doc.digest
    assert bound.public_openssh == key.public_openssh


def test_forged_and_foreign_bindings_are_refused(keys: list[SM2PrivateKey]) -> None:
    provider, other, mallory = keys[0], keys[1], keys[2]
    key = SuperNodeKey.generate()
    doc = bind_supernode_key("hospital-a", key.public_openssh, provider)

    def reason(**kw: Any) -> BindingReason:
        args: dict[str, Any] = {"doc": doc, "provider_id": "hospital-a",
                                "provider_key": provider.public_key, **kw}
        with pytest.raises(BindingInvalid) as refused:
            verify_binding(**args)
        return refused.value.reason

    # signed by someone else than the provider (mallory claims to be hospital-a)
    forged = bind_supernode_key("hospital-a", key.public_openssh, mallory)
    assert reason(doc=forged) is BindingReason.SIGNATURE
    # another provider's genuine binding presented for hospital-a
    foreign = bind_supernode_key("hospital-b", key.public_openssh, other)
    assert reason(doc=foreign, provider_key=other.public_key) is BindingReason.WRONG_PROVIDER
    # hospital-a's binding, checked against hospital-b's identity
    assert reason(provider_id="hospital-b") is BindingReason.WRONG_PROVIDER
    # a SuperNode presenting another key than the bound one
    assert reason(public_openssh=SuperNodeKey.generate().public_openssh) \
        is BindingReason.KEY_MISMATCH
    # a body changed after signing
    tampered = doc.to_json()
    tampered["body"] = {**tampered["body"], "provider": "hospital-c"}
    assert reason(doc=tampered) is BindingReason.SIGNATURE
    # a key Flower refuses (ed25519) cannot be bound
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(BindingInvalid) as bad:
        bind_supernode_key("hospital-a", ed, provider)
    assert bad.value.reason is BindingReason.BAD_KEY
    # a well-signed document with extra fields
    body = {**doc.body, "admin": True}
    extra = sign_document(BINDING_TYPE, body, provider)
    assert reason(doc=extra) is BindingReason.MALFORMED


# ---- a real deployment -----------------------------------------------------------------------

ROUNDS = 3
TEST_ROWS = 114  # held out, as in docs/federated.md
PROVIDERS = ("hospital-a", "hospital-b", "hospital-c")
# Flower's own waits where 1.42 lets us choose them (docs/federated.md, "Round times").
FAST = Intervals(superexec_poll=0.1, reply_poll=0.2)


@dataclasses.dataclass
class Federation:
    deployment: Deployment
    result: FederatedResult
    parts: list[np.ndarray]
    test: np.ndarray
    x: np.ndarray
    y: np.ndarray
    provider_keys: dict[str, SM2PrivateKey]
    startup_seconds: float


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + [task.LABEL])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
               fmt="%.10g")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federated")
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    test, parts = order[:TEST_ROWS], np.array_split(order[TEST_ROWS:], len(PROVIDERS))
    started = time.monotonic()
    deployment = Deployment(root / "deployment", intervals=FAST).start()
    provider_keys = {}
    try:
        for name, rows in zip(PROVIDERS, parts, strict=True):
            data = root / name / "data.csv"  # each provider's own file, nothing else
            data.parent.mkdir()
            _write_csv(data, x[rows], y[rows])
            # the provider: an SM2 identity, a SuperNode key, the binding of the two
            identity = provider_keys[name] = SM2PrivateKey.generate()
            node_key = SuperNodeKey.generate()
            binding = bind_supernode_key(name, node_key.public_openssh, identity)
            # the consumer admits the key only on the provider's signed word
            deployment.admit(binding.to_bytes(), name, identity.public_key)
            deployment.start_supernode(name, data, node_key)
        startup = time.monotonic() - started
        result = deployment.run(LOGREG_APP, ROUNDS,
                                {"min-nodes": len(PROVIDERS), "fraction-evaluate": 1.0})
        yield Federation(deployment, result, list(parts), test, x, y, provider_keys, startup)
    finally:
        deployment.stop()


def _node_ids(deployment: Deployment) -> set[int]:
    return {int(n["node-id"]) for n in deployment.registered_nodes()}


@pytest.mark.slow
def test_federated_training_matches_central_training(federation: Federation) -> None:
    f = federation
    result = f.result
    assert [r.round for r in result.rounds] == list(range(1, ROUNDS + 1))
    for report in result.rounds:
        assert report.trained_by == PROVIDERS and report.evaluated_by == PROVIDERS
        assert report.failed == ()
        assert 0 < report.train["train-loss"] < 0.7
        assert report.evaluate["eval-accuracy"] > 0.9

    # the same NumPy code on the pooled training rows, for as many gradient steps
    train_rows = np.concatenate(f.parts)
    parts = [task.moments(f.x[p]) for p in f.parts]
    mean, std = task.pooled_scale(parts)
    np.testing.assert_allclose(result.arrays["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(result.arrays["std"], std, rtol=1e-9)
    central = task.train(task.initial_weights(f.x.shape[1]),
                         task.standardise(f.x[train_rows], mean, std), f.y[train_rows],
                         epochs=ROUNDS * 40, lr=0.5, l2=0.0001)
    x_test = task.standardise(f.x[f.test], mean, std)
    _, central_accuracy = task.evaluate(central, x_test, f.y[f.test])
    _, federated_accuracy = task.evaluate(result.arrays["weights"], x_test, f.y[f.test])
    print(f"\nheld-out accuracy: federated {federated_accuracy:.4f}, "
          f"central {central_accuracy:.4f}; start {f.startup_seconds:.1f} s, "
          f"run {result.seconds:.1f} s, rounds "
          + ", ".join(f"{r.seconds:.1f}" for r in result.rounds) + " s")
    assert central_accuracy > 0.93
    assert abs(federated_accuracy - central_accuracy) <= 0.02


@pytest.mark.slow
def test_the_run_names_the_app_it_ran(federation: Federation) -> None:
    assert federation.result.app_digest == app_digest(LOGREG_APP)
    admitted = federation.deployment.admitted
    assert sorted(admitted.values()) == list(PROVIDERS)
    assert set(admitted) <= _node_ids(federation.deployment)


@pytest.mark.slow
def test_a_forged_binding_registers_nothing(federation: Federation,
                                            keys: list[SM2PrivateKey]) -> None:
    mallory = keys[3]
    node_key = SuperNodeKey.generate()
    forged = bind_supernode_key("hospital-a", node_key.public_openssh, mallory)
    before = _node_ids(federation.deployment)
    with pytest.raises(BindingInvalid) as refused:
        federation.deployment.admit(forged, "hospital-a",
                                    federation.provider_keys["hospital-a"].public_key)
    assert refused.value.reason is BindingReason.SIGNATURE
    assert _node_ids(federation.deployment) == before


@pytest.mark.slow
def test_a_supernode_with_an_unregistered_key_is_refused(federation: Federation,
                                                         tmp_path: Path) -> None:
    before = _node_ids(federation.deployment)
    data = tmp_path / "data.csv"
    _write_csv(data, federation.x[:5], federation.y[:5])
    node = federation.deployment.start_supernode("intruder", data, SuperNodeKey.generate(),
                                                 wait=False)
    wait_for(lambda: not node.running, timeout=60, every=0.2)
    assert "[code: 2004] Failed to activate SuperNode" in node.log()
    assert _node_ids(federation.deployment) == before


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_stop_ends_and_reaps_every_flower_process(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    _write_csv(data, np.ones((3, 2)), np.array([0.0, 1.0, 0.0]))
    deployment = Deployment(tmp_path / "d", auth=False, intervals=FAST).start()
    try:
        deployment.start_supernode("p", data)
        # the SuperNode's own SuperExec is up: a tree of at least three processes each
        roots = deployment.root_pids()

        def tree() -> set[int]:
            return set(roots).union(*(_descendants(pid) for pid in roots))

        wait_for(lambda: len(tree()) >= 5, timeout=60, every=0.2)
        started = tree()
    finally:
        deployment.stop()
    left = started & ({int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()})
    assert not left, f"processes left behind: {left}"


def test_a_flower_tree_does_not_outlive_whoever_started_it(tmp_path: Path) -> None:
    """A node killed mid-job (no `finally` runs) must not leave its SuperNode polling: the
    reaper notices its parent is gone and ends its tree."""
    import subprocess
    import sys

    import trustspace.federated

    reaper = Path(trustspace.federated.__file__).with_name("_reaper.py")
    script = ("import subprocess, sys, os\n"
              f"p = subprocess.Popen([sys.executable, {str(reaper)!r}, '1.0', '--', "
              "'sleep', '300'], start_new_session=True, stdout=subprocess.DEVNULL,\n"
              "    env={**os.environ, 'TS_REAPER_PARENT': str(os.getpid())})\n"
              "print(p.pid, flush=True)\n"
              "os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=30)
    pid = int(done.stdout.strip())

    def gone() -> bool:
        return not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

    assert wait_for(gone, timeout=10)


@pytest.mark.slow
def test_a_provider_leaving_mid_run_is_recorded_and_the_others_carry_on(
        tmp_path: Path) -> None:
    """The third provider's SuperNode dies as its first train message arrives: as Flower
    handles it, round 1 aggregates the two replies that came and records the third as failed
    (by provider name, though the error reply came from the SuperLink), and round 2 runs on
    the two that are left."""
    x, y = load_breast_cancer(return_X_y=True)
    parts = np.array_split(np.random.default_rng(3).permutation(len(y))[:420], 3)
    names = ("h-a", "h-b", "h-leaves")
    with Deployment(tmp_path / "d", intervals=FAST) as d:
        for name, rows in zip(names, parts, strict=True):
            path = tmp_path / f"{name}.csv"
            _write_csv(path, x[rows], y[rows])
            identity, key = SM2PrivateKey.generate(), SuperNodeKey.generate()
            d.admit(bind_supernode_key(name, key.public_openssh, identity), name,
                    identity.public_key)
            d.start_supernode(name, path, key)
        leaver = d.supernodes[2]
        killed: list[float] = []

        def leave_at_first_train() -> None:
            wait_for(lambda: "Receiving: train message" in leaver.log(), timeout=240,
                     every=0.1)
            leaver.process.popen.terminate()  # its reaper ends the SuperNode's tree
            killed.append(time.monotonic())

        watcher = threading.Thread(target=leave_at_first_train, daemon=True)
        watcher.start()
        seen: list[tuple[float, Progress]] = []
        result = d.run(LOGREG_APP, 2, {"min-nodes": 2, "fraction-evaluate": 0.0},
                       on_progress=lambda p: seen.append((time.monotonic(), p)))
        ended = time.monotonic()
        watcher.join(5)
    assert killed and not leaver.running
    # the rounds were reported as they ended, not after the run
    assert [(p.kind, p.round) for _, p in seen] == [("query", -1), ("train", 1), ("train", 2)]
    assert seen[1][0] < ended - 1.0
    assert seen[1][1].replied == ("h-a", "h-b") and seen[1][1].failed == ("h-leaves",)
    assert {"train-loss", "train-accuracy"} <= set(seen[2][1].metrics)
    assert seen[2][1].metrics["train-loss"] < seen[1][1].metrics["train-loss"]
    first, second = result.rounds
    assert first.trained_by == ("h-a", "h-b") and first.failed == ("h-leaves",)
    assert second.trained_by == ("h-a", "h-b") and second.failed == ()
    assert np.isfinite(result.arrays["weights"]).all()

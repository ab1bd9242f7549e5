"""`trustspace worker` processes against one PostgreSQL database: jobs spread over them, each
runs once; a worker killed mid-job (SIGKILL) leaves its job to another after the lease, which
finishes it: nothing lost, nothing run twice at once, one result and one receipt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodes import DataSpace, dataspace, product_spec, research_offer, wait_for
from tests.test_jobs_e2e import agree, receipt, write_visits

pytestmark = pytest.mark.slow

SLEEPY = '''
import time
from trustspace.sandbox import api
time.sleep(float(api.params().get("sleep", 0)))
rows = api.read_rows("bp-visits")
api.aggregate("visits", len(rows), len(rows), statistic="count")
'''
LEASE = "3"


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp("workers")
    with dataspace(root, "postgresql") as ds:
        provider = ds.add_member("hospital", "provider")
        ds.add_member("insurer", "consumer")
        data = root / "visits.csv"
        spec = product_spec(data, "bp-visits", offers=[research_offer(["sandbox"])],
                            modes=["sandbox"])
        write_visits(data)
        provider.ok("POST", "/api/products", spec)
        provider.stop()  # no in-process workers: only `trustspace worker` runs jobs
        provider.start(env={"TRUSTSPACE_JOB_WORKERS": "0"})
        yield ds


@pytest.fixture
def workers(space: DataSpace) -> Iterator[list[subprocess.Popen[bytes]]]:
    home = space.members["hospital"].home
    env = {**os.environ, "TRUSTSPACE_JOB_LEASE_SECONDS": LEASE}
    procs = []
    for i in range(2):
        with (home / f"worker-{i}.log").open("ab") as log:  # the child keeps its own copy
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "trustspace", "worker", "--home", str(home)], env=env,
                stdout=subprocess.DEVNULL, stderr=log))
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def submit(space: DataSpace, agreement: str, tmp: Path, sleep: float = 0) -> str:
    import base64

    from trustspace.sandbox.bundle import pack

    script = tmp / "job.py"
    script.write_text(SLEEPY)
    shown = space.members["insurer"].ok("POST", "/api/jobs", {
        "agreement": agreement, "code": base64.b64encode(pack(script)).decode(),
        "parameters": {"sleep": sleep}, "purpose": "research"})
    return str(shown["pid"])


def provider_job(space: DataSpace, consumer_pid: str) -> dict[str, Any]:
    provider = space.members["hospital"]
    jobs = provider.ok("GET", "/api/jobs", role="provider", limit=1000)["jobs"]
    return dict(next(j for j in jobs if j["consumerPid"] == consumer_pid))


def test_jobs_spread_over_worker_processes_and_run_once(
        space: DataSpace, workers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    consumer = space.members["insurer"]
    agreement = agree(space)
    pids = [submit(space, agreement, tmp_path, sleep=0.3) for _ in range(6)]
    for pid in pids:
        assert wait_for(lambda p=pid: consumer.ok("GET", f"/api/jobs/{p}")["state"]
                        == "COMPLETED")
    seen = [provider_job(space, pid) for pid in pids]
    assert all(j["attempts"] == 1 for j in seen)
    owners = {j["claimedBy"].split(":")[1] for j in seen}
    assert owners <= {str(w.pid) for w in workers}
    assert len(owners) == 2, owners  # both workers took jobs


def test_a_worker_killed_mid_job_leaves_it_to_another(
        space: DataSpace, workers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    agreement = agree(space)
    pid = submit(space, agreement, tmp_path, sleep=2.0)
    running = wait_for(lambda: (j := provider_job(space, pid))["state"] == "STARTED"
                       and j["claimedBy"] and j)
    victim = next(w for w in workers if str(w.pid) == running["claimedBy"].split(":")[1])
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    done = wait_for(lambda: (j := consumer.ok("GET", f"/api/jobs/{pid}"))["state"]
                    in ("COMPLETED", "TERMINATED") and j, timeout=60)
    assert done["state"] == "COMPLETED", done
    theirs = provider_job(space, pid)
    assert theirs["attempts"] == 2 and theirs["claimedBy"] != running["claimedBy"]
    logged = receipt(provider, theirs["receiptId"])
    assert logged["document"]["body"]["public"]["outcome"] == "succeeded"
    receipts = provider.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
    assert [r["kind"] for r in receipts].count("delivery") == 1

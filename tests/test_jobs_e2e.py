"""Compute-to-data between real nodes on loopback (SQLite and PostgreSQL): code goes to the
provider, runs in the bubblewrap sandbox next to the data, and only a checked result comes back,
sealed to the consumer, with a delivery receipt both sign on the ledger. Refusals (policy,
operator, release checks) end TERMINATED with a refusal receipt."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import nodes
from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec, research_offer, wait_for
from trustspace.crypto import SM2PrivateKey
from trustspace.ledger.receipts import verify_receipt

pytestmark = pytest.mark.slow

MEAN_BY_SEX = '''
from trustspace.sandbox import api
rows = api.read_rows("bp-visits")
groups = {}
for r in rows:
    groups.setdefault(r["sex"], []).append(float(r["sbp"]))
api.table("mean_sbp_by_sex", ["sex", "mean_sbp"],
          [[sex, sum(v) / len(v)] for sex, v in sorted(groups.items())],
          counts=[len(v) for _, v in sorted(groups.items())], statistic="mean")
api.aggregate("visits", len(rows), len(rows), statistic="count")
print("secret row:", rows[0])  # stdout stays with the provider
'''

SMALL_GROUP = '''
from trustspace.sandbox import api
rows = [r for r in api.read_rows("bp-visits") if int(r["age"]) > 78]
api.aggregate("mean_sbp_over_78", sum(float(r["sbp"]) for r in rows) / len(rows), len(rows),
              statistic="mean", column="sbp")
'''

RAW_ROWS = '''
from trustspace.sandbox import api
rows = api.read_rows("bp-visits")
api.table("everything", ["age", "sex", "sbp", "n"],
          [[r["age"], r["sex"], r["sbp"], 1] for r in rows[:20]], statistic="count")
'''

NETWORK = '''
import socket
socket.create_connection(("127.0.0.1", 5432), timeout=2)
'''


def write_visits(path: Path, n: int = 300) -> list[dict[str, str]]:
    rows = [{"age": str(30 + (i * 7) % 50), "sex": "FM"[i % 2],
             "sbp": str(105 + (i * 13) % 60)} for i in range(n)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["age", "sex", "sbp"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def space(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp(f"jobs-{request.param}")
    with dataspace(root, request.param) as ds:
        provider = ds.add_member("hospital", "provider")
        ds.add_member("insurer", "consumer")
        ds.add_member("regulator", "regulator")
        data = root / "visits.csv"
        write_visits(data)
        spec = product_spec(data, "bp-visits")
        write_visits(data)  # product_spec wrote its own small file there
        spec["offers"] = [research_offer(["sandbox"]),
                          {**research_offer(["sandbox"], **{"@id": "approved-code"}),
                           "permission": [{"action": "use", "constraint": [
                               *research_offer(["sandbox"])["permission"][0]["constraint"],
                               {"leftOperand": "ts:codeApproval", "operator": "eq",
                                "rightOperand": "required"}]}]}]
        provider.ok("POST", "/api/products", spec)
        provider.stop()  # tight limits, so the attacks below end quickly
        provider.start(env={"TRUSTSPACE_JOB_WALL_SECONDS": "6", "TRUSTSPACE_JOB_CPU_SECONDS": "3",
                            "TRUSTSPACE_JOB_MEMORY_MB": "256", "TS_TEST_SECRET": "hunter2"})
        yield ds




def agree(space: DataSpace, offer: str | None = None) -> str:
    return nodes.agree(space.members["insurer"], space.members["hospital"], "bp-visits", offer)


@pytest.fixture(scope="module")
def agreement(space: DataSpace) -> str:
    return agree(space, "bp-visits:v1:offer:0")


def run(node: NodeProcess, agreement: str, script: str, tmp: Path, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    path = tmp / "job.py"
    path.write_text(script)
    return node.cli("run", agreement, str(path), "--purpose", "research", *extra)


def receipt(node: NodeProcess, receipt_id: str, status: str = "logged") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        shown = node.ok("GET", f"/api/receipts/{receipt_id}")
        return shown if shown["status"] == status else None

    return dict(wait_for(check))


def keys(space: DataSpace) -> dict[str, Any]:
    return {f"urn:trustspace:participant:{n}": SM2PrivateKey.from_pem(
        (space.members[n].home / "node-key.pem").read_bytes()).public_key
        for n in ("hospital", "insurer")}


def test_an_aggregate_comes_back_and_matches_the_same_script_outside(
        space: DataSpace, agreement: str, tmp_path: Path) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    done = run(consumer, agreement, MEAN_BY_SEX, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]["release"]
    # The same script outside the sandbox, on the same data.
    data = tmp_path / "data"
    data.mkdir()
    os.link(space.root / "visits.csv", data / "bp-visits.csv")
    out = tmp_path / "out"
    (tmp_path / "params.json").write_text("{}")
    plain = subprocess.run([sys.executable, str(tmp_path / "job.py")], capture_output=True,
                           env={**os.environ, "TRUSTSPACE_JOB_DATA": str(data),
                                "TRUSTSPACE_JOB_OUT": str(out),
                                "TRUSTSPACE_JOB_PARAMS": str(tmp_path / "params.json")},
                           check=True)
    assert plain.returncode == 0
    expected = json.loads((out / "results.json").read_text())["outputs"]
    released = {o["name"]: o for o in result["outputs"]}
    assert released["mean_sbp_by_sex"]["rows"] == expected[0]["rows"]
    assert released["visits"]["value"] == 300
    assert "secret row" not in done.stdout + done.stderr  # the job's stdout stayed home

    jobs = consumer.ok("GET", "/api/jobs")["jobs"]
    mine = next(j for j in jobs if j["agreementId"] == agreement and j["outcome"])
    theirs = provider.ok("GET", f"/api/jobs/{mine['providerPid']}")
    assert "secret row" in theirs["log"]
    logged = receipt(provider, mine["receiptId"])
    delivery = verify_receipt(logged["document"], keys(space))
    assert delivery.kind.value == "delivery" and list(delivery.roles) == ["provider",
                                                                          "consumer"]
    assert delivery.public["resultDigest"] == mine["resultDigest"]
    assert delivery.public["outcome"] == "succeeded" and delivery.public["rows"] == 300
    assert "min-count" in delivery.public["checks"]
    assert receipt(consumer, mine["receiptId"])["evidence"]["index"] == \
        logged["evidence"]["index"]


@pytest.mark.parametrize(("script", "code"), [
    (SMALL_GROUP, "release-refused"), (RAW_ROWS, "release-refused"),
    (NETWORK, "failed")])
def test_what_may_not_leave_is_refused_with_a_receipt(
        space: DataSpace, agreement: str, tmp_path: Path, script: str, code: str) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    done = run(consumer, agreement, script, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {code}"), done.stderr
    job = consumer.ok("GET", "/api/jobs")["jobs"][0]
    assert job["state"] == "TERMINATED" and job["receiptId"]
    kind = "refusal" if code == "release-refused" else "delivery"
    logged = receipt(provider, job["receiptId"])
    assert logged["kind"] == kind
    assert "Permission" not in json.dumps(logged["document"]["body"]["public"])


def test_a_policy_refusal_and_the_operator_s_approval(space: DataSpace, tmp_path: Path
                                                      ) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    plain = agree(space, "bp-visits:v1:offer:0")  # research only, no approval
    path = tmp_path / "job.py"
    path.write_text(MEAN_BY_SEX)
    wrong = consumer.cli("run", plain, str(path), "--purpose", "marketing")
    assert wrong.returncode == 1 and "policy-denied" in wrong.stderr
    refused = consumer.ok("GET", "/api/jobs")["jobs"][0]
    assert receipt(provider, refused["receiptId"])["kind"] == "refusal"

    approved = agree(space, "approved-code")
    waiting = consumer.cli("run", approved, str(path), "--purpose", "research", "--no-wait")
    assert waiting.returncode == 0
    pending = wait_for(lambda: provider.ok("GET", "/api/jobs", pending="true")["jobs"])
    shown = provider.cli("jobs", "show", pending[0]["pid"])
    assert "api.read_rows" in shown.stdout and pending[0]["codeDigest"] in shown.stdout
    assert provider.cli("jobs", "approve", pending[0]["pid"]).returncode == 0
    pid = waiting.stdout.strip()
    assert wait_for(lambda: consumer.ok("GET", f"/api/jobs/{pid}")["state"] == "COMPLETED")
    again = consumer.cli("run", approved, str(path), "--purpose", "research", "--no-wait")
    second = wait_for(lambda: provider.ok("GET", "/api/jobs", pending="true")["jobs"])
    assert provider.cli("jobs", "refuse", second[0]["pid"], "--reason", "not this code"
                        ).returncode == 0
    pid = again.stdout.strip()
    final = wait_for(lambda: (j := consumer.ok("GET", f"/api/jobs/{pid}"))["state"]
                     == "TERMINATED" and j)
    assert final["reason"]["code"] == "refused-by-operator"
    assert "not this code" in final["reason"]["detail"]


ATTACKS = {
    "infinite loop": ("while True:\n    pass\n", ("cpu-limit", "timeout")),
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n"
                  "    except OSError:\n        pass\n", ("timeout", "cpu-limit", "killed")),
    "memory bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))\n",
                    ("memory-limit",)),
    "stdout flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
                     ("output-too-large",)),
    "node key": ("print(open({key!r}).read())\n", ("failed",)),
    "node database": ("print(open({db!r}, 'rb').read(100))\n", ("failed",)),
    "write outside work": ("open('/job/code/evil.py', 'w').write('x')\n", ("failed",)),
    "host passwd": ("data = open('/etc/passwd').read()\nassert 'root:' not in data\n"
                    "raise SystemExit('only the sandbox passwd')\n", ("failed",)),
    "other product": ("print(open({other!r}).read())\n", ("failed",)),
    "environment secret": ("import os, glob\n"
                           "seen = [open(p, 'rb').read() for p in glob.glob('/proc/*/environ')]\n"
                           "assert 'hunter2' not in str(dict(os.environ)) + str(seen)\n"
                           "raise SystemExit('no secret in sight')\n", ("failed",)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_end_terminated_with_a_receipt_and_leave_the_host_alone(
        space: DataSpace, agreement: str, tmp_path: Path, attack: str) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    script, codes = ATTACKS[attack]
    script = script.format(key=str(provider.home / "node-key.pem"),
                           db=str(provider.home / "node.db"),
                           other=str(space.root / "other-product.csv"))
    (space.root / "other-product.csv").write_text("name,phone\nZhang San,13800138000\n")
    before = (provider.home / "node-key.pem").read_bytes()
    done = run(consumer, agreement, script, tmp_path)
    assert done.returncode == 1, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert any(last.startswith(f"error: {code}") for code in codes), done.stderr
    job = consumer.ok("GET", "/api/jobs")["jobs"][0]
    assert job["state"] == "TERMINATED" and job["reason"]["code"] in codes
    logged = receipt(provider, job["receiptId"])
    assert logged["kind"] == "delivery"
    assert logged["document"]["body"]["public"]["outcome"] == "failed"
    assert logged["document"]["body"]["public"]["resultDigest"] is None
    assert (provider.home / "node-key.pem").read_bytes() == before
    assert not (tmp_path / "evil.py").exists()
    assert provider.api("GET", "/api/node").status_code == 200  # the node is fine


def test_a_zip_slip_bundle_is_refused_with_a_receipt(space: DataSpace, agreement: str) -> None:
    import base64
    import io
    import zipfile

    provider, consumer = space.members["hospital"], space.members["insurer"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("main.py", "print('hello')\n")
        z.writestr("../../../tmp/evil.py", "print('escaped')\n")
    shown = consumer.ok("POST", "/api/jobs", {
        "agreement": agreement, "code": base64.b64encode(archive.getvalue()).decode(),
        "purpose": "research"})
    final = wait_for(lambda: (j := consumer.ok("GET", f"/api/jobs/{shown['pid']}"))["state"]
                     == "TERMINATED" and j)
    assert final["reason"]["code"] == "code-invalid", final
    assert receipt(provider, final["receiptId"])["kind"] == "refusal"
    assert not Path("/tmp/evil.py").exists()  # noqa: S108 - where the archive aimed

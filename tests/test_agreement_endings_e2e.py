"""Ending agreements between real nodes on loopback (SQLite; tests/test_agreement_endings.py
runs the transactions on PostgreSQL too): a termination reaches the other party, both hold the
receipt, the ledger logs it once and the regulator's trace and console show it; a revoked
agreement starts no job (one waiting for approval, or a request that arrives anyway, is refused
with a refusal receipt); only the provider revokes, an agreement ends once, and a third member
cannot end someone else's agreement."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.nodes import (
    DataSpace,
    NodeProcess,
    agree,
    dataspace,
    product_spec,
    research_offer,
    wait_for,
)
from trustspace.connector.auth import encode_credential
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.crypto import SM2PrivateKey, canonical_json, sign_document, sm3
from trustspace.ledger import receipts
from trustspace.registry.credentials import iso
from trustspace.sandbox import transfer

pytestmark = pytest.mark.slow

HOSPITAL, INSURER = "urn:trustspace:participant:hospital", "urn:trustspace:participant:insurer"
PLAIN, REVIEWED = "bp-stats:v1:offer:0", "bp-stats:v1:offer:1"  # the second: code approval


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp("endings")
    with dataspace(root, "sqlite") as ds:
        provider, _, _ = ds.add_members([("hospital", "provider"), ("insurer", "consumer"),
                                         ("regulator", "regulator")])
        spec = product_spec(root / "bp.csv", "bp-stats")
        plain = research_offer(["sandbox"])
        reviewed = [*plain["permission"][0]["constraint"], {
            "leftOperand": "ts:codeApproval", "operator": "eq", "rightOperand": "required"}]
        spec["offers"] = [plain, {**plain, "permission": [{"action": "use",
                                                           "constraint": reviewed}]}]
        provider.ok("POST", "/api/products", spec)
        yield ds


def key_of(node: NodeProcess) -> SM2PrivateKey:
    return SM2PrivateKey.from_pem((node.home / "node-key.pem").read_bytes())


def signed_post(sender: NodeProcess, url: str, body: Any) -> httpx.Response:
    """A node-to-node request as `sender` signs it, outside its node."""
    content = canonical_json(body)
    credential = sender.ok("GET", "/api/node")["credential"]
    headers = {"content-type": "application/json",
               CREDENTIAL_HEADER: encode_credential(credential)}
    headers.update(sign_request("POST", url, headers.items(), content, key_of(sender),
                                extra_components=(CREDENTIAL_HEADER,)))
    return httpx.post(url, content=content, headers=headers, timeout=10)


def ended(node: NodeProcess, agreement: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        shown = node.ok("GET", f"/api/agreements/{agreement}")
        return shown if shown["status"] == status else None

    return dict(wait_for(check))


def receipt(node: NodeProcess, receipt_id: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        shown = node.ok("GET", f"/api/receipts/{receipt_id}")
        return shown if shown["status"] == status else None

    return dict(wait_for(check))


def test_a_termination_reaches_both_nodes_the_ledger_and_the_trace(space: DataSpace) -> None:
    hospital, insurer = space.members["hospital"], space.members["insurer"]
    regulator = space.members["regulator"]
    agreement = agree(insurer, hospital, "bp-stats", PLAIN)
    done = insurer.cli("agreements", "terminate", agreement, "--reason", "study finished",
                       "--code", "study-over")
    assert done.returncode == 0, done.stderr
    mine = json.loads(done.stdout)
    assert mine["status"] == "terminated" and mine["ended"]["by"] == INSURER
    rid = mine["ended"]["receiptId"]
    theirs = ended(hospital, agreement, "terminated")
    assert theirs["ended"] == {**mine["ended"], "at": theirs["ended"]["at"]}

    # Both hold the receipt; the issuer alone submits it, and it verifies.
    issued = receipt(insurer, rid, "logged")
    kept = hospital.ok("GET", f"/api/receipts/{rid}")
    assert kept["status"] == "received" and kept["document"] == issued["document"]
    keys = {HOSPITAL: key_of(hospital).public_key, INSURER: key_of(insurer).public_key}
    verified = receipts.verify_receipt(issued["document"], keys)
    assert verified.kind is receipts.Kind.TERMINATION and list(verified.roles) == ["consumer"]
    assert verified.public == {"by": INSURER, "code": "study-over", "reason": "study finished",
                               "productId": "bp-stats"}
    bundle = regulator.cli("audit", "export", "--out", "/dev/stdout", "--agreement", agreement)
    entries = [e for e in json.loads(bundle.stdout)["entries"]
               if e["receipt"]["body"]["kind"] == "termination"]
    assert [(e["receipt"]["body"]["id"], e["submitter"]) for e in entries] == [(rid, INSURER)]

    # The regulator's trace and console show it in the agreement's timeline.
    traced = regulator.cli("audit", "trace", "--agreement", agreement)
    assert traced.returncode == 0, traced.stderr
    assert "termination" in traced.stdout and "code: study-over" in traced.stdout
    assert "audit OK" in traced.stderr
    by_product = regulator.cli("audit", "trace", "--product", "bp-stats")  # names it too
    assert by_product.returncode == 0, by_product.stderr
    assert "termination" in by_product.stdout and "code: study-over" in by_product.stdout
    with httpx.Client(base_url=regulator.url, timeout=30) as browser:
        browser.post("/console/login", data={"token": regulator.token, "next": "/console"})
        page = browser.get(f"/console/agreements/{agreement}")
    assert page.status_code == 200, page.text
    assert 'class="step termination"' in page.text and "study finished" in page.text

    # It ends once; the listing shows the end.
    again = insurer.api("POST", f"/api/agreements/{agreement}/terminate", {"reason": "again"})
    assert again.status_code == 409 and again.json()["error"] == "already-ended"
    listed = {a["agreementId"]: a for a in insurer.ok("GET", "/api/agreements")["agreements"]}
    assert listed[agreement]["status"] == "terminated"


def test_a_revoked_agreement_starts_no_job(space: DataSpace) -> None:
    hospital, insurer = space.members["hospital"], space.members["insurer"]
    agreement = agree(insurer, hospital, "bp-stats", REVIEWED)
    code = b"print('hello')"
    job = {"agreement": agreement, "purpose": "research", "code": base64.b64encode(code).decode()}
    waiting = insurer.ok("POST", "/api/jobs", job)  # the provider's operator reviews it
    refused = insurer.api("POST", f"/api/agreements/{agreement}/revoke", {"reason": "mine"})
    assert refused.status_code == 403 and refused.json()["error"] == "not-the-provider"
    revoked = hospital.cli("agreements", "revoke", agreement, "--reason", "consent withdrawn")
    assert revoked.returncode == 0, revoked.stderr
    ended(insurer, agreement, "revoked")

    # A job that waited for approval is refused when approved; the consumer's node does not
    # send a new one at all.
    approved = hospital.ok("POST", f"/api/jobs/{waiting['providerPid']}/approve")
    assert approved["state"] == "TERMINATED"
    assert approved["reason"]["code"] == "agreement-revoked" and approved["receiptId"]
    again = insurer.api("POST", "/api/jobs", job)
    assert again.status_code == 409 and again.json()["error"] == "agreement-revoked", again.text

    # A request that reaches the provider anyway is refused, with a refusal receipt.
    pid = f"urn:uuid:{uuid.uuid4()}"
    shown = hospital.ok("GET", f"/api/agreements/{agreement}")
    body = {"consumerPid": pid, "agreementId": agreement, "agreementDigest": shown["digest"],
            "provider": HOSPITAL, "consumer": INSURER, "dataset": "bp-stats",
            "mode": "sandbox", "purpose": "research", "codeDigest": "sm3:" + sm3(code).hex(),
            "parametersDigest": receipts.digest_of({}), "requestedAt": iso(datetime.now(UTC))}
    request = sign_document(transfer.JOB_REQUEST_TYPE, body, key_of(insurer), role="consumer")
    answer = signed_post(insurer, f"{hospital.url}/transfers/request", transfer.request(
        pid, agreement, "sandbox", insurer.url, request.to_json(),
        base64.urlsafe_b64encode(code).decode(), {}))
    assert answer.status_code == 403 and answer.json()["code"] == "agreement-revoked"
    refusal = receipt(hospital, answer.json()[transfer.RECEIPT], "logged")
    assert refusal["kind"] == "refusal"
    assert refusal["document"]["body"]["public"]["rule"] == "agreement-revoked"


def test_a_third_member_cannot_end_someone_else_s_agreement(space: DataSpace) -> None:
    hospital, insurer = space.members["hospital"], space.members["insurer"]
    regulator = space.members["regulator"]
    agreement = agree(insurer, hospital, "bp-stats", PLAIN)
    digest = hospital.ok("GET", f"/api/agreements/{agreement}")["digest"]
    forged = receipts.issue(receipts.Ending(receipts.Kind.TERMINATION, INSURER, "forged", "x"),
                            receipts.Parties(HOSPITAL, INSURER, agreement, digest),
                            key_of(regulator), "consumer", datetime.now(UTC), [])
    url = f"{hospital.url}/agreements/{agreement}/termination"
    notice = {"agreementId": agreement, "receipt": forged.to_json()}
    answer = signed_post(regulator, url, notice)  # sent by the third member
    assert answer.status_code == 404 and answer.json()["error"] == "unknown-agreement"
    answer = signed_post(insurer, url, notice)  # or passed on by the party itself
    assert answer.status_code == 400 and answer.json()["error"] == "receipt-invalid"
    assert hospital.ok("GET", f"/api/agreements/{agreement}")["status"] == "active"

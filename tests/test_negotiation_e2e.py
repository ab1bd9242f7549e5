"""Contract negotiation between real nodes on loopback, on SQLite and PostgreSQL: the happy
path, manual approval, refusal, counter-offer, termination, duplicates and out-of-order messages,
forged agreements, and a consumer killed with SIGKILL in the middle."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec
from trustspace.connector.auth import encode_credential
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.contracts import messages
from trustspace.crypto import SM2PrivateKey, canonical_json, verify_document

pytestmark = pytest.mark.slow

MANUAL_OFFER = {"@id": "manual-offer", "ts:negotiation": "manual",
                "ts:purposes": ["research", "credit-scoring"], "permission": [
                    {"action": "use", "constraint": [
                        {"leftOperand": "odrl:purpose", "operator": "eq",
                         "rightOperand": "credit-scoring"},
                        {"leftOperand": "ts:computeMode", "operator": "eq",
                         "rightOperand": "federated"}]}]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def space(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp(f"neg-{request.param}")
    with dataspace(root, request.param) as ds:
        provider = ds.add_member("tax-bureau", "provider")
        ds.add_member("bank", "consumer")
        provider.ok("POST", "/api/products", product_spec(root / "auto.csv", "auto-data"))
        provider.ok("POST", "/api/products", product_spec(
            root / "manual.csv", "manual-data", offers=[MANUAL_OFFER]))
        yield ds


def wait_state(node: NodeProcess, pid: str, states: tuple[str, ...],
               timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shown = node.ok("GET", f"/api/negotiations/{pid}")
        if shown["state"] in states:
            return dict(shown)
        assert time.monotonic() < deadline, f"stuck in {shown['state']}: {shown}"
        time.sleep(0.02)


def negotiate(space: DataSpace, dataset: str, offer: str | None = None) -> dict[str, Any]:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    body = {"provider_url": provider.url, "dataset": dataset}
    if offer:
        body["offer"] = offer
    return dict(consumer.ok("POST", "/api/negotiations", body))


def provider_side(space: DataSpace, consumer_pid: str) -> dict[str, Any]:
    provider = space.members["tax-bureau"]
    for neg in provider.ok("GET", "/api/negotiations")["negotiations"]:
        if neg["consumerPid"] == consumer_pid:
            return dict(neg)
    raise AssertionError(f"provider knows no negotiation for {consumer_pid}")


def test_automatic_acceptance_reaches_a_doubly_signed_agreement(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "auto-data")
    done = wait_state(consumer, started["pid"], ("FINALIZED", "TERMINATED"))
    assert done["state"] == "FINALIZED", done
    theirs = wait_state(provider, provider_side(space, started["pid"])["pid"], ("FINALIZED",))
    assert theirs["agreementId"] == done["agreementId"]
    ours = consumer.ok("GET", f"/api/agreements/{done['agreementId']}")
    mine = provider.ok("GET", f"/api/agreements/{done['agreementId']}")
    assert ours["digest"] == mine["digest"]
    keys = [json.loads(json.dumps(n.ok("GET", "/api/node")["credential"]))["body"]
            ["credentialSubject"]["ts:publicKey"] for n in (provider, consumer)]
    from trustspace.crypto import SM2PublicKey

    pubs = [SM2PublicKey.from_pem(k) for k in keys]
    doc = verify_document(ours["document"], pubs, expected_type="trustspace.agreement",
                          required_signers=[k.key_id for k in pubs])
    body = doc.body
    assert body["dataset"] == "auto-data" and body["dataDigest"].startswith("sm3:")
    assert body["agreement"]["permission"][0]["constraint"][0]["rightOperand"] == "research"
    assert [s.role for s in doc.signatures] == ["provider", "consumer"]


def test_the_cli_negotiates_and_shows_the_agreement(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    done = consumer.cli("negotiate", provider.url, "auto-data")
    assert done.returncode == 0, done.stderr
    agreement_id = done.stdout.strip()
    assert agreement_id.startswith("urn:uuid:") and "FINALIZED" in done.stderr
    shown = json.loads(provider.cli("agreements", "show", agreement_id).stdout)
    assert shown["document"]["body"]["consumer"] == "urn:trustspace:participant:bank"
    missing = consumer.cli("negotiate", provider.url, "no-such-product")
    assert missing.returncode == 2 and "unknown-dataset" in missing.stderr


def test_manual_approval_waits_for_the_operator(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    time.sleep(0.3)
    assert provider.ok("GET", f"/api/negotiations/{theirs}")["state"] == "REQUESTED"
    assert consumer.ok("GET", f"/api/negotiations/{started['pid']}")["state"] == "REQUESTED"
    provider.ok("POST", f"/api/negotiations/{theirs}/approve")
    assert wait_state(consumer, started["pid"], ("FINALIZED",))["agreementId"]


def provider_side_when(space: DataSpace, consumer_pid: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(provider_side(space, consumer_pid)["pid"])
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_the_provider_refuses(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    provider.ok("POST", f"/api/negotiations/{theirs}/refuse", {"reason": "not for banks"})
    done = wait_state(consumer, started["pid"], ("TERMINATED",))
    assert done["termination"]["reason"] == ["not for banks"]
    again = provider.api("POST", f"/api/negotiations/{theirs}/approve")
    assert again.status_code == 400 and again.json()["error"] == "illegal-transition"


def test_counter_offer_accepted_by_the_consumer(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    counter = {"@id": "counter-1", "ts:purposes": ["credit-scoring"], "permission": [
        {"action": "use", "constraint": [
            {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "credit-scoring"},
            {"leftOperand": "ts:computeMode", "operator": "eq", "rightOperand": "federated"},
            {"leftOperand": "odrl:count", "operator": "lteq", "rightOperand": "3"}]}]}
    too_wide = {**counter, "@id": "counter-0", "permission": [{"action": "use"}]}
    refused = provider.api("POST", f"/api/negotiations/{theirs}/offer", {"offer": too_wide})
    assert refused.status_code == 400 and refused.json()["error"] == "policy-invalid"
    provider.ok("POST", f"/api/negotiations/{theirs}/offer", {"offer": counter})
    offered = wait_state(consumer, started["pid"], ("OFFERED",))
    assert offered["offer"]["@id"] == "counter-1"
    consumer.ok("POST", f"/api/negotiations/{started['pid']}/accept")
    wait_state(provider, theirs, ("ACCEPTED",))
    provider.ok("POST", f"/api/negotiations/{theirs}/approve")  # manual offers wait here too
    done = wait_state(consumer, started["pid"], ("FINALIZED",))
    agreement = consumer.ok("GET", f"/api/agreements/{done['agreementId']}")["document"]
    constraints = agreement["body"]["agreement"]["permission"][0]["constraint"]
    assert [c["leftOperand"] for c in constraints] == ["odrl:purpose", "ts:computeMode",
                                                       "odrl:count"]


def test_the_consumer_terminates(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    wait_state(consumer, started["pid"], ("REQUESTED",))
    deadline = time.monotonic() + 10  # the consumer needs the provider's pid to address it
    while not consumer.ok("GET", f"/api/negotiations/{started['pid']}")["providerPid"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    consumer.ok("POST", f"/api/negotiations/{started['pid']}/terminate",
                {"reason": "found another source"})
    assert wait_state(provider, theirs, ("TERMINATED",))["termination"]["reason"] == \
        ["found another source"]


def _identity(node: NodeProcess) -> tuple[SM2PrivateKey, dict[str, Any]]:
    key = SM2PrivateKey.from_pem((node.home / "node-key.pem").read_bytes())
    return key, node.ok("GET", "/api/node")["credential"]


def send(url: str, body: Any, node: NodeProcess) -> httpx.Response:
    key, credential = _identity(node)
    content = canonical_json(body)
    headers = {"content-type": "application/json",
               CREDENTIAL_HEADER: encode_credential(credential)}
    headers.update(sign_request("POST", url, headers, content, key))
    return httpx.post(url, content=content, headers=headers, timeout=30)


def test_duplicates_out_of_order_and_unknown_processes(space: DataSpace) -> None:
    from tests.dsp_schemas import validator

    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "auto-data")
    done = wait_state(consumer, started["pid"], ("FINALIZED",))
    provider_pid, consumer_pid = done["providerPid"], done["consumerPid"]
    # A duplicated finalized event changes nothing and is acknowledged.
    event = messages.event(provider_pid, consumer_pid, "ACCEPTED")
    late = send(f"{provider.url}/negotiations/{provider_pid}/events", event, consumer)
    assert late.status_code == 400 and late.json()["code"] == "illegal-transition"
    validator("negotiation/contract-negotiation-error-schema.json").validate(late.json())
    # Verification before any agreement: out of order.
    fresh = negotiate(space, "manual-data")
    theirs = provider_side_when(space, fresh["pid"])
    early = send(f"{provider.url}/negotiations/{theirs}/agreement/verification",
                 messages.verification(theirs, fresh["pid"], {"forged": True}), consumer)
    assert early.status_code == 400 and early.json()["code"] == "illegal-transition"
    unknown = send(f"{provider.url}/negotiations/urn:uuid:nope/events",
                   messages.event("urn:uuid:nope", consumer_pid, "ACCEPTED"), consumer)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown-negotiation"
    mismatched = send(f"{provider.url}/negotiations/{theirs}/termination",
                      messages.termination(theirs, "urn:uuid:other", "x", ["y"]), consumer)
    assert mismatched.status_code == 400 and mismatched.json()["code"] == "pid-mismatch"
    exact = messages.termination(theirs, fresh["pid"], "stop", ["twice"])
    first = send(f"{provider.url}/negotiations/{theirs}/termination", exact, consumer)
    second = send(f"{provider.url}/negotiations/{theirs}/termination", exact, consumer)
    assert first.status_code == second.status_code == 200  # the same message, applied once
    assert second.json()["state"] == "TERMINATED"
    validator("negotiation/contract-negotiation-schema.json").validate(second.json())


def test_another_member_cannot_touch_a_negotiation(space: DataSpace) -> None:
    provider = space.members["tax-bureau"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    intruder = space.members.get("intruder") or space.add_member("intruder", "consumer")
    refused = send(f"{provider.url}/negotiations/{theirs}/termination",
                   messages.termination(theirs, started["pid"], "x", ["y"]), intruder)
    assert refused.status_code == 404


def test_a_forged_agreement_is_refused_by_the_consumer(space: DataSpace) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    from trustspace.crypto import sign_document

    key, _ = _identity(provider)
    body = {"agreement": {"@id": "urn:uuid:forged", "@type": "Agreement",
                          "permission": [{"action": "use"}], "target": "manual-data",
                          "assigner": "urn:trustspace:participant:tax-bureau",
                          "assignee": "urn:trustspace:participant:bank"},
            "provider": "urn:trustspace:participant:tax-bureau",
            "consumer": "urn:trustspace:participant:bank", "dataset": "manual-data",
            "providerPid": theirs, "consumerPid": started["pid"]}
    widened = sign_document("trustspace.agreement", body, key, role="provider")
    message = messages.agreement(theirs, started["pid"], body["agreement"], widened.to_json())
    refused = send(f"{consumer.url}/negotiations/{started['pid']}/agreement", message, provider)
    assert refused.status_code == 400 and refused.json()["code"] == "agreement-mismatch"
    other = SM2PrivateKey.generate()
    badly_signed = sign_document("trustspace.agreement", body, other, role="provider")
    message = messages.agreement(theirs, started["pid"], body["agreement"],
                                 badly_signed.to_json())
    refused = send(f"{consumer.url}/negotiations/{started['pid']}/agreement", message, provider)
    assert refused.status_code == 400 and refused.json()["code"] == "agreement-invalid"
    assert consumer.ok("GET", f"/api/negotiations/{started['pid']}")["state"] == "REQUESTED"


def test_a_consumer_killed_mid_negotiation_finishes_after_restart(space: DataSpace,
                                                                  tmp_path: Path) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    assert consumer.process is not None
    consumer.process.send_signal(signal.SIGKILL)
    consumer.process.wait()
    provider.ok("POST", f"/api/negotiations/{theirs}/approve")  # the agreement cannot be sent
    time.sleep(0.5)
    waiting = provider.ok("GET", f"/api/negotiations/{theirs}")
    assert waiting["state"] == "AGREED"
    consumer.start(space.env)  # comes back: the provider's retries deliver the agreement
    assert wait_state(consumer, started["pid"], ("FINALIZED",), timeout=60)["agreementId"]
    assert wait_state(provider, theirs, ("FINALIZED",))["state"] == "FINALIZED"


def test_protocol_messages_are_checked_before_anything_is_read(space: DataSpace) -> None:
    """The signature is checked in the same worker-thread call as the transaction, but first:
    a wrongly signed, tampered or replayed message is a 401 that changes nothing, even when its
    body is not a message at all."""
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    started = negotiate(space, "manual-data")
    theirs = provider_side_when(space, started["pid"])
    url = f"{provider.url}/negotiations/{theirs}/termination"
    key, credential = _identity(consumer)
    content = canonical_json(messages.termination(theirs, started["pid"], "stop", ["x"]))

    def headers(signer: SM2PrivateKey) -> dict[str, str]:
        base = {"content-type": "application/json",
                CREDENTIAL_HEADER: encode_credential(credential)}
        return {**base, **sign_request("POST", url, base, content, signer)}

    other = httpx.post(url, content=content, headers=headers(SM2PrivateKey.generate()))
    assert other.status_code == 401 and other.json()["error"] == "unknown-key"
    tampered = httpx.post(url, content=b"not a message", headers=headers(key))
    assert tampered.status_code == 401 and tampered.json()["error"] == "digest-mismatch"
    assert provider.ok("GET", f"/api/negotiations/{theirs}")["state"] == "REQUESTED"
    signed = headers(key)
    first = httpx.post(url, content=content, headers=signed)
    assert first.status_code == 200 and first.json()["state"] == "TERMINATED"
    again = httpx.post(url, content=content, headers=signed)
    assert again.status_code == 401 and again.json()["error"] == "replayed-nonce"

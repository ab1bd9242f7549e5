"""Receipts and the shared log between real nodes on loopback, on SQLite and PostgreSQL: a
finalized negotiation leaves an authorization receipt that both parties sign, the authority's
log takes it with an inclusion proof and a checkpoint the members cosign; the regulator can open
its confidential part and no one else can; forged and conflicting receipts are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec, wait_for
from trustspace.connector.auth import encode_credential
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.connector.localspace import run_cli
from trustspace.crypto import (
    NotARecipient,
    SignedDocument,
    SM2PrivateKey,
    SM2PublicKey,
    canonical_json,
)
from trustspace.ledger import merkle
from trustspace.ledger.checkpoint import (
    Checkpoint,
    SignedNote,
    quorum,
    sign_checkpoint,
    verify_note,
)
from trustspace.ledger.log import leaf_bytes
from trustspace.ledger.receipts import Receipt, verify_receipt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def space(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp(f"ledger-{request.param}")
    with dataspace(root, request.param) as ds:
        provider = ds.add_member("hospital", "provider")
        ds.add_member("insurer", "consumer")
        ds.add_member("regulator", "regulator")
        ds.add_member("outsider", "consumer")
        provider.ok("POST", "/api/products", product_spec(root / "bp.csv", "bp-stats"))
        yield ds


def key_of(node: NodeProcess) -> SM2PrivateKey:
    return SM2PrivateKey.from_pem((node.home / "node-key.pem").read_bytes())


def public_of(node: NodeProcess) -> SM2PublicKey:
    return key_of(node).public_key




def finalize(space: DataSpace) -> str:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    started = consumer.ok("POST", "/api/negotiations",
                          {"provider_url": provider.url, "dataset": "bp-stats"})

    def done() -> str | None:
        shown = consumer.ok("GET", f"/api/negotiations/{started['pid']}")
        assert shown["state"] != "TERMINATED", shown
        return shown["agreementId"] if shown["state"] == "FINALIZED" else None

    return str(wait_for(done))


def logged(node: NodeProcess, agreement: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        rows = node.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
        if rows and rows[0]["status"] == "logged":
            return dict(node.ok("GET", f"/api/receipts/{rows[0]['id']}"))
        return None

    return dict(wait_for(check))


def signed_call(space: DataSpace, node: NodeProcess, method: str, url: str,
                body: Any = None) -> httpx.Response:
    content = canonical_json(body) if body is not None else b""
    credential = node.ok("GET", "/api/node")["credential"]
    headers = {"content-type": "application/json",
               CREDENTIAL_HEADER: encode_credential(credential)}
    headers.update(sign_request(method, url, headers.items(), content, key_of(node),
                                extra_components=(CREDENTIAL_HEADER,)))
    return httpx.request(method, url, content=content, headers=headers, timeout=10)


def test_a_finalized_agreement_leaves_a_countersigned_logged_receipt(space: DataSpace) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    agreement = finalize(space)
    mine, theirs = logged(provider, agreement), logged(consumer, agreement)
    assert mine["id"] == theirs["id"] and mine["digest"] == theirs["digest"]
    assert mine["document"] == theirs["document"]
    parties = {"urn:trustspace:participant:hospital": public_of(provider),
               "urn:trustspace:participant:insurer": public_of(consumer)}
    receipt = verify_receipt(mine["document"], parties)
    assert receipt.kind.value == "authorization"
    assert list(receipt.roles) == ["provider", "consumer"]
    shown = provider.ok("GET", f"/api/agreements/{agreement}")
    assert receipt.document.body["agreementDigest"] == shown["digest"]
    assert receipt.public["dataDigest"] == shown["document"]["body"]["dataDigest"]

    # The evidence: an inclusion proof to a checkpoint the authority signed.
    evidence = mine["evidence"]
    note = SignedNote.parse(evidence["checkpoint"])
    authority_key = public_of(space.authority)
    origin = note.checkpoint().origin
    verify_note(note, {origin: authority_key}, origin=origin)
    doc = SignedDocument.from_json(mine["document"])
    merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes(doc)), evidence["index"],
                            evidence["size"], [bytes.fromhex(h) for h in evidence["inclusion"]],
                            note.checkpoint().root_hash)
    assert evidence["size"] == note.checkpoint().size
    assert theirs["evidence"]["index"] == evidence["index"]  # submitted twice, logged once


def test_the_regulator_opens_the_confidential_part_and_no_one_else(space: DataSpace) -> None:
    provider = space.members["hospital"]
    agreement = finalize(space)
    row = logged(provider, agreement)
    receipt = Receipt(SignedDocument.from_json(row["document"]))
    policy = provider.ok("GET", f"/api/agreements/{agreement}")["document"]["body"]["agreement"]
    for name in ("hospital", "insurer", "regulator"):
        opened = receipt.open(key_of(space.members[name]))
        assert opened == {"policy": policy}
    with pytest.raises(NotARecipient):
        receipt.open(key_of(space.members["outsider"]))
    with pytest.raises(NotARecipient):
        receipt.open(key_of(space.authority))


def test_checkpoints_become_final_when_witnesses_cosign(space: DataSpace) -> None:
    provider = space.members["hospital"]
    finalize(space)
    members = {f"urn:trustspace:participant:{n}": public_of(space.members[n])
               for n in ("hospital", "insurer", "regulator", "outsider")}

    def final() -> dict[str, Any] | None:
        answer = signed_call(space, provider, "GET",
                             f"{space.authority.url}/ledger/checkpoint").json()
        return answer if answer["final"] else None

    answer = wait_for(final)
    note = SignedNote.parse(answer["note"])
    assert quorum(note, members, 2)
    assert len(answer["cosigners"]) >= 2
    assert not quorum(note, members, len(members) + 1)


def test_forged_and_conflicting_receipts_are_refused(space: DataSpace) -> None:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    agreement = finalize(space)
    row = logged(provider, agreement)
    url = f"{space.authority.url}/ledger/entries"
    # Replayed: the same receipt again gets the same index, not a second entry.
    again = signed_call(space, consumer, "POST", url, {"receipts": [row["document"]]})
    assert again.status_code == 200, again.text
    assert again.json()["entries"][0] == {**again.json()["entries"][0], "duplicate": True,
                                          "index": row["evidence"]["index"]}
    # Forged: the body changed after both signed.
    forged = {**row["document"], "body": {**row["document"]["body"],
                                          "issuedAt": "2020-01-01T00:00:00Z"}}
    answer = signed_call(space, consumer, "POST", url, {"receipts": [forged]})
    assert answer.status_code == 400 and answer.json()["error"] == "receipt-invalid"
    # Not a party: the outsider may not submit the hospital's receipts.
    answer = signed_call(space, space.members["outsider"], "POST", url,
                         {"receipts": [row["document"]]})
    assert answer.status_code == 400 and "not-a-party" in answer.json()["detail"]
    # Only the provider's signature: an authorization receipt needs both.
    doc = row["document"]
    half = {**doc, "signatures": doc["signatures"][:1]}
    answer = signed_call(space, provider, "POST", url, {"receipts": [half]})
    assert answer.status_code == 400 and "missing-signature" in answer.json()["detail"]


def test_the_regulator_traces_and_verifies_with_the_cli(space: DataSpace, tmp_path: Path
                                                       ) -> None:
    regulator = space.members["regulator"]
    agreement = finalize(space)
    logged(space.members["hospital"], agreement)
    traced = regulator.cli("audit", "trace", "--agreement", agreement)
    assert traced.returncode == 0, traced.stderr
    assert "authorization" in traced.stdout and agreement in traced.stdout
    assert '"rightOperand": "research"' in traced.stdout  # the sealed policy, opened
    assert "signed by consumer, provider" in traced.stdout
    assert "audit OK" in traced.stderr
    verified = regulator.cli("audit", "verify", "--json", str(tmp_path / "report.json"),
                             "--html", str(tmp_path / "report.html"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (tmp_path / "report.html").read_text().count("<tr>") >= 2
    bundle = tmp_path / "bundle.json"
    assert regulator.cli("audit", "export", "--out", str(bundle)).returncode == 0
    value = json.loads(bundle.read_text())
    assert value["complete"] and len(value["entries"]) >= 1
    value["entries"][0]["receipt"]["body"]["public"]["dataDigest"] = "sm3:" + "0" * 64
    bundle.write_text(json.dumps(value))
    key = space.authority.home / "authority.pub.pem"
    broken = run_cli("audit", "verify", "--bundle", str(bundle), "--authority-key", str(key))
    assert broken.returncode == 1
    assert "FAILURE inclusion-failed at entry 0" in broken.stdout
    outsider = space.members["outsider"].cli("audit", "verify")
    assert outsider.returncode != 0 and "role" in outsider.stderr


def test_a_member_refuses_to_cosign_a_forked_history(space: DataSpace) -> None:
    provider, witness = space.members["hospital"], space.members["insurer"]
    finalize(space)
    url = f"{witness.url}/witness/add-checkpoint"
    origin = space.authority.url.split("://", 1)[1] + "/ledger"
    authority = key_of(space.authority)

    def offer(size: int, root: bytes, old: int, proof: list[bytes]) -> httpx.Response:
        note = sign_checkpoint(Checkpoint(origin, size, root), origin, authority)
        return signed_call(space, space.authority, "POST", url, {
            "checkpoint": note.text(), "oldSize": old, "logName": origin,
            "consistency": [h.hex() for h in proof]})

    def seen() -> int | None:  # the size this witness cosigned last
        answer = offer(1, bytes(32), 10**9, [])
        return answer.json().get("size") if answer.status_code == 409 else None

    for _ in range(20):  # the witness may cosign the log's newest checkpoint meanwhile
        size = wait_for(seen)
        forked = offer(size, bytes(32), size, [])
        if forked.json().get("error") != "rollback":
            break
    assert forked.status_code == 409 and forked.json()["error"] == "fork", forked.text
    grown = offer(size + 1, bytes(32), size, [bytes(32)] * 3)
    assert grown.status_code in (409, 422), grown.text
    assert grown.json()["error"] in ("inconsistent", "size-mismatch")  # the latter: it moved on
    for _ in range(20):  # again, the witness may move on between the two calls
        grown = offer(10**6, bytes(32), wait_for(seen), [bytes(32)] * 3)
        if grown.json().get("error") != "size-mismatch":
            break
    assert grown.status_code == 422 and grown.json()["error"] == "inconsistent", grown.text
    # Someone other than the authority may not ask at all.
    stranger = signed_call(space, provider, "POST", url, {"checkpoint": "x", "oldSize": 0,
                                                          "logName": origin})
    assert stranger.status_code == 403 and stranger.json()["error"] == "not-the-log"
    assert wait_for(seen) < 10**6  # the forged sizes were not taken


def test_a_ledger_outage_loses_nothing_and_duplicates_nothing(space: DataSpace) -> None:
    """The authority (and its log) goes down; receipts wait, survive the provider's own
    restart, and reach the log exactly once when it is back."""
    provider, consumer = space.members["hospital"], space.members["insurer"]
    finalize(space)  # every node has the authority's revocation list, to serve on while down
    space.authority.stop()
    try:
        agreement = finalize(space)

        def waiting() -> dict[str, Any] | None:
            rows = provider.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
            row = rows[0] if rows else None
            return row if row and row["status"] == "pending" and row["lastError"] else None

        row = wait_for(waiting)
        assert "unavailable" in row["lastError"] and row["evidence"] is None
        provider.stop()
        provider.start()
    finally:
        space.authority.start()
    mine, theirs = logged(provider, agreement), logged(consumer, agreement)
    assert mine["evidence"]["index"] == theirs["evidence"]["index"]
    bundle = space.members["regulator"].cli("audit", "export", "--out", "/dev/stdout",
                                            "--agreement", agreement)
    entries = json.loads(bundle.stdout)["entries"]
    assert [e["receipt"]["body"]["id"] for e in entries] == [mine["id"]]

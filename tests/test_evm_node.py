"""A provider whose ledger is an EVM chain (a real Anvil node): its receipts go into its own log,
each is recorded on chain and the log's checkpoints are anchored; Anvil going down and coming
back loses nothing and writes nothing twice; the regulator checks the anchors on the chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.anvil import Anvil
from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec, wait_for
from trustspace.connector.evm_ledger import chain_id
from trustspace.connector.localspace import run_cli
from trustspace.crypto import SM2PrivateKey
from trustspace.ledger.checkpoint import Checkpoint, SignedNote, sign_checkpoint
from trustspace.ledger.evm import CheckpointEvent, EvmLedger, ReceiptEvent

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.evm_fixtures"]


@pytest.fixture(scope="module")
def chain(start_anvil: Any) -> Anvil:
    return start_anvil()  # this module's own node: it is stopped and restarted


@pytest.fixture(scope="module")
def contract(chain: Anvil) -> tuple[str, str]:
    from trustspace.ledger.evm import deploy

    key = chain.funded_key()
    return deploy(chain.url, key), key


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory, chain: Anvil,
          contract: tuple[str, str]) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp("evm-space")
    address, key = contract
    with dataspace(root, "sqlite") as ds:
        provider = ds.add_member("hospital", "provider")
        ds.add_member("insurer", "consumer")
        ds.add_member("regulator", "regulator")
        provider.stop()
        provider.start(env={"TRUSTSPACE_LEDGER": "evm", "TRUSTSPACE_EVM_RPC_URL": chain.url,
                            "TRUSTSPACE_EVM_CONTRACT": address, "TRUSTSPACE_EVM_KEY": key,
                            "TRUSTSPACE_EVM_BATCH": "false",
                            "TRUSTSPACE_HTTP_TIMEOUT_SECONDS": "2"})
        provider.ok("POST", "/api/products", product_spec(root / "bp.csv", "bp-stats"))
        yield ds




def finalize(space: DataSpace) -> str:
    provider, consumer = space.members["hospital"], space.members["insurer"]
    started = consumer.ok("POST", "/api/negotiations",
                          {"provider_url": provider.url, "dataset": "bp-stats"})

    def done() -> str | None:
        shown = consumer.ok("GET", f"/api/negotiations/{started['pid']}")
        assert shown["state"] != "TERMINATED", shown
        return shown["agreementId"] if shown["state"] == "FINALIZED" else None

    return str(wait_for(done))


def receipt_of(node: NodeProcess, agreement: str, status: str = "logged") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        rows = node.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
        if rows and rows[0]["status"] == status:
            return dict(node.ok("GET", f"/api/receipts/{rows[0]['id']}"))
        return None

    return dict(wait_for(check))


def reader(chain: Anvil, contract: tuple[str, str]) -> EvmLedger:
    return EvmLedger(chain.url, contract[0], contract[1])


def test_receipts_are_recorded_and_the_log_anchored(space: DataSpace, chain: Anvil,
                                                    contract: tuple[str, str]) -> None:
    provider = space.members["hospital"]
    agreement = finalize(space)
    row = receipt_of(provider, agreement)
    evidence = row["evidence"]
    assert evidence["chainTx"].startswith("0x") and evidence["chainBlock"] >= 1
    events = reader(chain, contract).events()
    recorded = [e for e in events if isinstance(e, ReceiptEvent)
                and e.receipt_id == chain_id(row["id"])]
    assert len(recorded) == 1 and recorded[0].tx.tx_hash == evidence["chainTx"]
    assert recorded[0].digest.hex() == row["digest"].removeprefix("sm3:")
    assert recorded[0].agreement == chain_id(agreement)
    note = SignedNote.parse(evidence["checkpoint"]).checkpoint()
    anchors = [e for e in events if isinstance(e, CheckpointEvent) and e.size == note.size]
    assert [a.root_hash for a in anchors] == [note.root_hash]


def test_an_outage_of_the_chain_loses_nothing_and_duplicates_nothing(
        space: DataSpace, chain: Anvil, contract: tuple[str, str]) -> None:
    provider = space.members["hospital"]
    finalize(space)  # warm: the revocation list is at hand while we wait
    chain.stop()
    try:
        agreement = finalize(space)
        row = receipt_of(provider, agreement, status="pending")

        def failed() -> dict[str, Any] | None:
            shown = provider.ok("GET", f"/api/receipts/{row['id']}")
            return shown if shown["lastError"] else None

        assert "unavailable" in wait_for(failed)["lastError"]
    finally:
        chain.start()
    row = receipt_of(provider, agreement)
    events = reader(chain, contract).events()
    ids = [e.receipt_id for e in events if isinstance(e, ReceiptEvent)]
    assert ids.count(chain_id(row["id"])) == 1
    assert len(ids) == len(set(ids))  # nothing recorded twice, across the restart
    size = SignedNote.parse(row["evidence"]["checkpoint"]).checkpoint().size
    assert size in {e.size for e in events if isinstance(e, CheckpointEvent)}


def test_the_regulator_checks_the_anchors_on_the_chain(
        space: DataSpace, chain: Anvil, contract: tuple[str, str], tmp_path: Path) -> None:
    provider, regulator = space.members["hospital"], space.members["regulator"]
    receipt_of(provider, finalize(space))
    chain_args = ("--rpc-url", chain.url, "--contract", contract[0])
    verified = regulator.cli("audit", "verify", "--source", provider.url, *chain_args)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert " 0 anchors" not in verified.stderr
    # The provider rewrites its own log: re-signs its newest checkpoint over another root.
    bundle_file = tmp_path / "bundle.json"
    assert regulator.cli("audit", "export", "--source", provider.url,
                         "--out", str(bundle_file)).returncode == 0
    bundle = json.loads(bundle_file.read_text())
    key = SM2PrivateKey.from_pem((provider.home / "node-key.pem").read_bytes())
    last = SignedNote.parse(bundle["checkpoints"][-1]).checkpoint()
    forged = sign_checkpoint(Checkpoint(last.origin, last.size, bytes(32)), bundle["logName"],
                             key)
    bundle["checkpoints"][-1] = forged.text()
    bundle_file.write_text(json.dumps(bundle))
    anchor = space.authority.home / "authority.pub.pem"
    broken = run_cli("audit", "verify", "--bundle", str(bundle_file), "--authority-key",
                     str(anchor), *chain_args)
    assert broken.returncode == 1
    assert "anchor-mismatch" in broken.stdout and "inconsistent-checkpoints" in broken.stdout

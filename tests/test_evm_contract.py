"""The committed contract artifact is what the pinned compiler makes of the committed source."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "trustspace" / "ledger" / "ReceiptLedger.sol"
ARTIFACT = SOURCE.with_suffix(".json")


def test_artifact_names_the_committed_source() -> None:
    artifact = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    assert artifact["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "ReceiptLedger.sol changed: run scripts/compile-contract")
    pragma = next(line for line in SOURCE.read_text().splitlines()
                  if line.startswith("pragma solidity"))
    assert pragma == f"pragma solidity {artifact['compiler']['npm'].removeprefix('solc@')};"
    assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}


def test_recompiling_gives_the_committed_abi_and_bytecode(tmp_path: Path) -> None:
    fresh = tmp_path / "ReceiptLedger.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "compile-contract"),
                    "--output", str(fresh)], check=True, timeout=600)
    committed = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    rebuilt = json.loads(fresh.read_text(encoding="utf-8"))
    assert rebuilt["abi"] == committed["abi"]
    assert rebuilt["bytecode"] == committed["bytecode"]
    assert rebuilt["deployedBytecode"] == committed["deployedBytecode"]
    assert rebuilt == committed

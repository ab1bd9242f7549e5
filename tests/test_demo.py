"""The README's main job: `trustspace demo` runs every check and exits 0 only if all passed.

The whole story runs once, on a chain (`--ledger evm` against a real Anvil), and every step's
evidence is checked there. `trustspace demo` as the README runs it (the authority's shared log)
runs every step but federated training, the one step that does not depend on the ledger and
takes half the demo's time; tests/test_fl_e2e.py trains across three hospitals on that ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.anvil import Anvil
from trustspace.connector import demo, demo_story

pytest_plugins = ["tests.evm_fixtures"]

# What the steps prove, whichever ledger the hospitals use.
EVIDENCE = ("registered by the authority", "verified against the trust anchor", "401 revoked",
            "audit summary", "signed by provider and consumer",
            "inclusion proof to a signed checkpoint", "audit OK", "bubblewrap sandbox",
            "release-refused", "equal to NumPy", "after hospital-b's operator approved",
            "400 offer-mismatch", "under CKKS", "policy-denied")
FEDERATED = "federated training"
FEDERATED_EVIDENCE = ("Flower rounds across the three hospitals' SuperNodes",
                      "only model updates left the hospitals", "held-out accuracy",
                      "3 delivery receipts")


def run_demo(*args: str, env: dict[str, str], timeout: float) -> str:
    out = subprocess.run([sys.executable, "-m", "trustspace", "demo", *args],
                         capture_output=True, check=False, timeout=timeout,
                         env={**os.environ, **env})
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    return text


def assert_every_proof(text: str, skipped: tuple[str, ...] = ()) -> None:
    total = len(demo.CRYPTO_STEPS) + len(demo_story.STEPS) - len(skipped)
    left_out = f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    assert f"{total} of {total} checks passed{left_out}\n" in text
    assert "✗" not in text and text.count("✓") == total
    for name, _ in [*demo.CRYPTO_STEPS, *demo_story.STEPS]:
        assert (f"– {name}: skipped" if name in skipped else f"✓ {name}: ") in text
    for evidence in EVIDENCE:
        assert evidence in text


@pytest.mark.slow
def test_demo_runs_and_reports_each_proof() -> None:
    """`trustspace demo`: receipts in the authority's log, verified whole to a final
    checkpoint."""
    text = run_demo(env={demo.SKIP_ENV: FEDERATED}, timeout=300)
    assert_every_proof(text, skipped=(FEDERATED,))
    assert "each in the authority's SM3 Merkle log" in text
    assert "verified the whole log: audit OK" in text and ", final" in text


@pytest.mark.slow
def test_demo_on_a_chain(anvil: Anvil) -> None:
    """`--ledger evm --rpc URL`: the hospitals anchor their own logs on a real Anvil, and the
    regulator verifies each log against the anchors it reads from the chain. Every step runs
    here, federated training too (its delivery receipts go to the hospitals' anchored logs)."""
    keys = ",".join(anvil.funded_key() for _ in range(4))
    text = run_demo("--ledger", "evm", "--rpc", anvil.url, timeout=400,
                    env={"TRUSTSPACE_DEMO_EVM_KEYS": keys, demo.SKIP_ENV: ""})
    assert_every_proof(text)
    for evidence in FEDERATED_EVIDENCE:
        assert evidence in text
    assert "anchored on the chain at 0x" in text
    assert "against its anchors on the chain" in text


def test_demo_fails_when_a_check_fails(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> str:  # fault injection: a check that fails
        raise AssertionError("injected failure")

    monkeypatch.setattr(demo, "STEPS", [*demo.CRYPTO_STEPS[:1], ("injected", broken)])
    assert demo.run(with_dataspace=False, skip=()) is False
    out = capsys.readouterr().out
    assert "✗ injected" in out and "1 of 2 checks passed" in out


def test_a_skipped_step_is_reported_and_a_misspelt_one_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.run(with_dataspace=False, skip=["speed"]) is True
    out = capsys.readouterr().out
    assert "– speed: skipped (TRUSTSPACE_DEMO_SKIP)" in out and "✓ speed" not in out
    assert f"{len(demo.CRYPTO_STEPS) - 1} of {len(demo.CRYPTO_STEPS) - 1} checks passed, " \
           "1 skipped (speed)" in out
    assert demo.run(with_dataspace=False, skip=["federated trianing"]) is False
    out = capsys.readouterr().out
    assert "no step named federated trianing" in out and "checks passed" not in out

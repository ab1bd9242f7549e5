"""The README's main job: `trustspace demo` runs every check and exits 0 only if all passed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.anvil import Anvil
from trustspace.connector import demo, demo_story

pytest_plugins = ["tests.evm_fixtures"]


@pytest.mark.slow
def test_demo_runs_and_reports_each_proof() -> None:
    out = subprocess.run([sys.executable, "-m", "trustspace", "demo"], capture_output=True,
                         check=False, timeout=300)
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    total = len(demo.CRYPTO_STEPS) + len(demo_story.STEPS)
    assert f"{total} of {total} checks passed" in text
    assert "✗" not in text and text.count("✓") == total
    for evidence in ("registered by the authority", "verified against the trust anchor",
                     "401 revoked", "audit summary", "signed by provider and consumer",
                     "inclusion proof to a signed checkpoint", "audit OK", ", final",
                     "bubblewrap sandbox", "release-refused", "equal to NumPy",
                     "after hospital-b's operator approved", "400 offer-mismatch",
                     "under CKKS", "policy-denied"):
        assert evidence in text


@pytest.mark.slow
def test_demo_on_a_chain(anvil: Anvil) -> None:
    """`--ledger evm --rpc URL`: the hospitals anchor their own logs on a real Anvil, and the
    regulator verifies each log against the anchors it reads from the chain."""
    keys = ",".join(anvil.funded_key() for _ in range(4))
    out = subprocess.run([sys.executable, "-m", "trustspace", "demo", "--ledger", "evm",
                          "--rpc", anvil.url], capture_output=True, check=False, timeout=400,
                         env={**os.environ, "TRUSTSPACE_DEMO_EVM_KEYS": keys})
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    assert "anchored on the chain at 0x" in text
    assert "against its anchors on the chain" in text


def test_demo_fails_when_a_check_fails(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> str:  # fault injection: a check that fails
        raise AssertionError("injected failure")

    monkeypatch.setattr(demo, "STEPS", [*demo.CRYPTO_STEPS[:1], ("injected", broken)])
    assert demo.run(with_dataspace=False) is False
    out = capsys.readouterr().out
    assert "✗ injected" in out and "1 of 2 checks passed" in out

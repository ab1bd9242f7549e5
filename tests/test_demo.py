"""The README's main job: `trustspace demo` runs every check and exits 0 only if all passed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trustspace.connector import demo


def test_demo_runs_and_reports_each_proof() -> None:
    out = subprocess.run([sys.executable, "-m", "trustspace", "demo"], capture_output=True,
                         check=False, timeout=120)
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    assert f"{len(demo.STEPS)} of {len(demo.STEPS)} checks passed" in text
    assert "✗" not in text and text.count("✓") == len(demo.STEPS)


def test_demo_fails_when_a_check_fails(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> str:  # fault injection: a check that fails
        raise AssertionError("injected failure")

    monkeypatch.setattr(demo, "STEPS", [*demo.STEPS[:1], ("injected", broken)])
    assert demo.run() is False
    assert "✗ injected" in capsys.readouterr().out

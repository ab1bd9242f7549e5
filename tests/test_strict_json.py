"""strict_json: what an untrusted party's JSON may not do, and the crash it must not cause."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trustspace.strict_json import JSONRefused, loads, nesting_depth


@pytest.mark.parametrize("raw, match", [
    (b"{", "Expecting"),
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b"[NaN]", "NaN is not a JSON number"),
    (b"[-Infinity]", "-Infinity is not a JSON number"),
    (b"\xff", "utf-8"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
])
def test_refuses(raw: bytes, match: str) -> None:
    with pytest.raises(JSONRefused, match=match):
        loads(raw)


def test_depth_ignores_brackets_in_strings() -> None:
    text = b'[{"a": "[[[[{{{{", "b": ["\\"]]]]"]}]'
    assert nesting_depth(text) == 3
    assert loads(text, max_depth=3) == [{"a": "[[[[{{{{", "b": ['"]]]]']}]
    with pytest.raises(JSONRefused):
        loads(text, max_depth=2)


def test_deep_nesting_under_a_raised_recursion_limit_does_not_kill_the_process() -> None:
    # The bug this module exists for: with the limit at 100 000 (py_ecc sets it), json.loads of
    # 100 000 "[" overflows the C stack. Run in a child so that a regression is a failed
    # assertion, not a dead test session.
    code = ("import sys; sys.setrecursionlimit(100_000)\n"
            "from trustspace.strict_json import loads, JSONRefused\n"
            "try:\n    loads(b'[' * 100_000 + b']' * 100_000)\n"
            "except JSONRefused as e:\n    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: nested deeper than 64 levels" in done.stdout


def test_the_evm_ledger_does_not_leave_the_recursion_limit_raised() -> None:
    code = "import trustspace.ledger.evm, sys; print(sys.getrecursionlimit())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) <= 1000

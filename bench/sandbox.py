"""Benchmark the sandbox's overhead per job: a job that does nothing, run by `BubblewrapSandbox`,
against a plain `python -c pass` subprocess, in the same run.

Run from the repository root (as root, like the node that runs jobs)::

    .venv/bin/python bench/sandbox.py            # N = 50 of each, a few seconds
    .venv/bin/python bench/sandbox.py -n 200 --json out.json
    .venv/bin/python bench/sandbox.py --quick    # N = 10, smoke test

What is timed, per round, in a shuffled order (so drift in the machine's speed hits every mode
alike), each from just before the process starts to just after it has been reaped:

- ``python -c pass``: the venv's interpreter, as a consumer would run the script at home (the
  issue's baseline; it imports `site`, which processes the venv's .pth files);
- ``python -I -S -c pass``: the same interpreter started as the sandbox starts it, for scale;
- ``bwrap true``: bubblewrap alone (all namespaces, a read-only /usr) running /usr/bin/true;
- ``sandbox``: `BubblewrapSandbox().run()` of a one-line ``pass`` job, everything included:
  writing the job's lib folder and parameters, the seccomp program and the uid mapping, the
  sandbox's mounts, the boot script (limits, dropping to uid 65534), running the job, streaming
  and unpacking /work/out. Removing the work folder afterwards is not timed.

The verdict: the sandbox's p50 minus ``python -c pass``'s p50, against the 20 ms target. The
sandbox starts Python with ``-I -S`` (no `site`: the job's packages are put on sys.path by the
boot script), which alone is faster than ``python -c pass``; the report therefore also gives the
sandbox's p50 minus ``python -I -S -c pass``'s, the cost of the isolation itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import cpu_model, percentile, progress

from trustspace.sandbox import BubblewrapSandbox, Outcome, SandboxJob

TARGET_MS = 20.0


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="runs of each mode (default 50)")
    parser.add_argument("--quick", action="store_true", help="n = 10")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    n = 10 if args.quick else args.n

    sandbox = BubblewrapSandbox()
    root = Path(tempfile.mkdtemp(prefix="ts-bench-sandbox-"))
    code = root / "code"
    code.mkdir()
    (code / "main.py").write_text("pass\n")
    counter = iter(range(10**9))

    def run_sandbox() -> None:
        workdir = root / f"w{next(counter)}"
        result = sandbox.run(SandboxJob(code, "main.py"), workdir)
        if result.outcome is not Outcome.OK:
            raise SystemExit(f"the empty job failed: {result.reason}\n{result.stderr!r}")

    bwrap = shutil.which("bwrap") or "bwrap"
    isolated = os.path.realpath(sys.executable)

    def spawn(cmd: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)

    modes: dict[str, Callable[[], None]] = {
        "python -c pass": spawn([sys.executable, "-c", "pass"]),
        "python -I -S -c pass": spawn([isolated, "-I", "-S", "-c", "pass"]),
        "bwrap true": spawn([bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                             "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                             "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                             "--proc", "/proc", "--dev", "/dev", "/usr/bin/true"]),
        "sandbox": run_sandbox,
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    try:
        for action in modes.values():  # warm-up: page cache, imports
            action()
        progress(f"measuring {n} runs of each mode ...")
        for _ in range(n):
            order = list(modes)
            random.shuffle(order)
            for name in order:
                samples[name].append(timed(modes[name]))
            for workdir in root.glob("w*"):
                shutil.rmtree(workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        values.sort()
        rows[name] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                      "mean": statistics.fmean(values), "min": values[0]}
    overhead = rows["sandbox"]["p50"] - rows["python -c pass"]["p50"]
    overhead_p99 = rows["sandbox"]["p99"] - rows["python -c pass"]["p99"]
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
        "bwrap": subprocess.run([bwrap, "--version"], capture_output=True, text=True,
                                check=False).stdout.strip(),
        "kernel": platform.release(), "n": n,
    }
    lines = [f"trustspace sandbox benchmark, {meta['date']}", ""]
    lines += [f"  {k}: {v}" for k, v in meta.items() if k != "date"]
    lines += ["", f"{'mode':<24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'min ms':>10}",
              "-" * 64]
    for name, row in rows.items():
        lines.append(f"{name:<24}{row['p50']:>10.1f}{row['p99']:>10.1f}{row['mean']:>10.1f}"
                     f"{row['min']:>10.1f}")
    verdict = "PASS" if overhead < TARGET_MS else "ABOVE TARGET"
    isolation = rows["sandbox"]["p50"] - rows["python -I -S -c pass"]["p50"]
    lines += ["", f"sandbox overhead over `python -c pass`: {overhead:+.1f} ms p50, "
                  f"{overhead_p99:+.1f} ms p99 (target: < {TARGET_MS:g} ms p50) {verdict}",
              f"sandbox over `python -I -S -c pass` (the same interpreter start-up, so the cost "
              f"of the isolation itself): {isolation:+.1f} ms p50"]
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "modes": rows, "samples_ms": samples,
                                         "overhead_p50_ms": overhead,
                                         "overhead_p99_ms": overhead_p99,
                                         "isolation_p50_ms": isolation,
                                         "target_ms": TARGET_MS, "verdict": verdict},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

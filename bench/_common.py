"""Small pieces the benches share (run as scripts: `bench/` is on sys.path)."""

from __future__ import annotations

import contextlib
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

"""A tiny init for one Flower process tree: ``python _reaper.py GRACE -- ARGV...``.

Flower's processes start others (a SuperNode starts a `flower-superexec`, which starts a
`flwr-clientapp` per message and does not wait for them) and those outlive their parents when
the tree is stopped; re-parented to a PID 1 that does not reap (a container), they stay
zombies. This process makes itself the child subreaper of the tree (Linux
PR_SET_CHILD_SUBREAPER, prctl(2)), so every orphan in it becomes its child, runs ARGV, and on
SIGTERM (or when ARGV ends, or when its own parent dies) passes SIGTERM to ARGV, waits GRACE
seconds, then SIGKILLs and reaps every process left in the tree. It exits with ARGV's status.
Standard library only: it must start fast and import nothing of trustspace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


def _children() -> list[int]:
    """Pids whose parent is this process (orphans of the tree included, once re-parented)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def _reap() -> dict[int, int]:
    done: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def main(argv: list[str]) -> int:
    grace, command = float(argv[0]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # The spawner names itself: read here, getppid() may already be its successor.
    parent = int(os.environ.get("TS_REAPER_PARENT") or os.getppid())
    main_pid = os.spawnvp(os.P_NOWAIT, command[0], command)  # noqa: S606
    status: int | None = None
    # Also stop when whoever started us is gone (a node killed without its `finally`): its
    # Flower processes must not outlive it, polling a SuperLink for ever.
    while not stop and status is None and os.getppid() == parent:
        status = _reap().get(main_pid, status)
        time.sleep(0.1)
    if status is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(main_pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while status is None and time.monotonic() < deadline:
            status = _reap().get(main_pid, status)
            time.sleep(0.05)
    while children := _children():  # what is left of the tree, generation by generation
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        status = _reap().get(main_pid, status)
    status = _reap().get(main_pid, status)
    if status is None:
        return 1
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as shells say


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

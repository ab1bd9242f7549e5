"""Delivers the negotiation outbox: a message a transaction just wrote goes out at once
(`send_now`, without looking for it in the database), others are found by a scan that retries
with backoff while the peer is unreachable and resumes after a restart. Messages of one
negotiation go out in order; different negotiations go out concurrently."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from trustspace.contracts import negotiation as engine
from trustspace.contracts.states import State
from trustspace.contracts.tables import Negotiation, OutboxMessage
from trustspace.crypto import canonical_json

from .client import close_shared_client, shared_client
from .node import Node

log = logging.getLogger("trustspace.outbox")


class OutboxSender:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: dict[str, asyncio.Task[None]] = {}  # pid -> its delivery in flight
        self._again: set[str] = set()  # busy pids that had more due when last scanned
        # Rows committed while their negotiation's delivery was in flight: that delivery sends
        # them next (the peer's answer often arrives before we have marked ours sent).
        self._queued: dict[str, list[OutboxMessage]] = {}
        # What `send_now` must know to keep each negotiation's messages in order without
        # reading the database: whether the first scan (a previous run's leftovers) has run,
        # and the pids that may have an earlier message still unsent (seen pending by the last
        # scan, or failed since). Their new messages wait for a scan instead.
        self._scanned = False
        self._stopped = False
        self._held: set[str] = set()
        # Rows whose delivery ended while a scan was reading (row id -> pid, None if it was
        # sent): the scan may have read them as still due; it must not send them again.
        self._ended: dict[int, str | None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wake.set()  # deliver whatever a previous run left

    async def stop(self) -> None:
        self._stopped = True
        for task in list(self._busy.values()):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await close_shared_client(self.node)  # the app stops the outbox last among its users

    def kick(self) -> None:
        """Scan for due messages (ones written elsewhere, or whose order needs the database)."""
        self._wake.set()

    def send_now(self, rows: Sequence[OutboxMessage]) -> None:
        """Deliver rows a transaction has just committed, without scanning for them: the common
        case costs no database read. A row whose negotiation is being delivered goes out next
        in that delivery; one whose negotiation may have an earlier message unsent waits for a
        scan. Either way the order holds."""
        if self._stopped:
            return  # shutting down: the next run's first scan sends them
        for row in rows:
            if row.pid in self._busy:
                self._queued.setdefault(row.pid, []).append(row)
            elif not self._scanned or row.pid in self._held:
                self.kick()
            else:
                self._busy[row.pid] = asyncio.create_task(self._deliver_pid(row.pid, [row]))

    def _http(self) -> httpx.AsyncClient:
        return shared_client(self.node)

    async def _run(self) -> None:
        while True:
            try:
                delay = await self._deliver_due()
            except Exception:  # the sender must survive anything one message does
                log.exception("outbox delivery failed")
                delay = 1.0
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    def _due(self) -> tuple[dict[str, list[OutboxMessage]], set[str], float]:
        now = self.node.clock()
        with self.node.db.read() as session:
            rows = session.scalars(select(OutboxMessage).where(
                OutboxMessage.sent_at.is_(None), OutboxMessage.failed.is_(False))
                .order_by(OutboxMessage.id)).all()
        by_pid: dict[str, list[OutboxMessage]] = {}
        wait = 30.0
        for row in rows:
            if row.next_attempt_at <= now:
                by_pid.setdefault(row.pid, []).append(row)
            else:
                wait = min(wait, (row.next_attempt_at - now).total_seconds())
            # a later message of a negotiation waits for the earlier ones
        for pid in list(by_pid):
            first_pending = min(r.id for r in rows if r.pid == pid)
            if by_pid[pid][0].id != first_pending:
                del by_pid[pid]
        return by_pid, {row.pid for row in rows}, max(wait, 0.01)

    async def _deliver_due(self) -> float:
        ended: dict[int, str | None] = {}
        self._ended = ended
        try:
            by_pid, pending, wait = await run_in_threadpool(self._due)
        finally:
            self._ended = None
        # A pid being delivered is not held for what the scan saw of it: its delivery sends
        # what was queued behind it and holds the pid itself if it fails (and a scan per
        # message would follow, each holding the pids then in flight).
        self._held = {pid for pid in pending if pid not in self._busy} | {
            pid for pid in ended.values() if pid is not None}
        self._scanned = True
        for pid, rows in by_pid.items():
            rows = [row for row in rows if row.id not in ended]
            if not rows:
                continue
            if pid in self._busy:  # its earlier message is still going out
                self._again.add(pid)
            else:
                self._busy[pid] = asyncio.create_task(self._deliver_pid(pid, rows))
        return wait

    async def _deliver_pid(self, pid: str, rows: list[OutboxMessage]) -> None:
        try:
            while rows and await self._deliver_in_order(rows):
                rows = self._queued.pop(pid, [])
        except Exception:
            self._held.add(pid)  # a message may be left unsent: keep the order through scans
            log.exception("outbox delivery failed")
        finally:
            del self._busy[pid]
            if self._queued.pop(pid, None) is not None:
                self._held.add(pid)  # stopped early: scans send the rest, after the retry
            if pid in self._again:  # a scan saw more of it due: that goes before anything new
                self._again.discard(pid)
                self._held.add(pid)
                self.kick()

    async def _deliver_in_order(self, rows: list[OutboxMessage]) -> bool:
        """Send `rows` (of one negotiation) in order; False at the first one not taken."""
        for row in rows:
            sent = await self._deliver(row)
            if self._ended is not None:
                self._ended[row.id] = None if sent else row.pid
            if not sent:
                self._held.add(row.pid)  # its retry must go before any later message
                return False
        return True

    async def _deliver(self, row: OutboxMessage) -> bool:
        content = canonical_json(row.message)
        try:
            response = await self._http().post(
                row.url, content=content, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            await run_in_threadpool(self._retry_later, row.id, f"{type(exc).__name__}: {exc}")
            return False
        if response.status_code >= 500:
            await run_in_threadpool(self._retry_later, row.id,
                                    f"{response.status_code} {response.text[:200]}")
            return False
        answer: Any = None
        with suppress(ValueError):
            answer = json.loads(response.content) if response.content else None
        if response.status_code < 400:
            await run_in_threadpool(self._sent, row, answer)
            return True
        await run_in_threadpool(self._settle, row.id, response.status_code, answer)
        return response.status_code < 400

    def _sent(self, row: OutboxMessage, answer: Any) -> None:
        """Mark a delivered message sent, in one UPDATE; learn the peer's pid from the answer
        to the first message (the one that does not carry it yet)."""
        now = self.node.clock()
        with self.node.db.transaction() as session:
            session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(
                attempts=OutboxMessage.attempts + 1, sent_at=now))
            if not isinstance(answer, dict):
                return
            for role, column, key in (("consumer", Negotiation.provider_pid, "providerPid"),
                                      ("provider", Negotiation.consumer_pid, "consumerPid")):
                value = answer.get(key)
                if isinstance(value, str) and not row.message.get(key):
                    session.execute(update(Negotiation).where(
                        Negotiation.pid == row.pid, Negotiation.role == role,
                        column.is_(None)).values({column: value}))

    def _retry_later(self, row_id: int, error: str) -> None:
        now = self.node.clock()
        with self.node.db.transaction() as session:
            row = session.get(OutboxMessage, row_id)
            if row is None:
                return
            row.attempts += 1
            row.last_error = error
            row.next_attempt_at = engine.next_attempt(row.attempts, now)

    def _settle(self, row_id: int, status: int, answer: Any) -> None:
        """Mark a delivered message; learn the peer's pid from its first answer; a refusal
        ends the negotiation here too (the peer will not move on)."""
        now = self.node.clock()
        with self.node.db.transaction() as session:
            row = session.get(OutboxMessage, row_id)
            if row is None:
                return
            row.attempts += 1
            neg = session.get(Negotiation, row.pid, with_for_update=True)
            if status < 400:
                row.sent_at = now
                if neg is not None and isinstance(answer, dict):
                    if neg.role == "consumer" and not neg.provider_pid:
                        neg.provider_pid = answer.get("providerPid")
                    if neg.role == "provider" and not neg.consumer_pid:
                        neg.consumer_pid = answer.get("consumerPid")
                return
            row.failed = True
            row.last_error = f"{status} {json.dumps(answer)[:300]}"
            if neg is not None and not State(neg.state).terminal:
                neg.state = State.TERMINATED.value
                neg.termination = {"by": neg.counterparty_id, "code": "refused",
                                   "reason": [row.last_error]}
                neg.updated_at = now

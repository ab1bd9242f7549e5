"""Delivers the negotiation outbox: woken at once after a transaction wrote a message, retrying
with backoff while the peer is unreachable, resuming after a restart. Messages of one
negotiation go out in order; different negotiations go out concurrently."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from trustspace.contracts import negotiation as engine
from trustspace.contracts.states import State
from trustspace.contracts.tables import Negotiation, OutboxMessage
from trustspace.crypto import canonical_json

from .client import signed_client
from .node import MEMBERSHIP_STATE, Node

log = logging.getLogger("trustspace.outbox")


class OutboxSender:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._member: Any = None
        self._closing: asyncio.Task[None] | None = None
        self._busy: dict[str, asyncio.Task[None]] = {}  # pid -> its delivery in flight
        self._again: set[str] = set()  # busy pids that had more due when last scanned

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wake.set()  # deliver whatever a previous run left

    async def stop(self) -> None:
        for task in list(self._busy.values()):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def kick(self) -> None:
        self._wake.set()

    def _http(self) -> httpx.AsyncClient:
        membership = self.node.membership()  # cached by the node, reset when it changes
        if self._client is not None and membership is self._member:
            return self._client
        self._member = membership
        if self._client is not None:  # the credential changed: let the old client go
            self._closing = asyncio.create_task(self._client.aclose())
        self._client = signed_client(self.node, self.node.state(MEMBERSHIP_STATE))
        return self._client

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

    def _due(self) -> tuple[dict[str, list[OutboxMessage]], float]:
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
        return by_pid, max(wait, 0.01)

    async def _deliver_due(self) -> float:
        by_pid, wait = await run_in_threadpool(self._due)
        for pid, rows in by_pid.items():
            if pid in self._busy:  # its earlier message is still going out
                self._again.add(pid)
            else:
                self._busy[pid] = asyncio.create_task(self._deliver_pid(pid, rows))
        return wait

    async def _deliver_pid(self, pid: str, rows: list[OutboxMessage]) -> None:
        try:
            await self._deliver_in_order(rows)
        except Exception:
            log.exception("outbox delivery failed")
        finally:
            del self._busy[pid]
            if pid in self._again:
                self._again.discard(pid)
                self.kick()

    async def _deliver_in_order(self, rows: list[OutboxMessage]) -> None:
        for row in rows:
            if not await self._deliver(row):
                return

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

"""The negotiation outbox sender, in process, against a minimal HTTP peer on loopback: a message
handed over by `send_now` goes out without a scan, yet never before an earlier message of the
same negotiation (one waiting for a retry because the peer was down, or one a previous run left
unsent)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodes import PostgresDatabases, free_port
from trustspace.connector.home import init_home
from trustspace.connector.node import Node
from trustspace.connector.outbox import OutboxSender
from trustspace.contracts.tables import OutboxMessage


@pytest.fixture(params=["sqlite", "postgresql"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    pg = PostgresDatabases() if request.param == "postgresql" else None
    settings, _ = init_home(tmp_path / "node", name="n", public_url="http://127.0.0.1:1",
                            port=1, authority=True, database_url=pg.create() if pg else "")
    node = Node(settings)
    node.db.migrate()
    try:
        yield node
    finally:
        node.db.dispose()
        if pg:
            pg.drop_all()


class Peer:
    """Takes every POST with 200 and records the JSON bodies in arrival order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[object] = []
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:  # a keep-alive connection would hold wait_closed
                writer.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.received.append(json.loads(await reader.readexactly(length)))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def write(node: Node, pid: str, url: str, n: int) -> OutboxMessage:
    with node.db.transaction() as session:
        row = OutboxMessage(pid=pid, url=url, message={"n": n}, attempts=0,
                            next_attempt_at=node.clock(), failed=False, created_at=node.clock())
        session.add(row)
    return row


def row(node: Node, row_id: int) -> OutboxMessage:
    with node.db.read() as session:
        found = session.get(OutboxMessage, row_id)
        assert found is not None
        return found


async def until(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_new_message_waits_for_an_earlier_one_being_retried(node: Node) -> None:
    async def scenario() -> list[object]:
        peer = Peer(free_port())
        url = f"http://127.0.0.1:{peer.port}/m"
        sender = OutboxSender(node)
        sender.start()
        await until(lambda: sender._scanned)
        first = write(node, "urn:uuid:p", url, 1)
        sender.send_now([first])  # the peer is not listening yet: retried with backoff
        await until(lambda: row(node, first.id).attempts >= 1)
        second = write(node, "urn:uuid:p", url, 2)
        sender.send_now([second])  # must not overtake the first
        await peer.start()
        await until(lambda: row(node, second.id).sent_at is not None)
        assert row(node, first.id).sent_at is not None
        await sender.stop()
        await peer.stop()
        return peer.received

    assert asyncio.run(scenario()) == [{"n": 1}, {"n": 2}]


def test_leftovers_of_a_previous_run_go_first(node: Node) -> None:
    async def scenario() -> list[object]:
        peer = Peer(free_port())
        await peer.start()
        url = f"http://127.0.0.1:{peer.port}/m"
        left = write(node, "urn:uuid:p", url, 1)  # written before this sender started
        sender = OutboxSender(node)
        sender.start()
        sender.send_now([write(node, "urn:uuid:p", url, 2)])  # before the first scan ran
        await until(lambda: len(peer.received) == 2)
        assert row(node, left.id).sent_at is not None
        await sender.stop()
        await peer.stop()
        return peer.received

    assert asyncio.run(scenario()) == [{"n": 1}, {"n": 2}]


def test_a_message_handed_over_is_sent_without_a_scan(node: Node) -> None:
    async def scenario() -> None:
        peer = Peer(free_port())
        await peer.start()
        url = f"http://127.0.0.1:{peer.port}/m"
        sender = OutboxSender(node)
        scans = 0
        scan = sender._due

        def counted() -> tuple[dict[str, list[OutboxMessage]], set[str], float]:
            nonlocal scans
            scans += 1
            return scan()

        sender._due = counted  # type: ignore[method-assign]
        sender.start()
        await until(lambda: sender._scanned)
        before = scans
        sent = [write(node, f"urn:uuid:{n}", url, n) for n in range(3)]
        sender.send_now(sent)
        await until(lambda: all(row(node, r.id).sent_at is not None for r in sent))
        assert scans == before
        assert sorted(json.dumps(m) for m in peer.received) == [
            json.dumps({"n": n}) for n in range(3)]
        await sender.stop()
        await peer.stop()

    asyncio.run(scenario())

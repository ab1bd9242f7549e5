"""Benchmark end-to-end contract negotiation between two real nodes on loopback: negotiations per
second and latency, one at a time and 16 at once, on SQLite and on PostgreSQL, with the time the
nodes spend in SM2 and in the database beside the figures.

Run from the repository root::

    .venv/bin/python bench/negotiation.py                  # about 2 minutes
    .venv/bin/python bench/negotiation.py --quick          # smoke test, about 30 s
    .venv/bin/python bench/negotiation.py --json out.json  # the results as JSON too
    .venv/bin/python bench/negotiation.py --backend sqlite # one database only

What runs, per database (SQLite in each node's home; PostgreSQL on 127.0.0.1:5432, a fresh
database per node, dropped afterwards, as tests/nodes.py makes them):

- A data space built with `trustspace.connector.localspace.local_dataspace` (through
  `tests.nodes.dataspace`): an authority, the provider "tax-bureau" publishing one product
  (`tests.nodes.product_spec`, whose default offer `research_offer` is accepted automatically)
  and the consumer "bank", both enrolled.
- Both members' `trustspace serve` processes are then replaced by *bench servers*: this script
  with `--serve HOME`, a separate process each that builds the app exactly as `serve` does
  (`create_app(Settings.load(home))`, uvicorn with serve's options) on the node's home, database
  and port, with TRUSTSPACE_REVOCATION_TTL_SECONDS=30 (the node's default; localspace uses 0,
  which would fetch the revocation list from the authority on every signed request). They add,
  by replacing module and class attributes before the app is built (nothing in trustspace/
  changes):
  - timers (wall and thread CPU time) around `SM2PrivateKey.sign` and `SM2PublicKey.verify`
    (every SM2 operation of the node: request signatures, agreement signatures, credentials),
    around the database driver (SQLAlchemy `before/after_cursor_execute`, and the dialect's
    commit, rollback and ping), and around a few named steps (RFC 9421 signing and checking,
    the outbox's scan, settle and delivery, `NodeClient` construction, revocation refresh);
  - a count and the wall time of every request served, by route;
  - `GET /bench/stats` (the counters, the process's CPU time and its event loop thread's);
  - `GET /bench/finalized`: a stream with one line per negotiation this node has just
    FINALIZED (or seen terminated): its pid and the time the FINALIZED message's transaction
    had committed (the node's answer to the provider's FINALIZED event starts after the commit).
- This process drives the consumer's management API like an operator: each worker is one
  keep-alive HTTP/1.1 connection (raw asyncio streams) sending `POST /api/negotiations`
  (operator token; the provider's URL and the dataset, offer chosen by the node) and waiting
  until that negotiation is FINALIZED, then starting the next (a closed loop). Sequential is
  one worker, concurrent is 16.
- A negotiation is timed from just before its POST is written to the commit of FINALIZED in
  the consumer's database, taken from the stream above. Nothing polls: the stream costs the
  consumer one write per negotiation on a connection opened once. The POST itself first reads
  the provider's dataset (one signed `GET /catalog/datasets/{id}`) and then starts the
  negotiation; that is the real flow and is included. The protocol part alone runs from the
  negotiation's `created_at` in the consumer's database to the same commit.
- After each measurement the consumer's database is read: every negotiation started must be
  FINALIZED there (and at the provider), with `updated_at` no later than the reported commit.
  Anything else counts as failed, as do refused POSTs and negotiations that do not finish
  within 20 s.
- Each measurement is a warm-up (uncounted) and then a window. Throughput counts the
  negotiations that FINALIZED inside the window; latencies are over the negotiations started in
  the window (the workers stop starting at its end and let those in flight finish); the
  per-negotiation costs are the servers' counters over the window divided by the negotiations
  finished in it.
- Nothing is pinned: both nodes, the authority, PostgreSQL and this process share the
  machine's CPUs, as two nodes of one data space would on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import cpu_model, percentile, progress

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
CONCURRENCY = (1, 16)
REVOCATION_TTL = 30  # seconds: TRUSTSPACE_REVOCATION_TTL_SECONDS of the measured nodes
DATASET = "bp-stats"  # tests.nodes.product_spec's product, with its automatic research offer
TARGET_P50_MS = 50.0  # sequential p50, automatic acceptance
TARGET_RATE = 100.0  # finished negotiations per second ...
TARGET_RATE_CONCURRENCY = 16  # ... with this many at once
GIVE_UP_SECONDS = 20.0  # a negotiation not FINALIZED by then counts as failed
OTHER_LOAD = 0.25  # warn when something else used more than this many CPUs' worth
STATS_PATH = "/bench/stats"
FINALIZED_PATH = "/bench/finalized"
# Timers whose thread CPU time is the database driver's work (SQLAlchemy events, the dialect).
DB_TIMERS = ("db_execute", "db_commit", "db_rollback", "db_ping")
SM2_TIMERS = ("sm2_sign", "sm2_verify")


@dataclass(frozen=True)
class Timing:
    warmup: float  # seconds of uncounted load before each window
    window: float  # seconds of counted load per measurement


DEFAULT = Timing(warmup=2.0, window=20.0)
QUICK = Timing(warmup=0.5, window=2.5)


# ==== the bench server (a separate process: this script with --serve) ===========================

class _Meter:
    """Cumulative timers and request counters of one bench server, and the listeners of the
    finalized stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.timers: dict[str, list[float]] = {}  # name -> [count, wall s, thread cpu s]
        self.requests: dict[str, list[float]] = {}  # "METHOD route status" -> [count, wall s]
        self.listeners: list[asyncio.Queue[bytes]] = []
        self.announced: set[str] = set()

    def add(self, name: str, wall: float, cpu: float) -> None:
        with self._lock:
            entry = self.timers.setdefault(name, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += wall
            entry[2] += cpu

    def request(self, route: str, wall: float) -> None:
        with self._lock:
            entry = self.requests.setdefault(route, [0, 0.0])
            entry[0] += 1
            entry[1] += wall

    def announce(self, pid: str, at: float, state: str) -> None:
        """Called on the event loop thread, like the queues' readers."""
        if pid in self.announced:
            return
        self.announced.add(pid)
        line = f"{pid} {at:.6f} {state}\n".encode()
        for queue in self.listeners:
            queue.put_nowait(line)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "timers": {k: {"count": v[0], "wall": v[1], "cpu": v[2]}
                           for k, v in self.timers.items()},
                "requests": {k: {"count": v[0], "wall": v[1]} for k, v in self.requests.items()},
                "process_cpu": time.process_time(),
                "loop_cpu": time.thread_time(),  # the caller runs on the event loop thread
                "monotonic": time.perf_counter(),
                "threads": threading.active_count(),
            }


METER = _Meter()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (synchronous) with its wall and thread CPU time added to METER under `name`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            METER.add(name, time.perf_counter() - wall, time.thread_time() - cpu)

    return wrapper


def _timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (a coroutine function) with its wall time added to METER under `name`."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            METER.add(name, time.perf_counter() - start, 0.0)

    return wrapper


_PID = re.compile(r"/urn:[^/]+")


def _route(method: str, path: str) -> str:
    """A request's path with the negotiation ids and dataset ids taken out."""
    path = _PID.sub("/{pid}", path)
    if path.startswith("/catalog/datasets/"):
        path = "/catalog/datasets/{id}"
    return f"{method} {path}"


class _RequestMeter:
    """ASGI wrapper: wall time of every request, by route (bench routes excluded); announces a
    negotiation when this node acknowledges the FINALIZED event (after its transaction
    committed) or a termination."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/bench/"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        watch = scope["method"] == "POST" and path.startswith("/negotiations/urn:") and (
            path.endswith("/events") or path.endswith("/termination"))
        status, answered, body = 0, 0.0, b""

        async def metered_send(message: Any) -> None:
            nonlocal status, answered, body
            if message["type"] == "http.response.start":
                status, answered = message["status"], time.time()
            elif watch and message["type"] == "http.response.body":
                body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, metered_send)
        finally:
            METER.request(f"{_route(scope['method'], path)} {status}",
                          time.perf_counter() - start)
        if watch and status == 200:
            pid = path.split("/")[2]
            if path.endswith("/termination"):
                METER.announce(pid, answered, "TERMINATED")
            elif b'"FINALIZED"' in body:
                METER.announce(pid, answered, "FINALIZED")


def _instrument() -> None:
    """Timers around SM2, the database driver and the named steps of the negotiation flow."""
    from sqlalchemy import Engine, event

    from trustspace import db
    from trustspace.connector import auth, client, httpsig, node, outbox
    from trustspace.crypto import SM2PrivateKey, SM2PublicKey

    SM2PrivateKey.sign = _timed("sm2_sign", SM2PrivateKey.sign)  # type: ignore[method-assign]
    SM2PublicKey.verify = _timed("sm2_verify", SM2PublicKey.verify)  # type: ignore
    httpsig.sign_request = _timed("http_sign", httpsig.sign_request)
    auth.verify_request = _timed("http_verify", auth.verify_request)  # type: ignore[attr-defined]
    auth._credential = _timed("credential", auth._credential)
    client.NodeClient.__init__ = _timed(  # type: ignore[method-assign]
        "node_client_init", client.NodeClient.__init__)
    sender = outbox.OutboxSender
    sender._due = _timed("outbox_scan", sender._due)  # type: ignore[method-assign]
    sender._settle = _timed("outbox_settle", sender._settle)  # type: ignore[method-assign]
    sender._http = _timed("outbox_http_client", sender._http)  # type: ignore[method-assign]
    sender._deliver = _timed_async("outbox_deliver", sender._deliver)  # type: ignore
    node.Node.state = _timed("node_state", node.Node.state)  # type: ignore[method-assign]
    refresh = node.RevocationCache.refresh_if_stale
    counted: dict[int, float] = {}

    @functools.wraps(refresh)
    async def timed_refresh(self: Any) -> None:
        fetched, start = self.fetched, time.perf_counter()
        try:
            await refresh(self)
        finally:
            # Requests that waited for another's fetch see the new list too: count it once.
            if self.fetched not in (fetched, counted.get(id(self))):
                counted[id(self)] = self.fetched
                METER.add("revocation_fetch", time.perf_counter() - start, 0.0)

    node.RevocationCache.refresh_if_stale = timed_refresh  # type: ignore[method-assign]

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any,
               _many: Any) -> None:
        conn.info.setdefault("bench_started", []).append(
            (time.perf_counter(), time.thread_time()))

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any,
              _many: Any) -> None:
        wall, cpu = conn.info["bench_started"].pop()
        METER.add("db_execute", time.perf_counter() - wall, time.thread_time() - cpu)

    @event.listens_for(Engine, "connect")
    def count_connect(_dbapi_connection: Any, _record: Any) -> None:
        METER.add("db_connect", 0.0, 0.0)

    make_engine = db.make_engine

    @functools.wraps(make_engine)
    def timed_engine(url: str) -> Engine:
        engine = make_engine(url)
        dialect = engine.dialect  # the pool resets connections through the same object
        for name in ("do_commit", "do_rollback", "do_ping"):
            setattr(dialect, name, _timed(name.replace("do_", "db_"), getattr(dialect, name)))
        return engine

    db.make_engine = timed_engine


def serve(home: Path) -> None:
    """The bench server: the node's app, as `trustspace serve` runs it, plus /bench/*."""
    _instrument()
    import uvicorn
    from fastapi.responses import StreamingResponse

    from trustspace.connector.app import create_app
    from trustspace.connector.config import Settings

    settings = Settings.load(home)
    app = create_app(settings)

    @app.get(STATS_PATH, include_in_schema=False)
    async def stats() -> dict[str, Any]:  # async: runs on (and times) the event loop thread
        return METER.snapshot()

    @app.get(FINALIZED_PATH, include_in_schema=False)
    async def finalized() -> StreamingResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        METER.listeners.append(queue)

        async def lines() -> Any:
            try:
                yield b"ready\n"
                while True:
                    yield await queue.get()
            finally:
                METER.listeners.remove(queue)

        return StreamingResponse(lines(), media_type="text/plain")

    # The options of `trustspace serve` (trustspace/connector/cli_node.py).
    uvicorn.run(_RequestMeter(app), host=settings.host, port=settings.port,
                log_level="warning", server_header=False)


# ==== the load generator =========================================================================

class _Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def head(self, raw: bytes) -> tuple[int, dict[bytes, bytes]]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        return int(lines[0].split(b" ", 2)[1]), headers

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body (b"" at its end)."""
        assert self.reader is not None
        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        status, headers = await self.head(raw)
        assert self.reader is not None
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            body = b""
            while chunk := await self.chunk():
                body += chunk
        elif b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        else:
            raise ValueError("response without Content-Length or chunked encoding")
        if b"close" in headers.get(b"connection", b""):
            await self.close()
        return status, body


def _raw_request(method: str, path: str, netloc: str, headers: dict[str, str],
                 content: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {netloc}",
             *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(content)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


async def _get_json(port: int, path: str) -> Any:
    conn = _Connection("127.0.0.1", port)
    try:
        status, body = await conn.request(_raw_request("GET", path, f"127.0.0.1:{port}", {}))
    finally:
        await conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return json.loads(body)


class _Finished:
    """The consumer's finalized stream, read in the background: pid -> (commit time, state)."""

    def __init__(self, port: int) -> None:
        self.conn = _Connection("127.0.0.1", port)
        self.done: dict[str, tuple[float, str]] = {}
        self.waiting: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        status, _ = await self.conn.head(_raw_request(
            "GET", FINALIZED_PATH, f"127.0.0.1:{self.conn.port}", {}))
        if status != 200 or await self.conn.chunk() != b"ready\n":
            raise RuntimeError("the consumer's bench server does not stream finalized ones")
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        pending = b""
        while chunk := await self.conn.chunk():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                pid, at, state = line.decode().split(" ")
                self.done[pid] = (float(at), state)
                waiter = self.waiting.pop(pid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(self.done[pid])

    async def wait(self, pid: str, timeout: float) -> tuple[float, str] | None:
        if pid in self.done:
            return self.done[pid]
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[pid] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self.waiting.pop(pid, None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.conn.close()


@dataclass
class _Negotiation:
    posted: float  # time.time() just before the POST was written
    acked: float = math.nan  # the POST's answer read
    pid: str = ""
    finished: float = math.nan  # the consumer's FINALIZED commit (its own clock: this machine's)
    state: str = ""  # FINALIZED, TERMINATED, "" (gave up) or "POST <status> <reason>"


async def _worker(port: int, start_body: bytes, finished: _Finished, stop: asyncio.Event,
                  out: list[_Negotiation]) -> None:
    conn = _Connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            neg = _Negotiation(posted=time.time())
            out.append(neg)
            try:
                status, body = await conn.request(start_body)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                neg.state = f"POST {type(exc).__name__}"
                await conn.close()
                continue
            neg.acked = time.time()
            if status != 201:
                neg.state = f"POST {status} {body[:80].decode('latin-1')}"
                continue
            neg.pid = json.loads(body)["pid"]
            done = await finished.wait(neg.pid, GIVE_UP_SECONDS)
            if done is not None:
                neg.finished, neg.state = done
    finally:
        await conn.close()


def _machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (/proc/stat), NaN where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    timers = {}
    for name, a in after["timers"].items():
        b = before["timers"].get(name, {"count": 0, "wall": 0.0, "cpu": 0.0})
        timers[name] = {k: a[k] - b[k] for k in ("count", "wall", "cpu")}
    requests = {}
    for route, a in after["requests"].items():
        b = before["requests"].get(route, {"count": 0, "wall": 0.0})
        if a["count"] - b["count"]:
            requests[route] = {"count": a["count"] - b["count"], "wall": a["wall"] - b["wall"]}
    return {"timers": timers, "requests": requests,
            "process_cpu": after["process_cpu"] - before["process_cpu"],
            "loop_cpu": after["loop_cpu"] - before["loop_cpu"],
            "wall": after["monotonic"] - before["monotonic"]}


@dataclass
class Cell:
    backend: str
    concurrency: int
    finished: int  # negotiations FINALIZED inside the window
    seconds: float  # the window
    rate: float  # finished / seconds
    started: int  # negotiations started inside the window (latencies are over these)
    p50_ms: float
    p99_ms: float
    max_ms: float
    post_p50_ms: float  # POST /api/negotiations answered (dataset GET + start), p50
    protocol_p50_ms: float  # created_at in the consumer's database -> FINALIZED commit, p50
    protocol_p99_ms: float
    commit_after_updated_ms: float  # FINALIZED commit - the row's updated_at, mean
    failed: int  # started in warm-up or window and not FINALIZED at both nodes, or refused
    failure_kinds: dict[str, int]
    cpu: dict[str, float]  # CPUs' worth used during the window: provider, consumer, generator,
    # other (authority, PostgreSQL, kernel, the rest of the machine)
    per_negotiation: dict[str, Any]  # see _per_negotiation
    routes: dict[str, dict[str, dict[str, float]]]  # node -> route -> requests, wall ms, per neg.


def _timer(delta: dict[str, Any], name: str, key: str) -> float:
    return float(delta["timers"].get(name, {}).get(key, 0.0))


def _per_negotiation(nodes: dict[str, dict[str, Any]], n: int, fetches: float
                     ) -> dict[str, Any]:
    """The servers' counters over the window, per negotiation finished in it (ms)."""
    n = n or 1
    out: dict[str, Any] = {}
    total = {"cpu": 0.0, "sm2": 0.0, "db_cpu": 0.0, "db_wall": 0.0, "requests": 0.0}
    for name, d in nodes.items():
        sm2 = sum(_timer(d, t, "cpu") for t in SM2_TIMERS)
        db_cpu = sum(_timer(d, t, "cpu") for t in DB_TIMERS)
        db_wall = sum(_timer(d, t, "wall") for t in DB_TIMERS)
        requests = sum(r["count"] for r in d["requests"].values())
        steps = {t: {"count": v["count"] / n, "wall_ms": v["wall"] / n * 1e3,
                     "cpu_ms": v["cpu"] / n * 1e3} for t, v in d["timers"].items()}
        out[name] = {"cpu_ms": d["process_cpu"] / n * 1e3, "loop_cpu_ms": d["loop_cpu"] / n * 1e3,
                     "sm2_ms": sm2 / n * 1e3, "db_cpu_ms": db_cpu / n * 1e3,
                     "db_wall_ms": db_wall / n * 1e3, "requests": requests / n, "steps": steps}
        total["cpu"] += d["process_cpu"]
        total["sm2"] += sm2
        total["db_cpu"] += db_cpu
        total["db_wall"] += db_wall
        total["requests"] += requests
    signs = sum(_timer(d, "sm2_sign", "count") for d in nodes.values()) / n
    verifies = sum(_timer(d, "sm2_verify", "count") for d in nodes.values()) / n
    statements = sum(_timer(d, "db_execute", "count") for d in nodes.values()) / n
    commits = sum(_timer(d, "db_commit", "count") for d in nodes.values()) / n
    out["both"] = {
        "cpu_ms": total["cpu"] / n * 1e3, "sm2_ms": total["sm2"] / n * 1e3,
        "sm2_signs": signs, "sm2_verifies": verifies,
        "db_cpu_ms": total["db_cpu"] / n * 1e3, "db_wall_ms": total["db_wall"] / n * 1e3,
        "db_statements": statements, "db_commits": commits,
        # every request either node served (the operator's POST included), and the
        # revocation-list fetches from the authority
        "round_trips": total["requests"] / n + fetches / n,
        "revocation_fetches": fetches,
        "rest_ms": (total["cpu"] - total["sm2"] - total["db_cpu"]) / n * 1e3,
    }
    return out


class _Space:
    """The two bench servers of one data space, and how to read the consumer's database."""

    def __init__(self, provider: Any, consumer: Any) -> None:
        self.provider, self.consumer = provider, consumer
        body = json.dumps({"provider_url": provider.url, "dataset": DATASET}).encode()
        self.start_body = _raw_request(
            "POST", "/api/negotiations", f"127.0.0.1:{consumer.port}",
            {"authorization": f"Bearer {consumer.token}", "content-type": "application/json"},
            body)

    async def stats(self) -> dict[str, dict[str, Any]]:
        provider, consumer = await asyncio.gather(_get_json(self.provider.port, STATS_PATH),
                                                  _get_json(self.consumer.port, STATS_PATH))
        return {"provider": provider, "consumer": consumer}


def _rows(home: Path) -> dict[str, tuple[str, float, float]]:
    """pid -> (state, created_at, updated_at) of every negotiation in a node's database."""
    from sqlalchemy import select

    from trustspace.connector.config import Settings
    from trustspace.contracts.tables import Negotiation
    from trustspace.db import Database

    database = Database(Settings.load(home).db_url)
    try:
        with database.read() as session:
            return {n.pid: (n.state, n.created_at.timestamp(), n.updated_at.timestamp())
                    for n in session.scalars(select(Negotiation))}
    finally:
        database.dispose()


async def _measure(space: _Space, backend: str, concurrency: int, timing: Timing) -> Cell:
    finished = _Finished(space.consumer.port)
    await finished.start()
    stop = asyncio.Event()
    records: list[_Negotiation] = []
    workers = [asyncio.create_task(_worker(space.consumer.port, space.start_body, finished,
                                           stop, records)) for _ in range(concurrency)]
    try:
        await asyncio.sleep(timing.warmup)
        before = await space.stats()
        busy, cpu, window_start = _machine_busy(), time.process_time(), time.time()
        await asyncio.sleep(timing.window)
        after = await space.stats()
        busy, cpu = _machine_busy() - busy, time.process_time() - cpu
        window_end = time.time()
        stop.set()
        await asyncio.gather(*workers)
    finally:
        stop.set()
        for task in workers:
            task.cancel()
        await finished.stop()

    # The databases are the record: every negotiation started must be FINALIZED at both nodes.
    consumer_rows = await asyncio.to_thread(_rows, space.consumer.home)
    provider_states = [r[0] for r in (await asyncio.to_thread(_rows, space.provider.home))
                       .values()]
    failures: dict[str, int] = {}
    for neg in records:
        row = consumer_rows.get(neg.pid)
        if neg.state != "FINALIZED" or row is None or row[0] != "FINALIZED" \
                or row[2] > neg.finished:
            kind = neg.state or "not finished in time"
            if neg.state == "FINALIZED":
                kind = f"consumer database says {row[0] if row else 'nothing'}"
            failures[kind] = failures.get(kind, 0) + 1
    provider_unfinished = sum(state != "FINALIZED" for state in provider_states)
    if provider_unfinished:
        failures["not FINALIZED at the provider"] = provider_unfinished

    window = window_end - window_start
    measured = [r for r in records if window_start <= r.posted < window_end
                and r.state == "FINALIZED"]
    done_in_window = sum(window_start <= r.finished <= window_end for r in records)
    latencies = sorted(r.finished - r.posted for r in measured)
    posts = sorted(r.acked - r.posted for r in measured)
    protocol = sorted(r.finished - consumer_rows[r.pid][1] for r in measured)
    gaps = [r.finished - consumer_rows[r.pid][2] for r in measured]
    nodes = {name: _delta(before[name], after[name]) for name in ("provider", "consumer")}
    fetches = sum(_timer(d, "revocation_fetch", "count") for d in nodes.values())
    per_neg = _per_negotiation(nodes, done_in_window, fetches)
    n = done_in_window or 1
    routes = {name: {route: {"requests": r["count"] / n, "wall_ms": r["wall"] / n * 1e3}
                     for route, r in sorted(d["requests"].items())}
              for name, d in nodes.items()}
    node_cpu = {name: d["process_cpu"] / window for name, d in nodes.items()}
    return Cell(
        backend=backend, concurrency=concurrency, finished=done_in_window, seconds=window,
        rate=done_in_window / window, started=len(measured) + sum(
            window_start <= r.posted < window_end and r.state != "FINALIZED" for r in records),
        p50_ms=percentile(latencies, 0.5) * 1e3, p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=(latencies[-1] if latencies else math.nan) * 1e3,
        post_p50_ms=percentile(posts, 0.5) * 1e3,
        protocol_p50_ms=percentile(protocol, 0.5) * 1e3,
        protocol_p99_ms=percentile(protocol, 0.99) * 1e3,
        commit_after_updated_ms=(sum(gaps) / len(gaps) * 1e3) if gaps else math.nan,
        failed=sum(failures.values()), failure_kinds=failures,
        cpu={**node_cpu, "generator": cpu / window,
             "other": max(0.0, busy / window - sum(node_cpu.values()) - cpu / window)},
        per_negotiation=per_neg, routes=routes)


# ==== setting up a data space ====================================================================

def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bench server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/.well-known/dspace-version", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"the bench server did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _bench_servers(*nodes: Any) -> Iterator[None]:
    """Replace each node's `trustspace serve` with a bench server on its home and port."""
    env = {**os.environ, "TRUSTSPACE_REVOCATION_TTL_SECONDS": str(REVOCATION_TTL),
           "TRUSTSPACE_CRAWL_INTERVAL_SECONDS": "0"}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes:
            node.stop()
            log = node.home / "bench-server.log"
            with log.open("ab") as out:
                servers.append(subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--serve", str(node.home)],
                    stdout=out, stderr=subprocess.STDOUT, env=env))
        for node, server in zip(nodes, servers, strict=True):
            _wait_until_up(node.url, server, node.home / "bench-server.log")
        yield
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _run_backend(backend: str, timing: Timing, tmp: Path) -> tuple[list[Cell], float]:
    from tests.nodes import dataspace, product_spec

    began = time.perf_counter()
    root = tmp / backend
    root.mkdir()
    with dataspace(root, backend) as space:
        progress(f"{backend}: setting up an authority, a provider and a consumer ...")
        provider = space.add_member("tax-bureau", "provider")
        consumer = space.add_member("bank", "consumer")
        provider.ok("POST", "/api/products", product_spec(root / "bp.csv", DATASET))
        with _bench_servers(provider, consumer):
            setup = time.perf_counter() - began
            cells = []
            for concurrency in CONCURRENCY:
                progress(f"{backend}: {concurrency} at a time, {timing.warmup:g} s warm-up + "
                          f"{timing.window:g} s ...")
                cells.append(asyncio.run(_measure(_Space(provider, consumer), backend,
                                                  concurrency, timing)))
    return cells, setup


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "httpx",
                 "sqlalchemy", "psycopg", "http-message-signatures"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["sqlite"] = sqlite3.sqlite_version
    out["python"] = platform.python_version()
    with contextlib.suppress(Exception):
        import psycopg

        from tests.nodes import PG_ADMIN

        with psycopg.connect(PG_ADMIN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = str(row[0]) if row else "?"
    return out


def run(timing: Timing, backends: Sequence[str]) -> dict[str, Any]:
    # The nodes this bench starts run the trustspace of this checkout (also for scratch copies).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(ROOT))
    began = time.perf_counter()
    cells: list[Cell] = []
    setup: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ts-bench-negotiation-") as tmp:
        for backend in backends:
            done, setup[backend] = _run_backend(backend, timing, Path(tmp))
            cells += done
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
        "versions": _versions(), "timing": asdict(timing),
        "revocation_ttl_seconds": REVOCATION_TTL, "dataset": DATASET,
        "seconds": time.perf_counter() - began, "setup_seconds": setup,
    }
    return {"meta": meta, "cells": [asdict(c) for c in cells]}


# ==== the report =================================================================================

def verdicts(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"p50": {}, "rate": {}, "failed": sum(c["failed"] for c in cells)}
    for c in cells:
        if c["concurrency"] == 1:
            out["p50"][c["backend"]] = {
                "p50_ms": c["p50_ms"],
                "verdict": "PASS" if c["p50_ms"] < TARGET_P50_MS else "BELOW"}
        if c["concurrency"] == TARGET_RATE_CONCURRENCY:
            out["rate"][c["backend"]] = {
                "rate": c["rate"], "verdict": "PASS" if c["rate"] >= TARGET_RATE else "BELOW"}
    return out


def _ms(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.1f}"


_ROUTE_NAMES = {
    "POST /api/negotiations": "operator: POST /api/negotiations (dataset GET + start)",
    "GET /catalog/datasets/{id}": "dataset GET",
    "POST /negotiations/request": "ContractRequestMessage",
    "POST /negotiations/{pid}/agreement": "ContractAgreementMessage",
    "POST /negotiations/{pid}/agreement/verification": "ContractAgreementVerificationMessage",
    "POST /negotiations/{pid}/events": "event FINALIZED",
}


def render(result: dict[str, Any]) -> str:
    meta, cells = result["meta"], result["cells"]
    v = verdicts(cells)
    t = meta["timing"]
    out = [f"# Contract negotiation ({meta['date']}, nproc {meta['nproc']}, "
           f"{meta['cpu_model']})", "",
           f"Consumer POST /api/negotiations until its negotiation is FINALIZED, automatic "
           f"acceptance; {t['warmup']:g} s warm-up then {t['window']:g} s counted per row; "
           f"revocation TTL {meta['revocation_ttl_seconds']} s; nothing pinned.", "",
           "| database | at once | negotiations/s | p50 ms | p99 ms | max ms | POST→201 p50 | "
           "protocol p50 / p99 | started | failed | CPU provider / consumer / other |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c in cells:
        cpu = c["cpu"]
        out.append(
            f"| {c['backend']} | {c['concurrency']} | {c['rate']:,.1f} | {_ms(c['p50_ms'])} | "
            f"{_ms(c['p99_ms'])} | {_ms(c['max_ms'])} | {_ms(c['post_p50_ms'])} | "
            f"{_ms(c['protocol_p50_ms'])} / {_ms(c['protocol_p99_ms'])} | {c['started']} | "
            f"{c['failed']} | {cpu['provider']:.0%} / {cpu['consumer']:.0%} / "
            f"{cpu['other']:.0%} |")
    out += ["", "Per finished negotiation, both nodes together (CPU ms unless marked wall):", "",
            "| database | at once | node CPU | SM2 sign+verify (n) | DB driver CPU / wall "
            "(statements, commits) | HTTP round trips | everything else |",
            "|---|--:|--:|--:|--:|--:|--:|"]
    for c in cells:
        b = c["per_negotiation"]["both"]
        out.append(
            f"| {c['backend']} | {c['concurrency']} | {b['cpu_ms']:.1f} | {b['sm2_ms']:.1f} "
            f"({b['sm2_signs']:.1f} + {b['sm2_verifies']:.1f}) | {b['db_cpu_ms']:.1f} / "
            f"{b['db_wall_ms']:.1f} wall ({b['db_statements']:.0f}, {b['db_commits']:.1f}) | "
            f"{b['round_trips']:.1f} | {b['rest_ms']:.1f} |")
    out += ["", "| database | at once | node | CPU ms | of which event loop | SM2 | DB CPU / wall "
            "| NodeClient() | outbox scans (n) | RFC 9421 sign / check |",
            "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for c in cells:
        for name in ("provider", "consumer"):
            p = c["per_negotiation"][name]
            s = p["steps"]

            def cpu(step: str, steps: dict[str, Any] = s) -> float:
                return float(steps.get(step, {}).get("cpu_ms", 0.0))

            scans = s.get("outbox_scan", {}).get("count", 0.0)
            out.append(
                f"| {c['backend']} | {c['concurrency']} | {name} | {p['cpu_ms']:.1f} | "
                f"{p['loop_cpu_ms']:.1f} | {p['sm2_ms']:.1f} | {p['db_cpu_ms']:.1f} / "
                f"{p['db_wall_ms']:.1f} | {cpu('node_client_init'):.1f} | "
                f"{cpu('outbox_scan'):.1f} ({scans:.1f}) | {cpu('http_sign'):.1f} / "
                f"{cpu('http_verify'):.1f} |")
    for c in cells:
        if c["concurrency"] != 1:
            continue
        out += ["", f"Sequential, {c['backend']}: wall time per negotiation of each request "
                "as the serving node measured it (arrival to last byte):", "",
                "| served by | request | ms |", "|---|---|--:|"]
        served = 0.0
        for name in ("consumer", "provider"):
            for route, r in c["routes"][name].items():
                method_path = route.rsplit(" ", 1)[0]
                label = _ROUTE_NAMES.get(method_path, route)
                out.append(f"| {name} | {label} ({route.rsplit(' ', 1)[1]}, "
                           f"{r['requests']:.2f}×) | {r['wall_ms']:.1f} |")
                if method_path != "POST /api/negotiations":
                    served += r["wall_ms"]
        out.append(f"| | protocol p50 − the four protocol messages' handling (outbox, "
                   f"client, network) | {c['protocol_p50_ms'] - served + _dataset_ms(c):.1f} |")
    out += [""]
    for c in cells:
        if c["concurrency"] == 1:
            r = v["p50"][c["backend"]]
            verdict = (f"Sequential p50 ({c['backend']}): {r['p50_ms']:.1f} ms, target < "
                       f"{TARGET_P50_MS:g} ms: {r['verdict']}")
        elif c["concurrency"] == TARGET_RATE_CONCURRENCY:
            r = v["rate"][c["backend"]]
            verdict = (f"{TARGET_RATE_CONCURRENCY} at once ({c['backend']}): {r['rate']:.1f} "
                       f"negotiations/s, target ≥ {TARGET_RATE:g}/s: {r['verdict']}")
        else:
            continue
        b = c["per_negotiation"]["both"]
        out.append(f"{verdict} — per negotiation: SM2 {b['sm2_ms']:.1f} ms, DB "
                   f"{b['db_cpu_ms']:.1f} ms CPU / {b['db_wall_ms']:.1f} ms wall, "
                   f"{b['round_trips']:.1f} HTTP round trips, everything else "
                   f"{b['rest_ms']:.1f} ms CPU (of {b['cpu_ms']:.1f} ms node CPU)")
    notes = ["", "POST→201: the operator's request answered (it reads the provider's dataset "
             "with one signed GET, then starts the negotiation). Protocol: the negotiation's "
             "created_at in the consumer's database to its FINALIZED commit. "
             "'Everything else' = node CPU − SM2 − DB driver CPU (HTTP server and client, "
             "FastAPI, JSON, SQLAlchemy ORM, RFC 9421 beyond the SM2 operation, threads)."]
    for c in cells:
        gap = c["commit_after_updated_ms"]
        notes.append(f"{c['backend']}, {c['concurrency']} at once: FINALIZED committed "
                     f"{_ms(gap)} ms after the row's updated_at on average; revocation list "
                     f"fetched {c['per_negotiation']['both']['revocation_fetches']:.0f} time(s)"
                     " in the window.")
        if c["failed"]:
            kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(c["failure_kinds"].items()))
            notes.append(f"FAILED at {c['backend']}, {c['concurrency']} at once: {kinds}")
        if c["cpu"]["other"] > OTHER_LOAD:
            notes.append(f"{c['backend']}, {c['concurrency']} at once: everything besides "
                         f"the two nodes and the generator used {c['cpu']['other']:.0%} of a "
                         "CPU (PostgreSQL's server processes count here).")
    notes.append(f"failed in all: {v['failed']}" if v["failed"]
                 else "every negotiation finished FINALIZED at both nodes")
    setup = ", ".join(f"{k} {s:.0f} s" for k, s in meta["setup_seconds"].items())
    notes.append(f"Whole run {meta['seconds']:.0f} s (set-up: {setup}).")
    return "\n".join(out + notes)


def _dataset_ms(cell: dict[str, Any]) -> float:
    """The dataset GET's handling, which the protocol part does not contain."""
    for route, r in cell["routes"]["provider"].items():
        if route.startswith("GET /catalog/datasets/"):
            return float(r["wall_ms"])
    return 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--backend", choices=BACKENDS, action="append",
                        help="only this database (repeatable; default: both)")
    parser.add_argument("--serve", type=Path, metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    result = run(QUICK if args.quick else DEFAULT, args.backend or BACKENDS)
    result["verdicts"] = verdicts(result["cells"])
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark a provider node's DSP catalog endpoint (POST /catalog/request) under load: SM2-signed
requests, as a consumer node sends them, beside the same app serving the same catalog unsigned.

Run from the repository root::

    .venv/bin/python bench/catalog.py                  # 12 s per figure, about 100 s
    .venv/bin/python bench/catalog.py --quick          # smoke test, about 25 s
    .venv/bin/python bench/catalog.py --json out.json  # the results as JSON too

What runs:

- A data space built with `tests/nodes.py`, each node a `trustspace serve` process on SQLite:
  an authority, the provider "hospital-a" with 20 published products (each registered with the
  authority) and the consumer "research-b", both enrolled.
- The provider's `trustspace serve` is then replaced by the *bench server*: this script with
  `--serve`, a separate process that builds the app exactly as `serve` does
  (`create_app(Settings.load(home))`, uvicorn with serve's options) from the provider's home,
  with TRUSTSPACE_REVOCATION_TTL_SECONDS=30 (the node's default), and adds:
  - `POST /bench/catalog-unsigned`: calls `catalog_api.catalog_request` itself, so it answers
    exactly what `/catalog/request` answers, but without the `member()` dependency (no
    credential, no signature, no nonce);
  - `GET /bench/stats`: cumulative counters of the timers below and of the requests served;
  - timers (wall and thread CPU time) around `auth.decode_credential`, `auth.verify_membership`,
    `auth.verify_request` (RFC 9421 check, nonce store included), the nonce store's `remember`,
    the revocation refresh, the whole `member()` dependency, `catalog_api.published_views` and
    `Node.membership`, installed by replacing module attributes before the app is built.
  Signed and unsigned figures therefore come from one server process, one database, one catalog.
- This process is the load generator. Each client is one keep-alive HTTP/1.1 connection
  (raw asyncio streams, no client library in the timed path) sending its next request as soon
  as the previous answer has been read in full. Every signed request is built and signed
  (RFC 9421 SM2 signature over method, target URI, Content-Digest and the Trustspace-Credential
  header, a fresh nonce each) before the timed slice, so signing costs the server nothing.
  Every answer must be 200 with exactly the reference catalog bytes; anything else is an error.
- At each concurrency, unsigned and signed load alternate in slices (default 4 x 3 s each, after
  1 s of warm-up), so drift in the machine's speed hits both modes alike. Each slice opens its
  connections afresh (uvicorn drops keep-alive connections idle for 5 s).
- With two or more CPUs, the bench server is pinned to one CPU and this process to another
  (`os.sched_setaffinity`). The authority runs unpinned; it only answers a revocation-list
  fetch every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import itertools
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

from _common import cpu_model, percentile, progress
from fastapi import Depends, Request

from trustspace.connector.auth import encode_credential, node_of
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.connector.node import Node
from trustspace.crypto import SM2PrivateKey, canonical_json

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = (1, 16, 64)
PRODUCTS = 20
REVOCATION_TTL = 30  # seconds: TRUSTSPACE_REVOCATION_TTL_SECONDS of the measured provider
TARGET_RATIO = 0.7  # signed throughput must reach this fraction of unsigned, at each concurrency
TARGET_P99_MS = 50.0  # signed p99 latency at TARGET_P99_CLIENTS clients must stay below this
TARGET_P99_CLIENTS = 16
OTHER_LOAD = 0.25  # warn when the rest of the machine used more than this many CPUs' worth
SIGNED_PATH = "/catalog/request"
UNSIGNED_PATH = "/bench/catalog-unsigned"
STATS_PATH = "/bench/stats"
CATALOG_REQUEST = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                   "@type": "CatalogRequestMessage", "filter": []}
# The verification work of a signed request: what `member()` does besides reading the body.
VERIFY_TIMERS = ("decode_credential", "verify_membership", "verify_request")


@dataclass(frozen=True)
class Timing:
    warmup: float  # seconds of uncounted load before the first slice of each figure
    window: float  # seconds of counted load per figure, in `rounds` slices
    rounds: int  # unsigned and signed slices alternate this many times at each concurrency


DEFAULT = Timing(warmup=1.0, window=12.0, rounds=4)
QUICK = Timing(warmup=0.3, window=1.5, rounds=1)


# ==== the bench server (a separate process: this script with --serve) ===========================

class _Meter:
    """Cumulative timers and request counters of the bench server, read through /bench/stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.timers: dict[str, list[float]] = {}  # name -> [count, wall s, thread cpu s]
        self.requests: dict[str, dict[str, Any]] = {}  # path -> count, wall s, statuses

    def add(self, name: str, wall: float, cpu: float) -> None:
        with self._lock:
            entry = self.timers.setdefault(name, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += wall
            entry[2] += cpu

    def request(self, path: str, status: int, wall: float) -> None:
        with self._lock:
            entry = self.requests.setdefault(path, {"count": 0, "wall": 0.0, "statuses": {}})
            entry["count"] += 1
            entry["wall"] += wall
            entry["statuses"][str(status)] = entry["statuses"].get(str(status), 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "timers": {k: {"count": v[0], "wall": v[1], "cpu": v[2]}
                           for k, v in self.timers.items()},
                "requests": json.loads(json.dumps(self.requests)),
                "process_cpu": time.process_time(),
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


async def _request_body(request: Request) -> bytes:
    return await request.body()


class _RequestMeter:
    """ASGI wrapper: wall time and status of every request, by path (stats excluded)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == STATS_PATH:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def metered_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, metered_send)
        finally:
            METER.request(scope["path"], status, time.perf_counter() - start)


def _instrument() -> None:
    """Wrap the verification steps and the catalog's parts with timers. Must run before
    `catalog_api` is imported: it binds `member()` when its module is loaded."""
    from trustspace.connector import auth, httpsig, node

    if "trustspace.connector.catalog_api" in sys.modules:
        raise RuntimeError("instrument before the app's modules are imported")
    for name in VERIFY_TIMERS:
        setattr(auth, name, _timed(name, getattr(auth, name)))
    httpsig.MemoryNonceStore.remember = _timed(  # type: ignore[method-assign]
        "nonce_store", httpsig.MemoryNonceStore.remember)
    node.Node.membership = _timed("node_membership", node.Node.membership)  # type: ignore
    refresh = node.RevocationCache.refresh_if_stale
    counted: dict[int, float] = {}

    @functools.wraps(refresh)
    async def timed_refresh(self: Any) -> None:
        fetched, start = self.fetched, time.perf_counter()
        try:
            await refresh(self)
        finally:
            METER.add("revocation_check", time.perf_counter() - start, 0.0)
            # Requests that waited for another's fetch see the new list too: count it once.
            if self.fetched not in (fetched, counted.get(id(self))):
                counted[id(self)] = self.fetched
                METER.add("revocation_fetch", time.perf_counter() - start, 0.0)

    node.RevocationCache.refresh_if_stale = timed_refresh  # type: ignore[method-assign]
    member = auth.member

    def timed_member(*roles: str) -> Callable[[Request], Any]:
        dependency = member(*roles)

        async def timed_dependency(request: Request) -> auth.Caller:
            start = time.perf_counter()
            try:
                return await dependency(request)
            finally:
                METER.add("member_dependency", time.perf_counter() - start, 0.0)

        return timed_dependency

    auth.member = timed_member
    from sqlalchemy import Engine, event

    @event.listens_for(Engine, "connect")
    def count_connect(_dbapi_connection: Any, _record: Any) -> None:
        METER.add("db_connect", 0.0, 0.0)

    from trustspace.connector import catalog_api

    catalog_api.published_views = _timed("published_views", catalog_api.published_views)


def serve(home: Path, cpu: int | None) -> None:
    """The bench server: the provider's app, as `trustspace serve` runs it, plus /bench/*."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _instrument()
    import uvicorn

    from trustspace.connector import catalog_api
    from trustspace.connector.app import create_app
    from trustspace.connector.config import Settings

    settings = Settings.load(home)
    app = create_app(settings)

    @app.post(UNSIGNED_PATH, include_in_schema=False)
    def catalog_unsigned(body: Annotated[bytes, Depends(_request_body)],
                         node: Annotated[Node, Depends(node_of)]) -> Any:
        """What /catalog/request answers, through the same function, without member()."""
        return catalog_api.catalog_request(SimpleNamespace(body=body), node)  # type: ignore

    @app.get(STATS_PATH, include_in_schema=False)
    def stats() -> dict[str, Any]:
        return METER.snapshot()

    # The options of `trustspace serve` (trustspace/connector/cli_node.py).
    uvicorn.run(_RequestMeter(app), host=settings.host, port=settings.port,
                log_level="warning", server_header=False)


# ==== the load generator =========================================================================

class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared request bytes."""

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

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = b"close" in value
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            raise ValueError("response without Content-Length or chunked encoding")
        if close:
            await self.close()
        return status, body


def _raw_request(method: str, path: str, host: str, headers: dict[str, str],
                 content: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}",
             *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(content)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content


def signed_request(key: SM2PrivateKey, credential: dict[str, Any], host: str) -> bytes:
    """A catalog request exactly as a consumer node signs it (see tests/test_node_e2e.py)."""
    content = canonical_json(CATALOG_REQUEST)
    headers = {"content-type": "application/json",
               CREDENTIAL_HEADER: encode_credential(credential)}
    headers.update(sign_request("POST", f"http://{host}{SIGNED_PATH}", headers, content, key))
    return _raw_request("POST", SIGNED_PATH, host, headers, content)


def unsigned_request(host: str) -> bytes:
    return _raw_request("POST", UNSIGNED_PATH, host, {"content-type": "application/json"},
                        canonical_json(CATALOG_REQUEST))


@dataclass
class _Record:
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    exhausted: bool = False


def _reason(status: int, body: bytes) -> str:
    try:
        doc = json.loads(body)
        reason = doc.get("error") or doc.get("code") or ""
    except (ValueError, AttributeError):
        reason = body[:60].decode("latin-1", "replace")
    return f"{status} {reason}".strip()


async def _client(conn: _Connection, pool: Iterator[bytes], deadline: float, expected: bytes,
                  record: _Record) -> None:
    """Closed loop: the next request as soon as the previous answer has been read."""
    while time.perf_counter() < deadline:
        raw = next(pool, None)
        if raw is None:
            record.exhausted = True
            return
        start = time.perf_counter()
        try:
            status, body = await conn.request(raw)
        except (OSError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            record.errors[type(exc).__name__] += 1
            await conn.close()
            continue
        record.latencies.append(time.perf_counter() - start)
        if status != 200:
            record.errors[_reason(status, body)] += 1
        elif body != expected:
            record.errors["200 with another body"] += 1


async def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    conn = _Connection(host, port)
    try:
        return await conn.request(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    finally:
        await conn.close()


async def _post(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    conn = _Connection(host, port)
    try:
        return await conn.request(raw)
    finally:
        await conn.close()


def _drain(queue: collections.deque[bytes]) -> Iterator[bytes]:
    while queue:
        yield queue.popleft()


def _machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (/proc/stat), NaN where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # up to steal, not guest


@dataclass
class Cell:
    clients: int
    mode: str  # "signed" or "unsigned"
    requests: int  # answers received in the timed window
    seconds: float  # length of the window (until the last answer of it arrived)
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # non-200 answers, wrong bodies and connection errors, warm-up included
    error_kinds: dict[str, int]
    server_cpu: float  # the server's CPU seconds / wall seconds during the window
    generator_cpu: float  # this process's, likewise
    other_cpu: float  # CPUs' worth of everything else on the machine meanwhile (kernel incl.)
    pool_exhausted: bool  # the window ended early because the pre-signed requests ran out
    server: dict[str, Any]  # per-request server figures (see _server_figures)


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    timers = {}
    for name, a in after["timers"].items():
        b = before["timers"].get(name, {"count": 0, "wall": 0.0, "cpu": 0.0})
        timers[name] = {k: a[k] - b[k] for k in ("count", "wall", "cpu")}
    requests = {}
    for path, a in after["requests"].items():
        b = before["requests"].get(path, {"count": 0, "wall": 0.0})
        requests[path] = {"count": a["count"] - b["count"], "wall": a["wall"] - b["wall"]}
    return {"timers": timers, "requests": requests,
            "process_cpu": after["process_cpu"] - before["process_cpu"],
            "wall": after["monotonic"] - before["monotonic"]}


def _sum(total: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Two `_delta` results added up."""
    out: dict[str, Any] = {"process_cpu": total.get("process_cpu", 0.0) + delta["process_cpu"],
                           "wall": total.get("wall", 0.0) + delta["wall"]}
    for part in ("timers", "requests"):
        merged = {k: dict(v) for k, v in total.get(part, {}).items()}
        for name, values in delta[part].items():
            entry = merged.setdefault(name, dict.fromkeys(values, 0))
            for k, v in values.items():
                entry[k] += v
        out[part] = merged
    return out


def _server_figures(delta: dict[str, Any], path: str) -> dict[str, Any]:
    """Per request of the window: server CPU and the timers, in µs; the verify share."""
    served = delta["requests"].get(path, {"count": 0, "wall": 0.0})
    n = served["count"] or 1
    timers = delta["timers"]

    def cpu_us(name: str) -> float:
        return float(timers.get(name, {}).get("cpu", 0.0)) / n * 1e6

    def wall_us(name: str) -> float:
        return float(timers.get(name, {}).get("wall", 0.0)) / n * 1e6

    verify_cpu = sum(timers.get(name, {}).get("cpu", 0.0) for name in VERIFY_TIMERS)
    verify_wall = sum(timers.get(name, {}).get("wall", 0.0) for name in VERIFY_TIMERS)
    return {
        "served": served["count"],
        "cpu_us": delta["process_cpu"] / n * 1e6,  # all the server's CPU, per request
        "request_wall_us": served["wall"] / n * 1e6,  # arrival to last byte sent, mean
        "verify_cpu_us": verify_cpu / n * 1e6,
        "verify_share": verify_cpu / delta["process_cpu"] if delta["process_cpu"] else 0.0,
        "verify_wall_share": verify_wall / served["wall"] if served["wall"] else 0.0,
        **{f"{name}_cpu_us": cpu_us(name) for name in (
            *VERIFY_TIMERS, "nonce_store", "published_views", "node_membership")},
        "member_dependency_wall_us": wall_us("member_dependency"),
        "node_membership_calls": timers.get("node_membership", {}).get("count", 0) / n,
        "db_connects": timers.get("db_connect", {}).get("count", 0),
        "revocation_fetches": timers.get("revocation_fetch", {}).get("count", 0),
        "revocation_fetch_ms": timers.get("revocation_fetch", {}).get("wall", 0.0) * 1e3,
        "revocation_check_wall_us": wall_us("revocation_check"),
    }


class _Run:
    """One mode at one concurrency: its connections, and its figures summed over the slices."""

    def __init__(self, host: str, port: int, clients: int, mode: str, expected: bytes) -> None:
        self.host, self.port, self.clients, self.mode = host, port, clients, mode
        self.expected = expected
        self.conns = [_Connection(host, port) for _ in range(clients)]
        self.record = _Record()
        self.warm = _Record()
        self.seconds = self.generator_cpu = self.busy = 0.0
        self.server: dict[str, Any] = {}

    async def slice(self, pool: Iterator[bytes], warmup: float, window: float) -> None:
        """Warm up (uncounted), then `window` seconds of closed-loop load, counted. Connections
        are opened fresh: uvicorn closes them after 5 s idle, while the other mode ran."""
        try:
            await asyncio.gather(*(c.open() for c in self.conns))
            await self._load(pool, warmup, window)
        finally:
            await asyncio.gather(*(c.close() for c in self.conns))

    async def _load(self, pool: Iterator[bytes], warmup: float, window: float) -> None:
        if warmup > 0:
            deadline = time.perf_counter() + warmup
            await asyncio.gather(*(_client(c, pool, deadline, self.expected, self.warm)
                                   for c in self.conns))
        before = json.loads((await _get(self.host, self.port, STATS_PATH))[1])
        busy, cpu, start = _machine_busy(), time.process_time(), time.perf_counter()
        deadline = start + window
        await asyncio.gather(*(_client(c, pool, deadline, self.expected, self.record)
                               for c in self.conns))
        self.seconds += time.perf_counter() - start
        self.generator_cpu += time.process_time() - cpu
        self.busy += _machine_busy() - busy
        after = json.loads((await _get(self.host, self.port, STATS_PATH))[1])
        self.server = _sum(self.server, _delta(before, after))

    def cell(self) -> Cell:
        latencies = sorted(self.record.latencies)
        errors = self.warm.errors + self.record.errors
        server, seconds = self.server, self.seconds or math.nan
        return Cell(
            clients=self.clients, mode=self.mode, requests=len(latencies), seconds=seconds,
            rps=len(latencies) / seconds, p50_ms=percentile(latencies, 0.50) * 1e3,
            p99_ms=percentile(latencies, 0.99) * 1e3,
            max_ms=(latencies[-1] if latencies else math.nan) * 1e3,
            errors=sum(errors.values()), error_kinds=dict(errors),
            server_cpu=server["process_cpu"] / server["wall"],
            generator_cpu=self.generator_cpu / seconds,
            other_cpu=max(0.0, (self.busy - self.generator_cpu - server["process_cpu"])
                          / seconds),
            pool_exhausted=self.record.exhausted or self.warm.exhausted,
            server=_server_figures(server, SIGNED_PATH if self.mode == "signed"
                                   else UNSIGNED_PATH),
        )


# ==== setting up the data space ==================================================================

def _products(provider: Any, folder: Path) -> None:
    """20 published products: general ones open to sandbox and federated jobs, every fourth an
    important one (privacy modes only, code approval, masked preview)."""
    from tests.nodes import product_spec, research_offer

    topics = ["blood-pressure", "glucose", "cholesterol", "bmi", "heart-rate", "sleep",
              "vaccination", "allergy", "asthma", "oncology", "dialysis", "maternity",
              "pediatrics", "dermatology", "ophthalmology", "orthopedics", "psychiatry",
              "radiology", "emergency", "geriatrics"]
    for i, topic in enumerate(topics[:PRODUCTS]):
        extra: dict[str, Any] = {}
        if i % 4 == 3:
            modes = ["federated", "homomorphic"]
            offer = research_offer(modes)  # important data: every job needs code approval
            offer["permission"][0]["constraint"].append(
                {"leftOperand": "ts:codeApproval", "operator": "eq", "rightOperand": "required"})
            extra = {"level": "important", "modes": modes, "offers": [offer]}
        spec = product_spec(folder / f"{topic}.csv", f"{topic}-stats",
                            title=f"{topic.replace('-', ' ').capitalize()} statistics",
                            description=f"Outpatient {topic} measurements by age and sex, "
                                        f"hospital A, 2021-2025",
                            keywords=[topic, "outpatient", f"dept-{i % 5}"],
                            category=f"health/{topic}", **extra)
        provider.ok("POST", "/api/products", spec)


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
            time.sleep(0.1)
    raise RuntimeError(f"the bench server did not start: {log.read_text()[-2000:]}")


def _cpus() -> tuple[int | None, int | None]:
    """(server CPU, generator CPU), or (None, None) when there are fewer than two."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {name: version(name) for name in ("uvicorn", "fastapi", "starlette", "httpx",
                                            "sqlalchemy", "http-message-signatures", "http-sf")}
    for name in ("uvloop", "httptools"):  # uvicorn's "auto" loop and HTTP parser pick these
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["sqlite"] = sqlite3.sqlite_version
    out["python"] = platform.python_version()
    return out


async def _measure(host: str, port: int, key: SM2PrivateKey, credential: dict[str, Any],
                   timing: Timing) -> tuple[list[Cell], dict[str, Any]]:
    netloc = f"{host}:{port}"
    # Both routes must answer the same catalog: the reference bytes every answer is held to.
    status, signed_body = await _post(host, port, signed_request(key, credential, netloc))
    if status != 200:
        raise RuntimeError(f"signed catalog request refused: {_reason(status, signed_body)}")
    status, unsigned_body = await _post(host, port, unsigned_request(netloc))
    if status != 200 or unsigned_body != signed_body:
        raise RuntimeError("the unsigned route does not answer the signed route's catalog")
    datasets = len(json.loads(signed_body).get("dataset", []))
    if datasets != PRODUCTS:
        raise RuntimeError(f"the catalog lists {datasets} datasets, expected {PRODUCTS}")
    info: dict[str, Any] = {"catalog_bytes": len(signed_body), "datasets": datasets,
            "signed_request_bytes": len(signed_request(key, credential, netloc))}

    cells: list[Cell] = []
    raw_unsigned = unsigned_request(netloc)
    slice_seconds = timing.window / timing.rounds
    signed_count, signing_seconds = 0, 0.0
    for clients in CLIENTS:
        runs = {mode: _Run(host, port, clients, mode, signed_body)
                for mode in ("unsigned", "signed")}
        signed_pool: collections.deque[bytes] = collections.deque()
        for i in range(timing.rounds):
            warmup = timing.warmup if i == 0 else 0.0
            progress(f"  {clients} client(s), round {i + 1}/{timing.rounds}: unsigned ...")
            await runs["unsigned"].slice(itertools.repeat(raw_unsigned), warmup, slice_seconds)
            # Enough signed requests for the next slice (signed rate so far, else the unsigned
            # one, with a margin), signed before it; each is fresh for the node's 300 s skew.
            done = runs["signed"] if runs["signed"].seconds else runs["unsigned"]
            rate = len(done.record.latencies) / done.seconds
            need = math.ceil(rate * (warmup + slice_seconds) * 1.4) + 4 * clients
            started = time.perf_counter()
            while len(signed_pool) < need:
                signed_pool.append(signed_request(key, credential, netloc))
                signed_count += 1
            signing_seconds += time.perf_counter() - started
            progress(f"  {clients} client(s), round {i + 1}/{timing.rounds}: signed ...")
            await runs["signed"].slice(_drain(signed_pool), warmup, slice_seconds)
        cells += [runs["unsigned"].cell(), runs["signed"].cell()]
    info["signing_ms_per_request"] = signing_seconds / max(1, signed_count) * 1e3
    return cells, info


def run(timing: Timing) -> dict[str, Any]:
    # The nodes this bench starts run the trustspace of this checkout (also for scratch copies).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(ROOT))
    from tests.nodes import dataspace

    server_cpu, generator_cpu = _cpus()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ts-bench-catalog-") as tmp, \
            dataspace(Path(tmp), "sqlite") as space:
        progress("setting up: authority, provider, consumer, products ...")
        provider = space.add_member("hospital-a", "provider")
        consumer = space.add_member("research-b", "consumer")
        _products(provider, Path(tmp))
        key = SM2PrivateKey.from_pem((consumer.home / "node-key.pem").read_bytes())
        credential = consumer.ok("GET", "/api/node")["credential"]
        consumer.stop()  # not needed any more: its key and credential sign the requests
        provider.stop()  # replaced by the bench server on the same home and port
        log = provider.home / "bench-server.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(provider.home)]
        if server_cpu is not None:
            cmd += ["--cpu", str(server_cpu)]
        env = {**os.environ, "TRUSTSPACE_REVOCATION_TTL_SECONDS": str(REVOCATION_TTL),
               "TRUSTSPACE_CRAWL_INTERVAL_SECONDS": "0"}
        with log.open("ab") as out:
            server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_up(provider.url, server, log)
            if generator_cpu is not None:
                os.sched_setaffinity(0, {generator_cpu})
            setup = time.perf_counter() - began
            progress(f"measuring (set-up took {setup:.0f} s) ...")
            cells, info = asyncio.run(_measure("127.0.0.1", provider.port, key, credential,
                                               timing))
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
        "versions": _versions(), "timing": asdict(timing), "products": PRODUCTS,
        "revocation_ttl_seconds": REVOCATION_TTL, "database": "SQLite (the node's default)",
        "server_cpu": server_cpu, "generator_cpu": generator_cpu,
        "seconds": time.perf_counter() - began, "setup_seconds": setup, **info,
    }
    return {"meta": meta, "cells": [asdict(c) for c in cells]}


# ==== the report =================================================================================

def _find(cells: Sequence[dict[str, Any]], clients: int, mode: str) -> dict[str, Any]:
    return next(c for c in cells if c["clients"] == clients and c["mode"] == mode)


def verdicts(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ratios = {}
    for clients in CLIENTS:
        signed, unsigned = _find(cells, clients, "signed"), _find(cells, clients, "unsigned")
        ratio = signed["rps"] / unsigned["rps"] if unsigned["rps"] else 0.0
        ratios[clients] = {"ratio": ratio,
                           "verdict": "PASS" if ratio >= TARGET_RATIO else "BELOW"}
    p99 = _find(cells, TARGET_P99_CLIENTS, "signed")["p99_ms"]
    errors = sum(c["errors"] for c in cells)
    return {"throughput": ratios,
            "p99": {"clients": TARGET_P99_CLIENTS, "p99_ms": p99,
                    "verdict": "PASS" if p99 < TARGET_P99_MS else "BELOW"},
            "errors": errors}


def render(result: dict[str, Any]) -> str:
    meta, cells = result["meta"], result["cells"]
    v = verdicts(cells)
    out = [f"# Catalog requests ({meta['date']}, nproc {meta['nproc']}, {meta['cpu_model']})",
           "",
           f"POST /catalog/request, {meta['datasets']} datasets ({meta['catalog_bytes']:,} B "
           f"answer), SQLite, revocation TTL {meta['revocation_ttl_seconds']} s; "
           f"{meta['timing']['window']:g} s of load per row after {meta['timing']['warmup']:g} s "
           f"warm-up, unsigned and signed alternating in {meta['timing']['rounds']} slice(s) each; "
           f"server on CPU {meta['server_cpu']}, generator on CPU {meta['generator_cpu']}.",
           "",
           "| clients | mode | req/s | p50 ms | p99 ms | max ms | errors | requests "
           "| server CPU | generator CPU | other CPU |",
           "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c in cells:
        out.append(f"| {c['clients']} | {c['mode']} | {c['rps']:,.0f} | {c['p50_ms']:.1f} | "
                   f"{c['p99_ms']:.1f} | {c['max_ms']:.1f} | {c['errors']} | "
                   f"{c['requests']:,} | {c['server_cpu']:.0%} | {c['generator_cpu']:.0%} | "
                   f"{c['other_cpu']:.0%} |")
    out += ["", "| clients | signed/unsigned req/s | target ≥ "
            f"{TARGET_RATIO}× | verify share of server CPU (signed) | server CPU per request, "
            "signed / unsigned (µs) |", "|--:|--:|:-:|--:|--:|"]
    for clients in CLIENTS:
        s, u = _find(cells, clients, "signed"), _find(cells, clients, "unsigned")
        r = v["throughput"][clients]
        out.append(f"| {clients} | {r['ratio']:.2f}× | {r['verdict']} | "
                   f"{s['server']['verify_share']:.0%} | {s['server']['cpu_us']:,.0f} / "
                   f"{u['server']['cpu_us']:,.0f} |")
    p = v["p99"]
    out += ["", f"p99 at {p['clients']} clients (signed): {p['p99_ms']:.1f} ms, target < "
            f"{TARGET_P99_MS:g} ms: {p['verdict']}"]
    s = _find(cells, TARGET_P99_CLIENTS, "signed")["server"]
    u = _find(cells, TARGET_P99_CLIENTS, "unsigned")["server"]
    out += ["", f"Server CPU per request at {TARGET_P99_CLIENTS} clients (µs, thread CPU time "
            "inside each step):", "",
            "| step | signed | unsigned |", "|---|--:|--:|",
            f"| whole request (process CPU / requests) | {s['cpu_us']:,.0f} | "
            f"{u['cpu_us']:,.0f} |",
            f"| verify: decode_credential | {s['decode_credential_cpu_us']:,.0f} | — |",
            f"| verify: verify_membership (credential) | {s['verify_membership_cpu_us']:,.0f} "
            "| — |",
            f"| verify: verify_request (RFC 9421 + nonce) | {s['verify_request_cpu_us']:,.0f} "
            "| — |",
            f"| … of which the nonce store (in memory) | {s['nonce_store_cpu_us']:,.0f} | — |",
            f"| catalog: published_views | {s['published_views_cpu_us']:,.0f} | "
            f"{u['published_views_cpu_us']:,.0f} |",
            f"| catalog: Node.membership ({s['node_membership_calls']:.0f}× per request) | "
            f"{s['node_membership_cpu_us']:,.0f} | {u['node_membership_cpu_us']:,.0f} |",
            f"| everything else (HTTP, FastAPI, JSON, threads) | "
            f"{_rest(s, signed=True):,.0f} | {_rest(u, signed=False):,.0f} |"]
    fetches = sum(c["server"]["revocation_fetches"] for c in cells)
    fetch_ms = sum(c["server"]["revocation_fetch_ms"] for c in cells)
    notes = [f"Revocation list fetched from the authority {fetches} time(s) during the windows"
             + (f" ({fetch_ms / fetches:.1f} ms each)." if fetches else "."),
             "Verify share: CPU time inside decode_credential, verify_membership and "
             "verify_request (nonce store included) / the server process's CPU time."]
    for c in cells:
        if c["errors"]:
            kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(c["error_kinds"].items()))
            notes.append(f"errors at {c['clients']} clients, {c['mode']}: {kinds}")
        if c["pool_exhausted"]:
            notes.append(f"{c['clients']} clients, signed: the pre-signed requests ran out; "
                         f"the window lasted {c['seconds']:.1f} s")
        if c["other_cpu"] > OTHER_LOAD:
            notes.append(f"warning: {c['clients']} clients, {c['mode']}: something else used "
                         f"{c['other_cpu']:.0%} of a CPU during the window")
        if c["generator_cpu"] > 0.8:
            notes.append(f"{c['clients']} clients, {c['mode']}: the generator used "
                         f"{c['generator_cpu']:.0%} of its CPU and may have limited the rate")
    notes.append(f"errors in all: {v['errors']}" if v["errors"] else "every request succeeded")
    out += ["", *notes,
            f"Signing took {meta['signing_ms_per_request']:.2f} ms per request in the generator, "
            "before each window. Whole run {:.0f} s (set-up {:.0f} s).".format(
                meta["seconds"], meta["setup_seconds"])]
    return "\n".join(out)


def _rest(fig: dict[str, Any], *, signed: bool) -> float:
    known = fig["published_views_cpu_us"] + fig["node_membership_cpu_us"]
    if signed:
        known += fig["verify_cpu_us"]
    # published_views calls Node.membership once itself: do not count that call twice.
    calls = fig["node_membership_calls"]
    if calls:
        known -= fig["node_membership_cpu_us"] / calls
    return float(fig["cpu_us"] - known)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--serve", type=Path, metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.cpu)
        return 0
    result = run(QUICK if args.quick else DEFAULT)
    result["verdicts"] = verdicts(result["cells"])
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

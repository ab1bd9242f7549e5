"""Benchmark the ledger: SM2-signed receipts appended to the transparency log, RFC 9162 inclusion
proofs, and receipts anchored on an EVM chain (Anvil), beside `openssl speed sm2` verify/s.

Run from the repository root::

    .venv/bin/python bench/ledger.py                  # about 2 minutes (SQLite, Anvil)
    .venv/bin/python bench/ledger.py --quick          # smoke test, about 20 s
    .venv/bin/python bench/ledger.py --postgres       # PostgreSQL instead of SQLite
    .venv/bin/python bench/ledger.py --no-anvil       # skip part 3 (the chain)
    .venv/bin/python bench/ledger.py --json out.json  # the results as JSON too

What runs, in one process (nothing pinned):

0. `openssl speed -seconds 3 sm2` (1 s with --quick), its human-readable table parsed for the
   SM2 verify/s. OpenSSL counts its own user CPU time on one core; every row of the report
   prints that figure beside its own.
1. Receipts appended to the log. A pool of delivery receipts (`Delivery`, no confidential
   part) is issued by a provider key and countersigned by a consumer key beforehand, in a
   process pool: each carries two SM2 signatures. `TransparencyLog.append` then takes them
   over a fresh `Database(url).migrate()` (SQLite file in a temp dir, or with --postgres a
   database created on 127.0.0.1:5432 and dropped at the end), one receipt per
   `db.transaction()` and 100 or 1,000 per transaction, with `verify=` a function calling
   `verify_receipt(doc, keys)` (both signatures checked: 2 SM2 verifications per receipt) and
   with `verify=None`. The log tables are emptied before each run.
2. Inclusion proofs at 10^3, 10^5 and 10^6 leaves (10^3 and 10^5 with --quick). The log's
   `log_nodes` table is filled directly (not through receipts): random 32-byte entries, their
   RFC 9162 leaf hashes and every node `merkle.nodes_added_many` derives from them, bulk inserted
   (SQLite `executemany`, PostgreSQL `COPY`), the same entries also in a `MemoryTree`; the
   log's root must equal the memory tree's. Measured: `TransparencyLog.inclusion` from the
   database (random leaves, one read session), `MemoryTree.inclusion_proof`, and
   `merkle.verify_inclusion` (SM3) of memory-tree proofs (the database's are checked equal to
   them). At the largest size, receipts are then appended into that big log.
3. Anvil (tests/anvil.py, automine) with `ReceiptLedger` deployed (`evm.deploy`): one `record`
   transaction per receipt, waited for one by one and sent all at once (pipelined); one
   `record_batch` per 1,000 and per 10,000 receipts, timed from the receipts' canonical bytes
   through the `MemoryTree` root to the mined transaction; and one `anchor` of a signed
   checkpoint, timed from appending the receipts to the log through the mined transaction.
   Batching must reach 100x the faster one-transaction-per-receipt figure.

How rates are counted: count / wall-clock seconds of this process, which runs everything on one
thread (SQLite in-process; PostgreSQL and Anvil are other processes). "CPU" is this process's
CPU time over the wall time: it stays at or below 1 core, so a rate is a rate per core used
(PostgreSQL's server CPU is not in it). SM2 verifications/s = 2 x receipts/s (each receipt's two
signatures are verified), compared with `openssl speed sm2` verify/s (per CPU second, single
core): the target is >= 0.8x.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import cpu_model, progress
from sqlalchemy import delete, text

from trustspace.crypto import SignedDocument, SM2PrivateKey, canonical_json, sm3
from trustspace.db import Database
from trustspace.ledger import merkle
from trustspace.ledger.errors import ProofInvalid
from trustspace.ledger.evm import EvmLedger, deploy
from trustspace.ledger.log import TransparencyLog, leaf_bytes
from trustspace.ledger.receipts import (
    Delivery,
    Parties,
    Receipt,
    countersign,
    issue,
    verify_receipt,
)
from trustspace.ledger.tables import LogCheckpoint, LogEntry, LogHead, LogNode

ROOT = Path(__file__).resolve().parent.parent
PROVIDER = "did:web:provider.bench.example"
CONSUMER = "did:web:consumer.bench.example"
SUBMITTER = PROVIDER
ORIGIN = "bench.example/log"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

VERIFY_TARGET = 0.8  # SM2 verifications/s while appending >= this x openssl verify/s
APPEND_TARGET = 20_000  # receipts/s appended without verification, batched
PROOF_TARGET = 20_000  # inclusion proof verifications/s at the largest tree
PROOF_TARGET_SIZE = 10**6
CHAIN_TARGET = 100  # batched anchoring >= this x one transaction per receipt
SIGNATURES = 2  # delivery receipts: the provider's and the consumer's
FILL_CHUNK = 1 << 16  # leaves per bulk insert when filling log_nodes
BUSY = 0.9  # below this CPU share on SQLite, something else ran on our CPU


@dataclass(frozen=True)
class Settings:
    openssl_seconds: int
    pool: int  # receipts issued and countersigned beforehand (reused across runs)
    verified: int  # receipts per run with verification
    single: int  # receipts per run, one per transaction, without verification
    repeats: int  # best of this many runs, batched without verification
    tree_sizes: tuple[int, ...]
    proof_seconds: float  # per proof figure
    big_append_seconds: float  # one-per-transaction appends into the largest log
    costs: int  # receipts for the per-receipt cost breakdown
    evm_sequential: int  # record() one receipt at a time, each waited for
    evm_pipelined: int  # record() of this many at once
    evm_batches: tuple[tuple[int, int], ...]  # (receipts per record_batch, how many batches)
    evm_anchor: int  # receipts appended to the log and anchored in one checkpoint


DEFAULT = Settings(openssl_seconds=3, pool=10_000, verified=3_000, single=3_000, repeats=3,
                   tree_sizes=(10**3, 10**5, 10**6), proof_seconds=2.0, big_append_seconds=3.0,
                   costs=400, evm_sequential=300, evm_pipelined=1_000,
                   evm_batches=((1_000, 5), (10_000, 2)), evm_anchor=10_000)
QUICK = Settings(openssl_seconds=1, pool=1_200, verified=600, single=600, repeats=1,
                 tree_sizes=(10**3, 10**5), proof_seconds=0.3, big_append_seconds=0.5,
                 costs=100, evm_sequential=40, evm_pipelined=200,
                 evm_batches=((1_000, 1),), evm_anchor=1_000)


@dataclass
class Row:
    part: str
    name: str
    count: int
    seconds: float  # wall
    unit: str
    cpu: float | None = None  # this process's CPU seconds / wall seconds
    verifications: int = 0  # SM2 verifications done, where the row verifies receipts
    target: str = ""
    verdict: str = ""
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def sm2_rate(self) -> float | None:
        return self.verifications / self.seconds if self.verifications else None


@dataclass
class Result:
    meta: dict[str, Any]
    openssl_sign: float | None = None
    openssl_verify: float | None = None
    rows: list[Row] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)  # µs per receipt
    warnings: list[str] = field(default_factory=list)


class Clock:
    """Wall and CPU time of a block: `with Clock() as c: ...; c.wall, c.cpu`."""

    wall = cpu = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    @property
    def share(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else 0.0


# ==== openssl speed sm2 ==========================================================================

# " 256 bits SM2 (CurveSM2)   0.0004s   0.0003s   2627.3   3263.5": sign/s and verify/s last.
_SM2_LINE = re.compile(r"^\s*\d+\s+bits?\s+SM2\b.*\s([0-9.]+)\s+([0-9.]+)\s*$", re.MULTILINE)


def openssl_sm2(seconds: int) -> tuple[float, float, str]:
    """(sign/s, verify/s, version) of `openssl speed -seconds N sm2`."""
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl not found")
    version = subprocess.run([binary, "version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    proc = subprocess.run([binary, "speed", "-seconds", str(seconds), "sm2"],
                          capture_output=True, text=True, check=False, timeout=120)
    match = _SM2_LINE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"cannot parse `openssl speed sm2`: {proc.stdout[-500:]}"
                           f"{proc.stderr[-500:]}")
    return float(match.group(1)), float(match.group(2)), version


# ==== receipts ===================================================================================

_worker_keys: tuple[SM2PrivateKey, SM2PrivateKey] | None = None


def _init_worker(provider_der: bytes, consumer_der: bytes) -> None:
    global _worker_keys
    _worker_keys = (SM2PrivateKey.from_der(provider_der), SM2PrivateKey.from_der(consumer_der))


def _make_receipts(span: tuple[int, int]) -> list[SignedDocument]:
    """Delivery receipts number span[0] to span[1] - 1, issued and countersigned."""
    assert _worker_keys is not None
    provider, consumer = _worker_keys
    now = datetime.now(UTC)
    parties = Parties(PROVIDER, CONSUMER, "urn:uuid:6f1c2a5e-bench-agreement",
                      "sm3:" + sm3(b"agreement").hex())
    out = []
    for i in range(*span):
        content = Delivery(
            job_id=f"urn:uuid:{uuid.uuid4()}", job_request_digest="sm3:" + sm3(b"%d" % i).hex(),
            mode="sandbox", code_digest="sm3:" + sm3(b"code").hex(),
            input_digest="sm3:" + sm3(b"input").hex(),
            result_digest="sm3:" + sm3(b"result %d" % i).hex(), input_bytes=1_048_576,
            result_bytes=2_048, started_at=now, finished_at=now, outcome="succeeded", rows=42,
            checks=("aggregation-floor", "size-limit"), parameters=None)
        doc = issue(content, parties, provider, "provider", now, [])
        out.append(countersign(doc, consumer, now))
    return out


def make_pool(count: int, provider: SM2PrivateKey,
              consumer: SM2PrivateKey) -> list[SignedDocument]:
    """`count` complete receipts, made by as many processes as there are CPUs."""
    workers = max(1, os.cpu_count() or 1)
    step = max(50, count // (workers * 8))
    spans = [(start, min(start + step, count)) for start in range(0, count, step)]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(workers, _init_worker, (provider.to_der(), consumer.to_der())) as pool:
        return [doc for part in pool.map(_make_receipts, spans) for doc in part]


# ==== the database ===============================================================================

@contextlib.contextmanager
def database(postgres: bool, tmp: Path) -> Iterator[Database]:
    """A migrated database: a SQLite file in `tmp`, or a PostgreSQL database dropped after."""
    name = None
    if postgres:
        import psycopg

        name = f"ts_bench_ledger_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = PG_URL.format(name=name)
    else:
        url = f"sqlite:///{tmp / 'ledger.db'}"
    db = Database(url)
    try:
        db.migrate()
        yield db
    finally:
        db.dispose()
        if name is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset(db: Database) -> None:
    """Empty the log (one log per database)."""
    with db.transaction() as session:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            session.execute(text("TRUNCATE log_entries, log_nodes, log_heads, log_checkpoints"))
        else:
            for table in (LogEntry, LogNode, LogHead, LogCheckpoint):
                session.execute(delete(table))


def append_all(db: Database, log: TransparencyLog, docs: Sequence[SignedDocument], batch: int,
               verify: Callable[[SignedDocument], Receipt] | None) -> Clock:
    """Append `docs`, `batch` per transaction, into the log as it is."""
    with Clock() as clock:
        for start in range(0, len(docs), batch):
            with db.transaction() as session:
                log.append(session, docs[start:start + batch], SUBMITTER, datetime.now(UTC),
                           verify)
    return clock


def _bulk_insert_nodes(db: Database, nodes: list[merkle.NewNode], size: int) -> None:
    with db.transaction() as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            raw: Any = conn.connection.dbapi_connection
            with raw.cursor() as cur, \
                    cur.copy("COPY log_nodes (level, idx, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row(node)
        else:
            conn.exec_driver_sql("INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)",
                                 nodes)
        session.merge(LogHead(origin=ORIGIN, size=size, updated_at=datetime.now(UTC)))


def fill(db: Database, mem: merkle.MemoryTree, target: int, rng: random.Random) -> float:
    """Grow the log (and `mem`, in step with it) to `target` random leaves; the seconds."""
    began = time.perf_counter()
    size = mem.size
    while size < target:
        n = min(FILL_CHUNK, target - size)
        entries = [rng.randbytes(32) for _ in range(n)]
        existing = mem.lookup(merkle.append_many_plan(size, n))  # the same nodes as the log's
        added = merkle.nodes_added_many(size, [merkle.leaf_hash(e) for e in entries], existing)
        _bulk_insert_nodes(db, added, size + n)
        mem.append_many(entries)
        size += n
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE log_nodes"))
            conn.commit()
    return time.perf_counter() - began


# ==== the bench ==================================================================================

class Bench:
    def __init__(self, settings: Settings, result: Result, db: Database, tmp: Path) -> None:
        self.s = settings
        self.result = result
        self.db = db
        self.tmp = tmp
        self.rng = random.Random(9162)  # noqa: S311 (benchmark data, not secrets)
        self.provider = SM2PrivateKey.generate()
        self.consumer = SM2PrivateKey.generate()
        self.log = TransparencyLog(ORIGIN, ORIGIN, SM2PrivateKey.generate())
        self.keys = {PROVIDER: self.provider.public_key, CONSUMER: self.consumer.public_key}
        self.pool: list[SignedDocument] = []

    def row(self, row: Row) -> Row:
        self.result.rows.append(row)
        return row

    def verify(self, doc: SignedDocument) -> Receipt:
        return verify_receipt(doc, self.keys)

    # ---- part 1: appending ---------------------------------------------------------------

    def prepare(self) -> None:
        progress(f"issuing and countersigning {self.s.pool:,} receipts "
                 f"({os.cpu_count()} processes) ...")
        began = time.perf_counter()
        self.pool = make_pool(self.s.pool, self.provider, self.consumer)
        for doc in self.pool[:3]:  # well formed, both signatures good
            receipt = self.verify(doc)
            assert len(receipt.document.signatures) == SIGNATURES
        self.result.meta["receipts_prepared_in"] = f"{time.perf_counter() - began:.1f} s"
        self.result.meta["receipt_bytes"] = len(leaf_bytes(self.pool[0]))

    def costs(self) -> None:
        """Per-receipt costs of the steps of a verified append, µs (best of 3, one core)."""
        docs = self.pool[:self.s.costs]
        sig = docs[0].signatures[0]
        message = canonical_json(sig.protected(docs[0].digest))
        public = self.provider.public_key
        n = len(docs)

        def per(fn: Callable[[], object], calls: int) -> float:
            best = float("inf")
            for _ in range(3):
                gc.collect()
                with Clock() as clock:
                    fn()
                best = min(best, clock.wall)
            return best / calls * 1e6

        def sm2_verifies() -> None:
            for _ in range(n):
                public.verify(sig.value, message)

        self.result.costs = {
            "one SM2 verify (ours)": per(sm2_verifies, n),
            "verify_receipt (2 SM2 verify + digest + JSON)": per(
                lambda: [self.verify(d) for d in docs], n),
            "SignedDocument.intact (digest: JCS of the body + SM3)": per(
                lambda: [d.intact for d in docs], n),
            "leaf_bytes (JCS of the whole receipt)": per(
                lambda: [leaf_bytes(d) for d in docs], n),
            "SignedDocument.canonical(): intact + leaf bytes from one JCS of the body (what "
            "the log runs)": per(lambda: [(c.intact, c.to_bytes())
                                          for c in (d.canonical() for d in docs)], n),
        }

    def appends(self) -> None:
        s = self.s
        configs: list[tuple[int, bool, int, int]] = [  # batch, verify, receipts, repeats
            (1, True, s.verified, 1), (100, True, s.verified, 1), (1_000, True, s.verified, 1),
            (1, False, s.single, 1), (100, False, s.pool, s.repeats),
            (1_000, False, s.pool, s.repeats)]
        checked = False
        for batch, verifying, count, repeats in configs:
            docs = self.pool[:count]
            label = (f"append, {'1 receipt' if batch == 1 else f'{batch:,} receipts'} per "
                     f"transaction, {'with' if verifying else 'without'} verification")
            progress(f"{label}: {count:,} receipts x {repeats} ...")
            best: Clock | None = None
            for _ in range(repeats):
                reset(self.db)
                gc.collect()
                clock = append_all(self.db, self.log, docs, batch,
                                   self.verify if verifying else None)
                with self.db.read() as session:
                    assert self.log.size(session) == count
                    if not checked:  # the log's tree is RFC 9162's over the receipts
                        mem = merkle.MemoryTree()
                        mem.append_many(leaf_bytes(d) for d in docs)
                        assert self.log.root(session, count) == mem.root()
                        checked = True
                if best is None or clock.wall < best.wall:
                    best = clock
            assert best is not None
            row = Row("1 log", label, count, best.wall, "receipts/s", best.share,
                      verifications=SIGNATURES * count if verifying else 0,
                      detail=f"{-(-len(docs) // batch):,} transactions"
                             + (f", best of {repeats}" if repeats > 1 else ""))
            self.row(row)
            if verifying:
                row.target = f"SM2 verif. ≥ {VERIFY_TARGET:g}× OpenSSL"
                if self.result.openssl_verify and row.sm2_rate is not None:
                    ok = row.sm2_rate >= VERIFY_TARGET * self.result.openssl_verify
                    row.verdict = "PASS" if ok else "BELOW"
            elif batch > 1:
                row.target = f"≥ {APPEND_TARGET:,}/s"
                row.verdict = "PASS" if row.rate >= APPEND_TARGET else "BELOW"
            if self.db.engine.dialect.name == "sqlite" and best.share < BUSY:
                self.result.warnings.append(f"{label}: this process got {best.share:.0%} of "
                                            "the wall clock (something else ran)")

    # ---- part 2: inclusion proofs --------------------------------------------------------

    def proofs(self) -> None:
        reset(self.db)
        mem = merkle.MemoryTree()
        for size in self.s.tree_sizes:
            progress(f"filling the log to {size:,} leaves ...")
            took = fill(self.db, mem, size, self.rng)
            with self.db.read() as session:
                assert self.log.size(session) == size
                assert self.log.root(session, size) == mem.root(size)
            self._proofs_at(size, mem, took)
        self._append_into_big_log(mem.size)

    def _proofs_at(self, size: int, mem: merkle.MemoryTree, fill_seconds: float) -> None:
        duration = self.s.proof_seconds
        name = f"{size:,} leaves"
        progress(f"proofs at {name} ...")
        indices = [self.rng.randrange(size) for _ in range(4096)]

        count = 0
        with self.db.read() as session, Clock() as clock:
            deadline = time.perf_counter() + duration
            while count < 3 or time.perf_counter() < deadline:
                i = indices[count % len(indices)]
                proof = self.log.inclusion(session, i, size)
                if count < 50:
                    assert proof == mem.inclusion_proof(i, size)
                count += 1
        self.row(Row("2 proofs", f"inclusion proof from the DB log, {name}", count, clock.wall,
                     "proofs/s", clock.share, detail=f"log filled in {fill_seconds:.1f} s "
                     "(log_nodes bulk insert)"))

        count = 0
        gc.collect()
        with Clock() as clock:
            deadline = time.perf_counter() + duration
            while time.perf_counter() < deadline:
                for i in indices[:256]:
                    mem.inclusion_proof(i, size)
                count += 256
        self.row(Row("2 proofs", f"inclusion proof from MemoryTree, {name}", count, clock.wall,
                     "proofs/s", clock.share))

        root = mem.root(size)
        cases = [(mem.leaf_hash(i), i, mem.inclusion_proof(i, size)) for i in indices[:1024]]
        leaf, i, proof = cases[0]
        if proof:  # the check does refuse a wrong proof
            try:
                merkle.verify_inclusion(leaf, i, size, [bytes(32), *proof[1:]], root)
                raise AssertionError("a tampered proof verified")
            except ProofInvalid:
                pass
        verify_inclusion = merkle.verify_inclusion
        count = 0
        gc.collect()
        with Clock() as clock:
            deadline = time.perf_counter() + duration
            while time.perf_counter() < deadline:
                for leaf, i, proof in cases:
                    verify_inclusion(leaf, i, size, proof, root)
                count += len(cases)
        row = self.row(Row("2 proofs", f"inclusion proof verification (SM3), {name}", count,
                           clock.wall, "proofs/s", clock.share,
                           detail=f"{len(cases[0][2])} hashes per proof"))
        if size == PROOF_TARGET_SIZE:
            row.target = f"≥ {PROOF_TARGET:,}/s"
            row.verdict = "PASS" if row.rate >= PROOF_TARGET else "BELOW"

    def _append_into_big_log(self, size: int) -> None:
        """Receipts appended into the largest log, as a long-lived node's log would be."""
        name = f"{size:,} leaves"
        progress(f"appending into the log of {name} ...")
        docs = iter(self.pool)
        count, most = 0, len(self.pool) - 1_000
        with Clock() as clock:
            deadline = time.perf_counter() + self.s.big_append_seconds
            while count < 3 or (time.perf_counter() < deadline and count < most):
                with self.db.transaction() as session:
                    self.log.append(session, [next(docs)], SUBMITTER, datetime.now(UTC))
                count += 1
        self.row(Row("2 proofs", f"append into the log of {name}, 1 receipt per transaction, "
                     "without verification", count, clock.wall, "receipts/s", clock.share))
        batch = [next(docs) for _ in range(1_000)]
        clock = append_all(self.db, self.log, batch, len(batch), None)
        self.row(Row("2 proofs", f"append into the log of {name}, 1,000 receipts per "
                     "transaction, without verification", len(batch), clock.wall, "receipts/s",
                     clock.share))

    # ---- part 3: the chain ---------------------------------------------------------------

    def chain(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.anvil import ANVIL_VERSION, Anvil
        from trustspace.connector.evm_ledger import chain_entry, chain_id

        progress("starting Anvil and deploying ReceiptLedger ...")
        anvil = Anvil(self.tmp)
        anvil.start()
        try:
            key = anvil.funded_key()
            ledger = EvmLedger(anvil.url, deploy(anvil.url, key), key)
            self.result.meta["anvil"] = ANVIL_VERSION
            s = self.s
            docs = iter(self.pool)
            rows: list[Row] = []

            progress(f"record: {s.evm_sequential} receipts, one transaction each, waited for "
                     "one by one ...")
            entries = [chain_entry(next(docs), SUBMITTER) for _ in range(s.evm_sequential)]
            gas = 0
            with Clock() as clock:
                for entry in entries:
                    (tx,) = ledger.record([entry])
                    gas += tx.gas_used or 0
            rows.append(self.row(Row(
                "3 chain", "record, 1 transaction per receipt, each waited for", len(entries),
                clock.wall, "receipts/s", clock.share,
                detail=f"gas {gas // len(entries):,}/receipt")))

            progress(f"record: {s.evm_pipelined} receipts, one transaction each, sent at "
                     "once ...")
            entries = [chain_entry(next(docs), SUBMITTER) for _ in range(s.evm_pipelined)]
            with Clock() as clock:
                txs = ledger.record(entries)
            gas = sum(tx.gas_used or 0 for tx in txs)
            blocks = len({tx.block_number for tx in txs})
            rows.append(self.row(Row(
                "3 chain", f"record, 1 transaction per receipt, {len(entries):,} sent at once",
                len(entries), clock.wall, "receipts/s", clock.share,
                detail=f"gas {gas // len(entries):,}/receipt, {blocks:,} blocks")))
            baseline = max(r.rate for r in rows)

            progress("leaf hashes of the receipts (as the log computes them on append) ...")
            hashes = [merkle.leaf_hash(leaf_bytes(d)) for d in self.pool]
            for per_batch, batches in s.evm_batches:
                if per_batch > len(self.pool):
                    continue
                for from_hashes in (False, True):
                    self._record_batches(ledger, chain_id, per_batch, batches,
                                         hashes if from_hashes else None, baseline)

            self._anchor(ledger, chain_id, baseline)
        finally:
            anvil.stop()

    def _record_batches(self, ledger: EvmLedger, chain_id: Callable[[str], bytes],
                        per_batch: int, batches: int, hashes: list[bytes] | None,
                        baseline: float) -> None:
        """`batches` x record_batch of `per_batch` receipts, each timed from the receipts (or,
        given `hashes`, from their leaf hashes) through the MemoryTree root to the mined tx."""
        source = "the receipts' leaf hashes" if hashes else "the receipts"
        progress(f"record_batch: {batches} x {per_batch:,} receipts, root from {source} ...")
        pool, n = self.pool, len(self.pool)
        total = root_s = chain_s = 0.0
        gas = 0
        for k in range(batches):  # rotated: each batch has a root of its own
            shift = (k * 7919 + (3571 if hashes else 0)) % n
            order = [(shift + j) % n for j in range(per_batch)]
            with Clock() as root_clock:
                tree = merkle.MemoryTree()
                if hashes is None:
                    tree.append_many(leaf_bytes(pool[j]) for j in order)
                else:
                    for j in order:
                        tree.append_leaf_hash(hashes[j])
                root = tree.root()
                first, last = (chain_id(str(pool[j].body["id"])) for j in (order[0], order[-1]))
            with Clock() as tx_clock:
                tx = ledger.record_batch(root, per_batch, first, last)
            root_s += root_clock.wall
            chain_s += tx_clock.wall
            total += root_clock.wall + tx_clock.wall
            gas += tx.gas_used or 0
        count = per_batch * batches
        self._batched(Row(
            "3 chain", f"record_batch, 1 Merkle root per {per_batch:,} receipts (root from "
            f"{source})", count, total, "receipts/s",
            detail=f"{batches} tx; root {root_s / batches * 1e3:.1f} ms + tx "
                   f"{chain_s / batches * 1e3:.0f} ms per batch; chain side alone "
                   f"{count / chain_s:,.0f}/s; gas {gas / count:,.1f}/receipt"), baseline)

    def _anchor(self, ledger: EvmLedger, chain_id: Callable[[str], bytes], baseline: float) -> None:
        n = min(self.s.evm_anchor, len(self.pool))
        progress(f"anchor: {n:,} receipts appended to the log, a checkpoint signed and "
                 "anchored ...")
        reset(self.db)
        docs = self.pool[:n]
        with Clock() as clock:
            appended = append_all(self.db, self.log, docs, 1_000, None)
            with self.db.transaction() as session:
                checkpoint = self.log.checkpoint(session, datetime.now(UTC))
                size, root, note = checkpoint.size, bytes.fromhex(checkpoint.root), checkpoint.note
            with Clock() as tx_clock:
                tx = ledger.anchor(chain_id(ORIGIN), size, root, sm3(note.encode()))
        assert size == n
        self._batched(Row(
            "3 chain", f"anchor 1 signed checkpoint over {n:,} receipts (log append, "
            "1,000 per transaction, without verification + checkpoint + tx)", n, clock.wall,
            "receipts/s", clock.share,
            detail=f"append {appended.wall:.2f} s, checkpoint + tx "
                   f"{(clock.wall - appended.wall) * 1e3:.0f} ms (tx {tx_clock.wall * 1e3:.0f} "
                   f"ms, gas {tx.gas_used or 0:,})"), baseline)

    def _batched(self, row: Row, baseline: float) -> None:
        ratio = row.rate / baseline
        row.target = f"≥ {CHAIN_TARGET}× 1 tx/receipt"
        row.verdict = "PASS" if ratio >= CHAIN_TARGET else "BELOW"
        row.detail = f"{ratio:,.0f}× the best 1-tx-per-receipt row; {row.detail}"
        self.row(row)


# ==== report =====================================================================================

def _num(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def render(result: Result) -> str:
    meta = result.meta
    ossl = result.openssl_verify
    out = [f"# Ledger benchmark ({meta['date']}, nproc {meta['nproc']}, {meta['cpu']})", ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k not in ("date", "nproc", "cpu")]
    out += ["", f"`openssl speed -seconds {meta['openssl_seconds']} sm2`: "
            f"{_num(result.openssl_sign)} sign/s, **{_num(ossl)} verify/s** (one core, per CPU "
            "second)", "",
            "| part | measurement | n | per second | SM2 verif./s | OpenSSL SM2 verify/s | "
            "÷ OpenSSL | CPU | target | result | detail |",
            "|---|---|--:|--:|--:|--:|--:|--:|---|---|---|"]
    for r in result.rows:
        figure = r.sm2_rate if r.sm2_rate is not None else r.rate
        ratio = f"{figure / ossl:.2f}×" if ossl else "—"
        out.append(f"| {r.part} | {r.name} | {r.count:,} | {_num(r.rate)} {r.unit} | "
                   f"{_num(r.sm2_rate)} | {_num(ossl)} | {ratio} | "
                   f"{'—' if r.cpu is None else f'{r.cpu:.2f}'} | {r.target} | "
                   f"{r.verdict or '—'} | {r.detail} |")
    if result.costs:
        out += ["", "Per receipt, this process (µs):", "", "| step | µs |", "|---|--:|"]
        out += [f"| {k} | {v:,.0f} |" for k, v in result.costs.items()]
        if ossl:
            out.append(f"| one SM2 verify, `openssl speed` | {1e6 / ossl:,.0f} |")
    out += ["", "SM2 verif./s = 2 × receipts/s (both signatures of each delivery receipt are "
            "verified on append). ÷ OpenSSL = the row's SM2 verifications/s (rows without them: "
            "its rate) over `openssl speed sm2` verify/s. Rates are per wall-clock second of "
            "this single-threaded process; CPU = its CPU time / wall time (≤ 1 core; a "
            "PostgreSQL server's or Anvil's CPU is not in it)."]
    out += [f"warning: {w}" for w in result.warnings]
    return "\n".join(out)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _database_version(db: Database) -> str:
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            return f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar()}"
    with db.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    return (f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL, wal_autocheckpoint="
            f"{pages:,} pages, file in a temp dir)")


def run(settings: Settings, *, postgres: bool, anvil: bool, quick: bool) -> Result:
    began = time.perf_counter()
    result = Result(meta={
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu_model(), "mode": "quick" if quick else "default",
        "python": platform.python_version(), "openssl_seconds": settings.openssl_seconds,
        "sqlalchemy": _version("sqlalchemy"), "web3": _version("web3"),
        "coincurve": _version("coincurve"),
    })
    progress(f"openssl speed -seconds {settings.openssl_seconds} sm2 ...")
    try:
        sign, verify, version = openssl_sm2(settings.openssl_seconds)
        result.openssl_sign, result.openssl_verify = sign, verify
        result.meta["openssl"] = version
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        result.warnings.append(str(exc))
    with tempfile.TemporaryDirectory(prefix="ts-bench-ledger-") as tmp, \
            database(postgres, Path(tmp)) as db:
        result.meta["database"] = _database_version(db)
        bench = Bench(settings, result, db, Path(tmp))
        bench.prepare()
        bench.costs()
        bench.appends()
        bench.proofs()
        if anvil:
            bench.chain()
    result.meta["elapsed"] = f"{time.perf_counter() - began:.0f} s"
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test, about 20 s")
    parser.add_argument("--postgres", action="store_true",
                        help="PostgreSQL on 127.0.0.1:5432 (user postgres, a database created "
                             "and dropped) instead of SQLite")
    parser.add_argument("--no-anvil", action="store_true", help="skip part 3 (the EVM chain)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    result = run(QUICK if args.quick else DEFAULT, postgres=args.postgres,
                 anvil=not args.no_anvil, quick=args.quick)
    print(render(result))
    if args.json is not None:
        payload = {**asdict(result),
                   "rows": [{**asdict(r), "rate": r.rate, "sm2_rate": r.sm2_rate}
                            for r in result.rows]}
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

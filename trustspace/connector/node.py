"""The running node: its settings, identity key, database, trust anchor and clock, built once by
the application factory and shared by every request handler."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select

from trustspace.contracts.tables import OutboxMessage
from trustspace.crypto import SM2PrivateKey, SM2PublicKey, verify_document
from trustspace.db import Database
from trustspace.ledger.log import TransparencyLog
from trustspace.registry.credentials import Membership, verify_membership

from .config import Settings
from .httpsig import MemoryNonceStore
from .tables import NodeState

Clock = Callable[[], datetime]
_TLS = httpx.create_ssl_context()  # built once: it loads the CA bundle (~20 ms)
REVOCATIONS_TYPE = "trustspace.revocations"
MEMBERSHIP_STATE = "membership"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RevocationCache:
    """The authority's signed list of revoked credential ids, refetched when older than ttl."""

    authority_url: str | None
    authority_key: SM2PublicKey
    ttl: float
    timeout: float
    revoked: frozenset[str] = frozenset()
    regulators: tuple[SM2PublicKey, ...] = ()
    fetched: float = -1.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # While the authority is unreachable, a list this old is still used; older, requests are
    # refused (fail closed) rather than trusting credentials that may have been revoked.
    max_stale: float = 300.0

    def _fresh(self, limit: float) -> bool:
        return self.fetched >= 0 and time.monotonic() - self.fetched < limit

    async def refresh_if_stale(self) -> None:
        if self.authority_url is None or self._fresh(self.ttl):
            return
        async with self._lock:
            if self._fresh(self.ttl):
                return
            try:
                async with httpx.AsyncClient(timeout=self.timeout, verify=_TLS) as client:
                    response = await client.get(f"{self.authority_url}/registry/revocations")
                response.raise_for_status()
                doc = verify_document(response.content, [self.authority_key],
                                      expected_type=REVOCATIONS_TYPE)
            except Exception:
                if self._fresh(max(self.max_stale, self.ttl)):
                    return  # keep serving on the last list for a bounded time
                raise
            self.revoked = frozenset(doc.body["revoked"])
            self.regulators = tuple(SM2PublicKey.from_pem(str(r["publicKey"]))
                                    for r in doc.body.get("regulators", []))
            self.fetched = time.monotonic()


class OutboxLike(Protocol):
    def kick(self) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


class Outbox(OutboxLike, Protocol):
    def send_now(self, rows: Sequence[OutboxMessage]) -> None: ...


class _NoOutbox:
    """Until the app wires the real sender in."""

    def kick(self) -> None:
        pass

    def send_now(self, rows: Sequence[OutboxMessage]) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class Node:
    def __init__(self, settings: Settings, *, key_password: bytes | None = None,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        if key_password is None and settings.key_password_env:
            value = os.environ.get(settings.key_password_env)
            if not value:
                raise RuntimeError(f"the node key is protected: set {settings.key_password_env}")
            key_password = value.encode()
        self.key = SM2PrivateKey.from_pem(settings.path(settings.key_file).read_bytes(),
                                          key_password)
        self.authority_key = SM2PublicKey.from_pem(
            settings.path(settings.authority_key_file).read_bytes())
        self.clock = clock
        self.db = Database(settings.db_url)
        # Nonces are kept in memory; replays across a restart are refused instead by the rule
        # that a request must be signed after this process started (auth.verify_signed).
        self.nonces = MemoryNonceStore(clock=clock)
        # Whole seconds, like RFC 9421 `created`: a process cannot restart within the second
        # it died in (start-up alone takes longer), so nothing signed before a restart passes.
        self.started_at = clock().replace(microsecond=0)
        self.revocations = RevocationCache(settings.authority_url, self.authority_key,
                                           settings.revocation_ttl_seconds,
                                           settings.http_timeout_seconds)
        self.max_skew = timedelta(seconds=settings.clock_skew_seconds)
        self.outbox: Outbox = _NoOutbox()
        self.receipts: OutboxLike = _NoOutbox()  # the receipt worker, once the app starts
        self.witness_pusher: OutboxLike = _NoOutbox()  # on the authority
        self.jobs: OutboxLike = _NoOutbox()  # the in-process job worker(s)
        self._membership: Membership | None = None
        self.catalog_generation = 0
        self.catalog_cache: dict[str, Any] = {}
        self.credential_cache: dict[str, Membership] = {}  # header value -> verified credential

    @property
    def is_authority(self) -> bool:
        return self.settings.kind == "authority"

    @property
    def authority_id(self) -> str:
        """The participant id the authority signs as (only meaningful on the authority)."""
        return f"urn:trustspace:authority:{self.settings.name}"

    def state(self, key: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            row = session.get(NodeState, key)
            return None if row is None else row.value

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            session.merge(NodeState(key=key, value=value, updated_at=self.clock()))
        if key == MEMBERSHIP_STATE:
            self._membership = None
            self.catalog_changed()  # the catalog names this node's participant id

    def membership(self) -> Membership | None:
        """This node's own membership credential, if it has one. Verified once, then kept:
        later calls re-check only its validity window (the clock moves, the document does
        not)."""
        cached = self._membership
        if cached is None:
            doc = self.state(MEMBERSHIP_STATE)
            if doc is None:
                return None
            cached = verify_membership(doc, self.authority_key, now=self.clock())
            self._membership = cached
        now = self.clock()
        if not cached.valid_from <= now < cached.valid_until:
            self._membership = None
            return verify_membership(cached.document, self.authority_key, now=now)  # raises
        return cached

    def catalog_changed(self) -> None:
        """Products or this node's identity changed: rendered catalogs are stale."""
        self.catalog_generation += 1

    @functools.cached_property
    def log(self) -> TransparencyLog:
        """This node's transparency log (the data space's shared log on the authority)."""
        origin = urlsplit(self.settings.public_url).netloc + "/ledger"
        return TransparencyLog(origin, origin, self.key)

    def regulator_keys(self) -> tuple[SM2PublicKey, ...]:
        """The data space's regulators, to whom receipts' confidential parts are sealed."""
        if self.is_authority:
            from trustspace.registry.tables import Member

            with self.db.read() as session:
                return tuple(SM2PublicKey.from_pem(m.public_key_pem) for m in session.scalars(
                    select(Member).where(Member.status == "approved")) if "regulator" in m.roles)
        return self.revocations.regulators

    def is_revoked(self, credential_id: str) -> bool:
        if self.is_authority:
            from trustspace.registry.tables import Member

            with self.db.read() as session:
                status = session.scalar(select(Member.status).where(
                    Member.credential_id == credential_id))
            return status == "revoked"
        return credential_id in self.revocations.revoked

"""The revocation list cache: refetched when stale, used for a bounded time while the authority is
unreachable (a real connection refused on loopback), then fail closed."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.nodes import free_port
from trustspace.connector.node import RevocationCache
from trustspace.crypto import SM2PrivateKey


def test_unreachable_authority_fails_closed_after_the_grace_period() -> None:
    cache = RevocationCache(f"http://127.0.0.1:{free_port()}", SM2PrivateKey.generate().public_key,
                            ttl=0.0, timeout=2.0)
    with pytest.raises(Exception, match="(?i)connect"):
        asyncio.run(cache.refresh_if_stale())  # never fetched: nothing to fall back on
    cache.revoked, cache.fetched = frozenset({"urn:uuid:x"}), time.monotonic()
    asyncio.run(cache.refresh_if_stale())  # within the grace period: keeps the last list
    assert cache.revoked == {"urn:uuid:x"}
    cache.fetched = time.monotonic() - cache.max_stale - 1
    with pytest.raises(Exception, match="(?i)connect"):
        asyncio.run(cache.refresh_if_stale())

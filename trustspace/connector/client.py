"""Outgoing node-to-node requests: SM2-signed (RFC 9421), carrying this node's credential."""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass
from typing import Any

import httpx

from trustspace.crypto import canonical_json
from trustspace.registry.credentials import CredentialInvalid

from .auth import encode_credential
from .errors import ApiError
from .httpsig import CREDENTIAL_HEADER, SM2RequestAuth
from .node import MEMBERSHIP_STATE, Node

# One TLS context for every client this node makes: building one loads the CA bundle (~20 ms).
TLS = httpx.create_ssl_context()


class RemoteError(Exception):
    """The other node refused or failed; carries its status and machine-readable reason."""

    def __init__(self, url: str, status: int, reason: str, detail: str,
                 body: Any = None) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        self.detail = detail
        self.body = body  # the error body, parsed (None if it was not JSON)
        super().__init__(f"{url}: {status} {reason}: {detail}")


def _reason(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "error", response.text[:200]
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"]), str(body.get("detail", ""))
        if "code" in body:  # a DSP error body
            return str(body["code"]), "; ".join(map(str, body.get("reason", [])))
    return "error", response.text[:200]


def signed_client(node: Node, credential: dict[str, Any] | None) -> httpx.AsyncClient:
    """An HTTP client that signs every request with the node's key (RFC 9421) and, given a
    credential, carries it in the covered Trustspace-Credential header."""
    headers = {CREDENTIAL_HEADER: encode_credential(credential)} if credential else {}
    return httpx.AsyncClient(
        auth=SM2RequestAuth(node.key, extra_components=tuple(headers)), headers=headers,
        verify=TLS, timeout=node.settings.http_timeout_seconds)


@dataclass
class _Shared:
    membership: object  # the Node.membership() object the credential header was taken from
    loop: asyncio.AbstractEventLoop  # httpx's pooled connections belong to one event loop
    client: httpx.AsyncClient


_SHARED: weakref.WeakKeyDictionary[Node, _Shared] = weakref.WeakKeyDictionary()
_CLOSING: set[asyncio.Task[None]] = set()  # old clients closing (tasks must be referenced)


def shared_client(node: Node) -> httpx.AsyncClient:
    """The node's long-lived, keep-alive client carrying its membership credential, for the
    outbox and every NodeClient: building a client per call cost ~0.7 ms CPU and a TCP
    connect (docs/performance.md, "Contract negotiation"). Rebuilt when the credential
    changes (`Node.membership()` returns another object); the database is read only then."""
    membership = node.membership()  # cached by the node, reset when it changes
    loop = asyncio.get_running_loop()
    shared = _SHARED.get(node)
    if shared is not None and shared.membership is membership and shared.loop is loop:
        return shared.client
    if shared is not None and shared.loop is loop and not loop.is_closed():
        closing = loop.create_task(shared.client.aclose())  # requests in flight finish first
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
    client = signed_client(node, node.state(MEMBERSHIP_STATE) if membership else None)
    _SHARED[node] = _Shared(membership, loop, client)
    return client


async def close_shared_client(node: Node) -> None:
    shared = _SHARED.pop(node, None)
    if shared is not None and shared.loop is asyncio.get_running_loop():
        await shared.client.aclose()


class NodeClient:
    def __init__(self, node: Node, *, credential: dict[str, Any] | None = None) -> None:
        """`credential=None`: this node's membership credential (the node's shared client);
        `{}`: none (enrolment)."""
        self.node = node
        self._own = credential is not None
        if credential is not None:
            self._client = signed_client(node, credential)
            return
        try:
            self._client = shared_client(node)
        except CredentialInvalid:  # expired: send it all the same; the peer says what is wrong
            self._own = True
            self._client = signed_client(node, node.state(MEMBERSHIP_STATE))

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own:
            await self._client.aclose()

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        content = canonical_json(body) if body is not None else b""
        try:
            response = await self._client.request(
                method, url, content=content,
                headers={"content-type": "application/json"} if body is not None else {})
        except httpx.HTTPError as exc:
            raise ApiError(502, "remote-unreachable", f"{url}: {exc}") from None
        if response.status_code >= 400:
            reason, detail = _reason(response)
            try:
                body = response.json()
            except ValueError:
                body = None
            raise RemoteError(url, response.status_code, reason, detail, body)
        if not response.content:
            return None
        return json.loads(response.content)

    async def get(self, url: str) -> Any:
        return await self.request("GET", url)

    async def post(self, url: str, body: Any) -> Any:
        return await self.request("POST", url, body)

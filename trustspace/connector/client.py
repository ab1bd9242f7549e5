"""Outgoing node-to-node requests: SM2-signed (RFC 9421), carrying this node's credential."""

from __future__ import annotations

import json
from typing import Any

import httpx

from trustspace.crypto import canonical_json

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


class NodeClient:
    def __init__(self, node: Node, *, credential: dict[str, Any] | None = None) -> None:
        """`credential=None`: this node's membership credential; `{}`: none (enrolment)."""
        self.node = node
        self._client = signed_client(
            node, credential if credential is not None else node.state(MEMBERSHIP_STATE))

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
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

"""Who is calling: the three faces of the node authenticate differently.

- protocol API: another node — an RFC 9421 SM2-signed request carrying its membership
  credential (`Trustspace-Credential` header), checked against the trust anchor;
- management API: this node's operator — a bearer token (only its SM3 digest is stored);
- audit API: a regulator — a signed request whose credential carries the regulator role.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from trustspace.crypto import SM2PublicKey, sm3
from trustspace.registry.credentials import (
    CredentialInvalid,
    Membership,
    check_standing,
    verify_membership,
)

from .errors import ApiError
from .httpsig import (
    CREDENTIAL_HEADER,
    NonceStoreFull,
    RequestSignatureError,
    asgi_request_url,
    verify_request,
)
from .node import Node

# Refusals that mean "we do not know who you are" are 401; "we know, and you may not" is 403.
_FORBIDDEN = {"wrong-role"}


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def operator(request: Request) -> Node:
    """Dependency of the management API: the operator's bearer token."""
    node = node_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing-token", "send Authorization: Bearer <operator token>")
    digest = "sm3:" + sm3(token.strip().encode()).hex()
    if not hmac.compare_digest(digest, node.settings.operator_token_digest):
        raise ApiError(401, "bad-token", "the operator token is not valid for this node")
    return node


def encode_credential(doc_json: dict[str, object]) -> str:
    from trustspace.crypto import canonical_json

    return base64.urlsafe_b64encode(canonical_json(doc_json)).rstrip(b"=").decode()


def decode_credential(value: str) -> dict[str, object]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(401, "malformed-credential", f"credential header: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(401, "malformed-credential", "credential header is not a JSON object")
    return doc


@dataclass(frozen=True)
class Caller:
    membership: Membership
    body: bytes

    @property
    def participant_id(self) -> str:
        return self.membership.participant_id


async def verify_signed(request: Request, resolve: Callable[[str], SM2PublicKey | None],
                        required: tuple[str, ...]) -> bytes:
    """Check the RFC 9421 signature of this request; return its body."""
    body, check = await _signature_check(request, resolve, required)
    await run_in_threadpool(check)
    return body


async def _signature_check(request: Request, resolve: Callable[[str], SM2PublicKey | None],
                           required: tuple[str, ...]) -> tuple[bytes, Callable[[], None]]:
    """The request's body, and a function that checks its RFC 9421 signature (raising
    ApiError) to run in a worker thread: it does an SM2 verification."""
    node = node_of(request)
    body = await request.body()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    method, url, now = request.method, asgi_request_url(request.scope), node.clock()

    def check() -> None:
        try:
            verified = verify_request(method, url, headers, body, resolve, node.nonces, now=now,
                                      max_skew=node.max_skew, required_components=required)
        except RequestSignatureError as exc:
            raise ApiError(401, exc.reason, exc.detail) from None
        except NonceStoreFull:
            raise ApiError(503, "busy", "replay protection is saturated; retry later") from None
        if verified.created < node.started_at:
            # Nonces seen before a restart are forgotten, so a request signed before this
            # process started could be a replay: refuse it (senders sign every attempt afresh).
            raise ApiError(401, "stale",
                           "signed before this node started; sign the request again")

    return body, check


_CREDENTIAL_CACHE_SIZE = 1024


def _credential(node: Node, header: str, roles: tuple[str, ...]) -> Membership:
    """Verify a credential header, remembering ones verified before: the signature and shape
    of the same bytes do not change, so a hit re-checks only what can (the validity window,
    revocation, the role). Only credentials that verified are remembered."""
    cache = node.credential_cache
    known = cache.get(header)
    if known is None:
        known = verify_membership(decode_credential(header), node.authority_key,
                                  now=node.clock(), is_revoked=node.is_revoked,
                                  required_role=roles or None)
        if len(cache) >= _CREDENTIAL_CACHE_SIZE:
            cache.pop(next(iter(cache)))  # the oldest entry
        cache[header] = known
        return known
    check_standing(known, now=node.clock(), is_revoked=node.is_revoked,
                   required_role=roles or None)
    return known


@dataclass(frozen=True)
class UncheckedCall:
    """A member's request whose credential has been checked but not yet its signature:
    `verify()` does that (raising ApiError, as `member()` would) and only then gives the body.
    For handlers that run a transaction next: the check and the transaction share one
    worker-thread call instead of two (docs/performance.md, "Contract negotiation")."""

    membership: Membership
    _body: bytes
    _check: Callable[[], None]

    def verify(self) -> Caller:
        self._check()
        return Caller(self.membership, self._body)


async def _unchecked(request: Request, roles: tuple[str, ...]) -> UncheckedCall:
    node = node_of(request)
    header = request.headers.get(CREDENTIAL_HEADER)
    if not header:
        raise ApiError(401, "missing-credential",
                       "node-to-node requests carry a Trustspace-Credential header")
    try:
        await node.revocations.refresh_if_stale()
    except Exception as exc:  # the authority is down: fail closed, say so
        raise ApiError(503, "revocation-unavailable", f"cannot check revocation: {exc}") \
            from None
    try:
        membership = _credential(node, header, roles)
    except CredentialInvalid as exc:
        status = 403 if exc.reason in _FORBIDDEN else 401
        raise ApiError(status, exc.reason, exc.detail) from None
    body, check = await _signature_check(
        request, lambda kid: membership.public_key if kid == membership.key_id else None,
        ("content-digest", CREDENTIAL_HEADER))
    return UncheckedCall(membership, body, check)


def member(*roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """Dependency factory: a signed request from a member holding one of `roles`."""

    async def dependency(request: Request) -> Caller:
        call = await _unchecked(request, roles)
        return await run_in_threadpool(call.verify)

    return dependency


def unchecked_member(*roles: str) -> Callable[[Request], Awaitable[UncheckedCall]]:
    """Like `member`, but the handler must call `verify()` (in its worker thread) before it
    reads the body or does anything on the caller's behalf."""

    async def dependency(request: Request) -> UncheckedCall:
        return await _unchecked(request, roles)

    return dependency

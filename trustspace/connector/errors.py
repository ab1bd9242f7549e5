"""Every refusal the HTTP faces give: a status, a machine-readable reason and a detail.

Catalog endpoints answer in the Dataspace Protocol's CatalogError shape; everything else as
`{"error": reason, "detail": detail}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustspace.registry.authority import RegistryError


class ApiError(Exception):
    def __init__(self, status: int, reason: str, detail: str = "", **extra: Any) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        self.extra = extra  # more machine-readable fields of the error body
        super().__init__(f"{status} {reason}: {detail}")


def _is_dsp(path: str) -> bool:
    return path.startswith("/catalog")


def error_body(path: str, reason: str, detail: str) -> dict[str, Any]:
    if _is_dsp(path):
        from trustspace.registry.dsp import catalog_error

        return catalog_error(reason, [detail] if detail else [reason])
    return {"error": reason, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({**error_body(request.url.path, exc.reason, exc.detail),
                             **exc.extra}, status_code=exc.status)

    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, exc.reason, exc.detail),
                            status_code=exc.status)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(request.url.path, "malformed", detail), status_code=400)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "error")
        return JSONResponse(error_body(request.url.path, reason, str(exc.detail)),
                            status_code=exc.status_code)

    # Starlette types handlers as taking any Exception; each here gets only its own class.
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RegistryError, registry_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413 before a handler
    buffers them (Content-Length checked up front, chunked bodies counted as they arrive).
    `larger` gives the paths that fully match a pattern a limit of their own: a homomorphic
    job's request and result carry megabytes of ciphertexts."""

    def __init__(self, app: ASGIApp, limit: int, larger: Mapping[str, int] | None = None
                 ) -> None:
        self.app = app
        self.limit = limit
        self.larger = [(re.compile(pattern), size) for pattern, size in (larger or {}).items()]

    def _limit(self, path: str) -> int:
        return next((size for pattern, size in self.larger if pattern.fullmatch(path)),
                    self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(scope, send, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        detail = f"request body larger than {limit} bytes"
        response = JSONResponse(error_body(scope.get("path", ""), "body-too-large", detail),
                                status_code=413)
        await response(scope, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}

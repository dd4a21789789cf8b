"""Pure ASGI middleware: request metrics, API-key auth, the body size limit, shutdown answers.

Why pure ASGI (not ``BaseHTTPMiddleware``): these run on every request of a server that takes
thousands per training step; they must not buffer bodies, and they must reject a request
(401, 413) *before* its body is read or parsed.

Example::

    >>> from server.middleware import bearer_ok
    >>> bearer_ok(b"Bearer s3cret", b"s3cret"), bearer_ok(b"Bearer nope", b"s3cret")
    (True, False)
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import PayloadTooLarge, ShuttingDown, Unauthorized, error_response
from server.metrics import Metrics

#: paths that never need the API key (probes, scrapers, the API description)
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                        "/redoc"})


def bearer_ok(header: bytes, key: bytes) -> bool:
    """Constant-time check of an ``Authorization: Bearer <key>`` header value."""
    scheme, _, token = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


class GuardMiddleware:
    """401 without the API key (when one is set); 413 for bodies over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes

    def _too_large(self, size: int | None) -> PayloadTooLarge:
        got = f" ({size} bytes)" if size is not None else ""
        return PayloadTooLarge(f"request body too large{got}; the limit is {self.max_body} "
                               f"bytes (max_body_bytes)", code="payload_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (self.key is not None and scope["path"] not in OPEN_PATHS
                and not bearer_ok(_header(scope, b"authorization") or b"", self.key)):
            await error_response(Unauthorized())(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = None
            if n is not None and n > self.max_body:
                await error_response(self._too_large(n))(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:  # chunked body without (or lying about) its length
                    err = self._too_large(None)
                    raise HTTPException(413, detail=err.message)
            return msg

        await self.app(scope, counted, send)


class ShutdownMiddleware:
    """A request cancelled by the server's shutdown gets 503 ``shutting_down``, not a bare 500.

    Why: when work runs past ``--graceful-timeout-s``, uvicorn cancels the request's task.
    Left alone, the ``CancelledError`` reaches uvicorn, which logs a traceback and answers a
    plain-text ``500 Internal Server Error``: a client cannot tell that from a failed reward.
    Only the server cancels a request task (a client that disconnects is not cancelled), so a
    cancellation here means the server is going away; the client gets the OpenAI-shaped 503
    with ``Retry-After``, which it retries elsewhere or later.
    """

    def __init__(self, app: ASGIApp, retry_after: int = 1) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:  # half a response is out: nothing better to say than closing it
                raise
            err = ShuttingDown("the server is shutting down: the request did not finish "
                               "within the graceful shutdown timeout; retry it",
                               retry_after=self.retry_after)
            await error_response(err)(scope, receive, send)


class MetricsMiddleware:
    """Counts requests by endpoint and status, and observes their latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: Iterable[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.paths else "other"
        status = {"code": 500}

        async def send_wrapper(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        m = self.metrics
        post = scope.get("method") == "POST"
        m.in_progress.inc()
        m.active_posts += post
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.active_posts -= post
            m.in_progress.dec()
            m.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)
            m.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()


def route_paths(routes: Iterable[Any]) -> set[str]:
    return {getattr(r, "path", "") for r in routes if getattr(r, "path", "")}

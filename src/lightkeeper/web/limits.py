"""Request bodies are capped as they stream in: a declared ``Content-Length`` over the cap is refused
before a byte is read, and a body without one (chunked) is counted and cut off where it crosses the cap.
Either way the answer is 413 and the body is never buffered whole.

Requests to the API proxy are traced around the caps (``proxy_trace``): a 413 of either kind is counted and
logged with the proxy's other answers, as the status it is.

``LIGHTKEEPER_MAX_BODY_BYTES`` holds everywhere; the stock route, whose batches are legitimately larger,
has ``LIGHTKEEPER_MAX_STOCK_BODY_BYTES``.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from .auth import is_api_path
from .errors import ApiError, json_error, page_error
from .proxy_trace import ProxyTraceMiddleware

STOCK_ROUTE = re.compile(r"^/api/connections/[^/]+/stock$")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.default = settings.lightkeeper_max_body_bytes
        self.stock = settings.lightkeeper_max_stock_body_bytes
        self._traced = ProxyTraceMiddleware(self._capped)

    def limit(self, path: str) -> int:
        return self.stock if STOCK_ROUTE.match(path) else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._traced(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit(scope["path"])
        declared = _content_length(Headers(scope=scope))
        if declared is not None and declared > limit:
            await too_large(scope, limit)(scope, receive, send)
            return
        await _Capped(self.app, scope, receive, send, limit).run()


class _Capped:
    """One request whose body is counted as the app reads it; past the cap, 413 goes out instead."""

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.app, self.scope, self._receive, self._send, self.limit = app, scope, receive, send, limit
        self.received = 0
        self.refused = False
        self.started = False

    async def run(self) -> None:
        await self.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self._refuse()
                return {"type": "http.disconnect"}  # the app stops reading: to it, the client went away
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 is the answer; whatever the app says after losing its body is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _refuse(self) -> None:
        self.refused = True
        if not self.started:
            await too_large(self.scope, self.limit)(self.scope, self._receive, self._send)


def too_large(scope: Scope, limit: int) -> Response:
    error = ApiError(413, "payload_too_large", f"the request body is larger than {limit} bytes")
    if is_api_path(scope["path"]):
        return json_error(error)
    return page_error(Request(scope), error.status, error.code, "This request is too large. Go back and try again.")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    # The server has already refused a malformed length; anything odd here is left to the counting.
    return int(value) if value is not None and value.isdigit() else None


__all__ = ["STOCK_ROUTE", "BodyLimitMiddleware", "too_large"]

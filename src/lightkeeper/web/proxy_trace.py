"""One count and one log line for every request on the proxy's path, with the status actually sent.

``ProxyTraceMiddleware`` wraps everything that may answer a request to ``/api/connections/{id}/lightspeed/…``
once its key is accepted: the body caps' 413 (declared or found mid-stream), the route's own answers, Lightspeed's
answer streamed through, and the app's handlers for errors the route does not map (a ``ConfigError``, a
database error while booking, anything unexpected). It notes the status of ``http.response.start`` and
records it as the last byte leaves (a caller that has its answer sees it counted), or when the request ends
without one: an exception with nothing sent is the app's 500, a caller gone before an answer is 499.

The route adds what only it knows to the request's ``ProxyTrace`` (``trace_of``): the path relative to the
account and, once Lightspeed was called, the waits. The log line never holds the query (it may hold customer
data) nor a token; the method is from a closed set.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import PROXY_METHODS, count_proxied

#: The proxy route's logger: its one line a request keeps the route's name, which operators filter on.
log = logging.getLogger("lightkeeper.web.proxy_api")

#: The proxy's paths, as ``auth.ROUTE_SCOPES`` gives them the ``proxy`` scope.
PROXY_PATH = re.compile(r"/api/connections/([^/]+)/lightspeed(?:/.*)?", re.DOTALL)
_SCOPE_KEY = "lightkeeper.proxy_trace"
#: A caller that went away before any answer was sent (nginx's code; never sent, since nobody listens).
CLIENT_GONE = 499


@dataclass
class ProxyTrace:
    """What the metrics and the log line of one proxied request say (never its query, never a token)."""

    method: str  # one of PROXY_METHODS, or OTHER
    connection_id: int | None
    path: str = ""  # relative to the account, once the route has confined it
    wait_s: float | None = None  # once Lightspeed was called
    upstream_s: float | None = None
    started: float = field(default_factory=time.perf_counter)
    recorded: bool = False

    @classmethod
    def of(cls, scope: Scope) -> ProxyTrace:
        method = scope["method"] if scope["method"] in PROXY_METHODS else "OTHER"
        found = PROXY_PATH.fullmatch(scope["path"])
        number = found.group(1) if found else ""
        return cls(method, int(number) if number.isdigit() and len(number) <= 18 else None)

    def record(self, status: int, scope: Scope) -> None:
        """Counts and logs the request once; later calls do nothing."""
        if self.recorded:
            return
        self.recorded = True
        count_proxied(self.method, status, wait_s=self.wait_s, upstream_s=self.upstream_s)
        if log.isEnabledFor(logging.INFO):
            fields = self._fields(status, scope)
            log.info("proxy %s %s", self.method, status, extra={"event": "proxy", "fields": fields})

    def _fields(self, status: int, scope: Scope) -> dict[str, Any]:
        return {
            "method": self.method,
            "connection_id": self.connection_id,
            "key": scope.get("state", {}).get("api_key"),  # the API key's name, never its value
            "path": self.path,
            "status": status,
            "wait_ms": _ms(self.wait_s),
            "upstream_ms": _ms(self.upstream_s),
            "duration_ms": _ms(time.perf_counter() - self.started),
        }


def trace_of(scope: Scope) -> ProxyTrace | None:
    """The request's trace (None outside ``ProxyTraceMiddleware``)."""
    trace = scope.get(_SCOPE_KEY)
    return trace if isinstance(trace, ProxyTrace) else None


class ProxyTraceMiddleware:
    """Pure ASGI: records every request on the proxy's path once, with the status that was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not PROXY_PATH.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        trace = scope[_SCOPE_KEY] = ProxyTrace.of(scope)
        status: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                trace.record(status or CLIENT_GONE, scope)  # before the last byte leaves
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            trace.record(status or 500, scope)  # nothing sent yet: the app's handler answers 500
            raise
        finally:
            trace.record(status or CLIENT_GONE, scope)  # cut off mid-answer, or cancelled before one


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


__all__ = ["CLIENT_GONE", "PROXY_PATH", "ProxyTrace", "ProxyTraceMiddleware", "trace_of"]

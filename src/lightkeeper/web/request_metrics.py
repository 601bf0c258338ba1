"""Counting requests by route template (``/api/connections/{connection_id}``), method and status.

The label is the template the router matched, never the path: a path carries ids and the connect flow's
one-time tokens, and one series per id would grow without bound. A request no route handled is
``<unmatched>``: an unknown path, or one refused before routing (a wrong API key, a body too large), so
a burst of 401s shows as ``<unmatched>`` with status 401. The method is one of ``metrics.HTTP_METHODS`` or
``OTHER`` (h11 hands the app any token as a method, 8 KB long if a client likes): every label is from a closed set.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import count_request

UNMATCHED = "<unmatched>"


class RequestMetricsMiddleware:
    """Pure ASGI: sees the final status of every answer, including those of the middlewares inside it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, counted = time.perf_counter(), 500, False  # an escaping exception is answered 500

        def count() -> None:
            nonlocal counted
            if not counted:
                counted = True
                count_request(template(scope), scope["method"], status, time.perf_counter() - started)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()  # before the last byte leaves: a client that got its answer sees it counted
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            count()


def template(scope: Scope) -> str:
    """The matched route's path template: the router puts the route in the (shared) scope once it routed."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


__all__ = ["UNMATCHED", "RequestMetricsMiddleware", "template"]

"""``RequestRecorder``: the ASGI middleware that logs every ``/API/V3`` (and X-Series API) request as it arrives.

It reads the whole body before any route runs (so ``body_bytes`` and ``body_sha256`` are what was sent, even
to a route that never reads it, and the entry exists before any answer leaves), hands the entry's raw parts to
``SimulatorState.record_request`` (which redacts: see ``requestlog.py``), then replays the body to the app.
The raw path is ``scope["raw_path"]`` as received, not the normalised, percent-decoded ``path``.
X-Series API requests are ``/x/{prefix}/api/…`` ones, except ``/x/{prefix}/api/1.0/…`` (the token endpoint:
OAuth, not API, as ``/auth/oauth/`` is not logged on R-Series).
"""

from __future__ import annotations

import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightkeeper.simulator.state import SimulatorState

API_PREFIX = "/API/V3/"
#: The scope key under which the server's own ``receive`` is kept: the replaying one that the app gets instead
#: hides the connection, which a "reset" fault needs to abort (``serving._reset_connection``).
SERVER_RECEIVE = "simulator.server_receive"
X_API_PATH = re.compile(r"^/x/[^/]+/api/(?!1\.0/)")


def is_api_path(path: str) -> bool:
    """Whether a request to ``path`` goes in the request log (an R-Series or X-Series API request)."""
    return path.startswith(API_PREFIX) or X_API_PATH.match(path) is not None


class RequestRecorder:
    """Logs ``/API/V3/*`` requests into ``state``; everything else passes untouched."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
        if scope["type"] != "http" or not (is_api_path(scope["path"]) or is_api_path(raw_path)):
            await self._app(scope, receive, send)
            return
        messages = await _read_request(receive)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        digest = hashlib.sha256()
        body_bytes = 0
        for message in messages:
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                digest.update(chunk)
                body_bytes += len(chunk)
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        self._state.record_request(
            scope["method"], raw_path, query, headers, body_bytes, body_sha256=digest.hexdigest()
        )
        await self._app({**scope, SERVER_RECEIVE: receive}, _replay(messages, receive), send)


async def _read_request(receive: Receive) -> list[Message]:
    """Every message up to the end of the body (or the client's disconnect)."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that first gives back ``messages``, then defers to the real one (disconnects)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


__all__ = ["API_PREFIX", "SERVER_RECEIVE", "X_API_PATH", "RequestRecorder", "is_api_path"]

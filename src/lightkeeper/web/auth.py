"""Who may use the JSON API: the bearer key, checked before a request's body is read.

FastAPI reads a body before it runs dependencies, so an unauthenticated client could make the server
buffer anything. ``ApiKeyMiddleware`` answers a refused ``/api/`` request from its headers alone (the app
never reads the body; whatever the client still sends is discarded by the server, never buffered) and
logs the refusal: route and client address, never the presented key.

Without a key the API is off (503), except in a development run (``LIGHTKEEPER_DEV=1``): then it answers
requests from this machine only, and only when no proxy forwarded them (a reverse proxy on the same host
must not open it to the world). ``serve`` also refuses dev mode on anything but a loopback interface.
"""

from __future__ import annotations

import logging
import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings, is_loopback_host
from ..logs import escape_controls
from .errors import ApiError, json_error

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
#: Any of these means a proxy stands between the client and us: the peer address is not the client's.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


class ApiKeyCheck:
    """The one decision: may this request use the API? (None: yes; else the error to answer.)"""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.lightkeeper_api_key.get_secret_value().encode()
        self._dev = settings.lightkeeper_dev

    def refusal(self, headers: Headers, client_host: str | None) -> ApiError | None:
        if self._key:
            return None if self._key_matches(headers) else _WRONG_KEY
        if not self._dev:
            return _DISABLED
        if is_loopback_host(client_host) and not any(name in headers for name in PROXY_HEADERS):
            return None
        return _NOT_LOCAL

    def _key_matches(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # compare_digest on bytes: constant time, and any header text compares without an exception.
        return scheme.lower() == "bearer" and secrets.compare_digest(given.encode(), self._key)


_WRONG_KEY = ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer ...)")
_DISABLED = ApiError(503, "api_disabled", "set LIGHTKEEPER_API_KEY to use the API (or LIGHTKEEPER_DEV=1 locally)")
_NOT_LOCAL = ApiError(
    401,
    "unauthorized",
    "without LIGHTKEEPER_API_KEY (LIGHTKEEPER_DEV=1) the API answers only this machine, not through a proxy",
)


class ApiKeyMiddleware:
    """Refuses ``/api/`` requests without the key before anything reads their body."""

    def __init__(self, app: ASGIApp, check: ApiKeyCheck) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = client_host(scope)
        refusal = self.check.refusal(Headers(scope=scope), client)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        log_refusal(scope, client, refusal)
        await json_error(refusal)(scope, receive, send)


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def log_refusal(scope: Scope, client: str | None, refusal: ApiError) -> None:
    # The route and who asked; never a header (the presented key would be in one) nor the query string.
    route = escape_controls(f"{scope['method']} {scope['path']}"[:300])
    log.warning("API request refused (%s): %s from %s", refusal.code, route, client or "an unknown address")


def dev_mode_problem(settings: Settings, host: str) -> str | None:
    """Why ``serve --host host`` must not start with these settings, or None."""
    if settings.lightkeeper_dev and not is_loopback_host(host):
        return (
            f"LIGHTKEEPER_DEV=1 opens the API without a key, so it is only honoured on a loopback interface: "
            f"serve on 127.0.0.1 (not {host}) or unset LIGHTKEEPER_DEV"
        )
    return None


__all__ = ["ApiKeyCheck", "ApiKeyMiddleware", "client_host", "dev_mode_problem", "is_api_path"]

"""Who may use the JSON API (and ``/metrics``, ``/openapi.json``): a bearer key with the scope the route needs,
checked before a request's body is read.

FastAPI reads a body before it runs dependencies, so an unauthenticated client could make the server
buffer anything. ``ApiKeyMiddleware`` answers a refused request from its method, path and headers alone (the
app never reads the body; whatever the client still sends is discarded by the server, never buffered) and
logs the refusal: route, client address and, for a key outside its scopes, the key's name; never its value.

Keys are named and scoped (``apikeys.py``): each route needs one scope (``ROUTE_SCOPES``), ``admin`` has them
all. A known key without the scope is answered 403 ``insufficient_scope``, naming the scope needed.

Without a key the API is off (503), except in a development run (``LIGHTKEEPER_DEV=1``): then it answers
requests from this machine only, and only when no proxy forwarded them (a reverse proxy on the same host
must not open it to the world). ``serve`` also refuses dev mode on anything but a loopback interface.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..apikeys import ALL_SCOPES, ApiKey, KeyRing
from ..apikeys import Scope as KeyScope
from ..config import Settings, is_loopback_host
from ..logs import escape_controls
from ..metrics import count_api_key, known_api_keys
from .errors import ApiError, json_error

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
METRICS_PATH = "/metrics"
OPENAPI_PATH = "/openapi.json"
#: Any of these means a proxy stands between the client and us: the peer address is not the client's.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
#: The name a keyless development run's requests go by in logs and metrics.
DEV_NAME = "dev"

_ID = r"[^/]+"
#: (method or None for any, path pattern, the scope it needs); the first match wins, any other /api/ route reads.
ROUTE_SCOPES: tuple[tuple[str | None, re.Pattern[str], KeyScope], ...] = (
    (None, re.compile(rf"/api/connections/{_ID}/lightspeed(?:/.*)?", re.DOTALL), KeyScope.PROXY),
    ("POST", re.compile(rf"/api/connections/{_ID}/stock"), KeyScope.PROXY),
    ("POST", re.compile(rf"/api/connections/{_ID}/token"), KeyScope.TOKENS),
    ("DELETE", re.compile(rf"/api/connections/{_ID}"), KeyScope.CONNECT),
    ("POST", re.compile(r"/api/connect-sessions"), KeyScope.CONNECT),
    ("POST", re.compile(r"/api/refresh"), KeyScope.REFRESH),
)


def needed_scope(method: str, path: str) -> KeyScope | None:
    """The scope a request needs (None: any key will do, as for ``/openapi.json``)."""
    if path == OPENAPI_PATH:
        return None
    for wanted, pattern, scope in ROUTE_SCOPES:
        if (wanted is None or method == wanted) and pattern.fullmatch(path):
            return scope
    return KeyScope.READ  # listings, /metrics, and anything else under /api/ (answered 404/405 if unknown)


@dataclass(frozen=True)
class Decision:
    """Who asked (a key, or the dev run's caller) and, when refused, the error to answer."""

    key: ApiKey | None
    error: ApiError | None = None
    needed: KeyScope | None = None


class ApiKeyCheck:
    """The one decision: may this request use the API, and as which key?"""

    def __init__(self, settings: Settings) -> None:
        self.ring = KeyRing(settings.api_keys)
        self._dev = settings.lightkeeper_dev
        self.schema_open = settings.lightkeeper_docs  # the interactive docs need to load the schema
        known_api_keys(self.ring.names)

    def guards(self, path: str) -> bool:
        """Whether ``path`` needs a key here."""
        return is_api_path(path) or path == METRICS_PATH or (path == OPENAPI_PATH and not self.schema_open)

    def decide(self, method: str, path: str, headers: Headers, client_host: str | None) -> Decision:
        needed = needed_scope(method, path)
        if self.ring:
            key = self._presented(headers)
            if key is None:
                return Decision(None, _WRONG_KEY, needed)
            if not key.allows(needed):
                return Decision(key, insufficient_scope(key, needed), needed)
            return Decision(key, None, needed)
        if not self._dev:
            return Decision(None, _DISABLED, needed)
        if is_loopback_host(client_host) and not any(name in headers for name in PROXY_HEADERS):
            return Decision(ApiKey(DEV_NAME, ALL_SCOPES, ""), None, needed)
        return Decision(None, _NOT_LOCAL, needed)

    def _presented(self, headers: Headers) -> ApiKey | None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return self.ring.match(given) if scheme.lower() == "bearer" else None


def insufficient_scope(key: ApiKey, needed: KeyScope | None) -> ApiError:
    scope = (needed or KeyScope.READ).value
    return ApiError(
        403,
        "insufficient_scope",
        f"the API key {key.name!r} lacks the {scope!r} scope this route needs",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
    )


_WRONG_KEY = ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer ...)")
_DISABLED = ApiError(
    503, "api_disabled", "set LIGHTKEEPER_API_KEY or LIGHTKEEPER_API_KEYS to use the API (or LIGHTKEEPER_DEV=1 locally)"
)
_NOT_LOCAL = ApiError(
    401,
    "unauthorized",
    "without an API key (LIGHTKEEPER_DEV=1) the API answers only this machine, not through a proxy",
)


class ApiKeyMiddleware:
    """Refuses guarded requests without a fitting key before anything reads their body; an accepted one
    carries its key's name in ``request.state.api_key`` (for logs)."""

    def __init__(self, app: ASGIApp, check: ApiKeyCheck) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.check.guards(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = client_host(scope)
        decision = self.check.decide(scope["method"], scope["path"], Headers(scope=scope), client)
        if decision.key is not None:
            count_api_key(decision.key.name, "allowed" if decision.error is None else "insufficient_scope")
        if decision.error is None:
            scope.setdefault("state", {})["api_key"] = decision.key.name if decision.key else None
            await self.app(scope, receive, send)
            return
        log_refusal(scope, client, decision)
        await json_error(decision.error)(scope, receive, send)


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def log_refusal(scope: Scope, client: str | None, decision: Decision) -> None:
    # The route, who asked and the key's name; never a header (the presented key would be in one) nor the query.
    route = escape_controls(f"{scope['method']} {scope['path']}"[:300])
    error = decision.error
    assert error is not None
    who = f" with key {decision.key.name!r}" if decision.key is not None else ""
    log.warning("API request refused (%s): %s from %s%s", error.code, route, client or "an unknown address", who)


def dev_mode_problem(settings: Settings, host: str) -> str | None:
    """Why ``serve --host host`` must not start with these settings, or None."""
    if settings.lightkeeper_dev and not is_loopback_host(host):
        return (
            f"LIGHTKEEPER_DEV=1 opens the API without a key, so it is only honoured on a loopback interface: "
            f"serve on 127.0.0.1 (not {host}) or unset LIGHTKEEPER_DEV"
        )
    return None


__all__ = [
    "ROUTE_SCOPES",
    "ApiKeyCheck",
    "ApiKeyMiddleware",
    "Decision",
    "client_host",
    "dev_mode_problem",
    "insufficient_scope",
    "is_api_path",
    "needed_scope",
]

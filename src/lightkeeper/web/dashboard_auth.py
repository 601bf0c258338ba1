"""Who may see the operator dashboard: a signed-in browser, a script with the API key, or a dev run.

A browser signs in once with the API key and then carries ``lk_dashboard``: an expiry and an HMAC of it,
keyed by a secret derived from the API key. Nothing is stored, so every process behind a load balancer
accepts it, and changing the key signs every browser out. Scripts send ``Authorization: Bearer <key>``.
Without a key the dashboard behaves as the API does: off, or (``LIGHTKEEPER_DEV=1``) open to this machine
only, never through a proxy.

Failed sign-ins are counted per client address in this process: past ``MAX_FAILURES`` within ``WINDOW``,
further tries are refused unchecked until the window has passed, so the key cannot be guessed at speed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from starlette.requests import Request

from ..clock import Clock
from ..config import Settings, is_loopback_host
from .auth import PROXY_HEADERS

SESSION_COOKIE = "lk_dashboard"
#: A random value set before sign-in: the login form's (and a dev run's forms') CSRF tokens bind to it.
FORM_COOKIE = "lk_dashboard_form"
COOKIE_PATH = "/dashboard"
SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5
WINDOW = timedelta(minutes=1)
#: More addresses than this with recent failures: the oldest are forgotten (memory stays bounded).
MAX_TRACKED = 10_000


class Access(StrEnum):
    """How a request stands with the dashboard."""

    SESSION = "session"  # a signed-in browser
    BEARER = "bearer"  # a script with the API key
    DEV = "dev"  # no key, LIGHTKEEPER_DEV=1, from this machine
    SIGN_IN = "sign_in"  # show the login form
    WRONG_KEY = "wrong_key"  # a bearer key was sent, and it is not the key
    OFF = "off"  # no key and not a dev run
    NOT_LOCAL = "not_local"  # a dev run asked from elsewhere, or through a proxy

    @property
    def allowed(self) -> bool:
        return self in (Access.SESSION, Access.BEARER, Access.DEV)


@dataclass(frozen=True)
class Visitor:
    access: Access
    #: What this visitor's CSRF tokens bind to: the session cookie when signed in, else the form cookie.
    form_secret: str


class DashboardAuth:
    """The dashboard's one decision, and the signed session cookie it rests on."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._key = settings.lightkeeper_api_key.get_secret_value().encode()
        self._dev = settings.lightkeeper_dev
        self._clock = clock
        # A secret of the dashboard's own: a cookie's MAC never reveals anything usable as the key.
        self._secret = hmac.new(self._key, b"lightkeeper dashboard session v1", hashlib.sha256).digest()
        self.secure = not _local_http(settings.public_url)
        self.throttle = LoginThrottle(clock)

    def visitor(self, request: Request) -> Visitor:
        session = request.cookies.get(SESSION_COOKIE, "")
        access = self._access(request, session)
        secret = session if access is Access.SESSION else request.cookies.get(FORM_COOKIE, "")
        return Visitor(access, secret)

    def _access(self, request: Request, session: str) -> Access:
        if not self._key:
            return self._keyless(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.key_matches(given):
            return Access.BEARER
        if self.session_valid(session):
            return Access.SESSION
        return Access.WRONG_KEY if scheme else Access.SIGN_IN

    def _keyless(self, request: Request) -> Access:
        if not self._dev:
            return Access.OFF
        client = request.client.host if request.client else None
        local = is_loopback_host(client) and not any(name in request.headers for name in PROXY_HEADERS)
        return Access.DEV if local else Access.NOT_LOCAL

    @property
    def needs_key(self) -> bool:
        return bool(self._key)

    def key_matches(self, given: str) -> bool:
        # compare_digest on bytes: constant time, and any text compares without an exception.
        return bool(self._key) and hmac.compare_digest(given.encode(), self._key)

    def new_session(self) -> str:
        """A session cookie's value, valid for ``SESSION_TTL`` from now."""
        expires = int((self._clock() + SESSION_TTL).timestamp())
        return f"{expires}.{self._mac(expires)}"

    def session_valid(self, value: str) -> bool:
        expires, _, mac = value.partition(".")
        if not expires.isdigit() or not self._key:
            return False
        fresh = int(expires) > self._clock().timestamp()
        return hmac.compare_digest(mac.encode(), self._mac(int(expires)).encode()) and fresh

    def _mac(self, expires: int) -> str:
        return hmac.new(self._secret, f"lk_dashboard:{expires}".encode(), hashlib.sha256).hexdigest()


class LoginThrottle:
    """Failed sign-ins per client address, in this process; a blocked address is refused unchecked."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._failures: dict[str, deque[datetime]] = {}

    def blocked(self, address: str) -> bool:
        return address in self._failures and len(self._recent(address)) >= MAX_FAILURES

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, deque(maxlen=MAX_FAILURES))
        self._recent(address).append(self._clock())
        if len(self._failures) > MAX_TRACKED:
            del self._failures[next(iter(self._failures))]  # the address that failed first, long ago

    def _recent(self, address: str) -> deque[datetime]:
        times = self._failures[address]
        while times and times[0] <= self._clock() - WINDOW:
            times.popleft()
        return times


def _local_http(url: str) -> bool:
    """An ``http://`` public URL on this machine: a local run, whose browser could not send a Secure cookie."""
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


__all__ = [
    "COOKIE_PATH",
    "FORM_COOKIE",
    "MAX_FAILURES",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "WINDOW",
    "Access",
    "DashboardAuth",
    "LoginThrottle",
    "Visitor",
]

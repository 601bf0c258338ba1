"""Who may see the operator dashboard: a signed-in browser, a script with an ``admin`` key, or a dev run.

A browser signs in once with a key that has the ``admin`` scope and then carries ``lk_dashboard``:
``EXPIRES.NAME.FINGERPRINT.SESSION_ID.MAC``. The MAC is keyed by a secret of the sessions' own, derived from
``TOKEN_ENCRYPTION_KEY`` (never from an API key), so every process on the same configuration accepts it. The
cookie keeps the key's name and a fingerprint of the key (an HMAC under that secret, so it reveals nothing of
the key): a session is valid only while an ``admin`` key of that name with that fingerprint is configured, so
removing or rotating the key ends its sessions. Logging out records a hash of the session's id as ended in the
``DashboardState`` the auth is handed (``dashboard_state``): ``serve`` hands it the database's, so every replica
behind a load balancer refuses the cookie from then on. Anything malformed is simply not a session (401), never
an error. Scripts send ``Authorization: Bearer <key>``. Without a key the dashboard behaves as the API does: off,
or (``LIGHTKEEPER_DEV=1``) open to this machine only, never through a proxy.

Failed sign-ins (the form's and wrong bearer keys alike) are counted per client address in that state too, so
guesses spread over the replicas are counted together. From the ``MAX_FAILURES``-th failure on, each one blocks
the address for 1 s, then 2, 4, 8 and at most ``MAX_WAIT_S`` (10 s); while blocked, tries are answered 429 with
``Retry-After``, unchecked. Once the wait has passed a correct key is accepted (and clears the count): nobody, not
even everyone behind one proxy address, is locked out for longer than 10 s, and a key still cannot be guessed at
speed. Each refusal is logged with the word "refused" and the address, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from starlette.requests import Request

from ..apikeys import ApiKey, KeyRing, Scope
from ..clock import Clock
from ..config import Settings, is_loopback_host
from ..store.dashboard import MAX_TRACKED
from .auth import PROXY_HEADERS, client_host
from .dashboard_state import DashboardState

log = logging.getLogger(__name__)

SESSION_COOKIE = "lk_dashboard"
#: A random value set before sign-in: the login form's (and a dev run's forms') CSRF tokens bind to it.
FORM_COOKIE = "lk_dashboard_form"
COOKIE_PATH = "/dashboard"
SESSION_TTL = timedelta(hours=12)
#: The failure from which on an address waits before its next try.
MAX_FAILURES = 5
#: The longest wait: nobody is locked out for longer.
MAX_WAIT_S = 10
#: An address whose last failure is this old starts again from zero.
FORGET_AFTER = timedelta(minutes=15)
_SESSION = re.compile(r"([0-9]{1,12})\.([a-z0-9_-]{1,64})\.([0-9a-f]{16})\.([A-Za-z0-9_-]{16,64})\.([0-9a-f]{64})")
_SESSION_MAX_CHARS = 256


class Access(StrEnum):
    """How a request stands with the dashboard."""

    SESSION = "session"  # a signed-in browser
    BEARER = "bearer"  # a script with an admin key
    DEV = "dev"  # no key, LIGHTKEEPER_DEV=1, from this machine
    SIGN_IN = "sign_in"  # show the login form
    BAD_SESSION = "bad_session"  # a session cookie that is not (or no longer) valid: 401 and the login form
    WRONG_KEY = "wrong_key"  # a bearer key was sent, and it is no key
    NO_SCOPE = "no_scope"  # a bearer key without the admin scope
    THROTTLED = "throttled"  # too many wrong keys from this address: wait ``retry_after``
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
    #: The name of the key this visitor is using (signed in with, or sent), for the log.
    key_name: str | None = None
    #: Seconds to wait, when throttled.
    retry_after: int | None = None


@dataclass(frozen=True)
class Attempt:
    """One try of a key at the dashboard: the admin key it is, or why not (and how long to wait)."""

    key: ApiKey | None
    refused: str | None = None  # "wrong_key", "no_scope", "throttled"
    retry_after: int | None = None


@dataclass(frozen=True)
class Session:
    expires: int
    name: str
    fingerprint: str
    session_id: str


class DashboardAuth:
    """The dashboard's one decision, and the signed session cookie it rests on."""

    def __init__(self, settings: Settings, clock: Clock, state: DashboardState) -> None:
        self._ring = KeyRing(settings.api_keys)
        self._dev = settings.lightkeeper_dev
        self._clock = clock
        self._secret = _session_secret(settings)
        self.secure = not _local_http(settings.public_url)
        self._state = state  # sign-outs and wrong keys: the database's in ``serve``, shared by every replica
        self.throttle = LoginThrottle(clock, state)

    @property
    def needs_key(self) -> bool:
        return bool(self._ring)

    # -- who is asking ---------------------------------------------------------------------------------

    def visitor(self, request: Request) -> Visitor:
        form = request.cookies.get(FORM_COOKIE, "")
        if not self._ring:
            return Visitor(self._keyless(request), form)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme:
            tried = self.attempt(_address(request), given if scheme.lower() == "bearer" else "", how="bearer key")
            return Visitor(_bearer_access(tried), form, tried.key.name if tried.key else None, tried.retry_after)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            return Visitor(Access.SIGN_IN, form)
        session = self.session(cookie)
        if session is None:
            return Visitor(Access.BAD_SESSION, form)
        return Visitor(Access.SESSION, cookie, session.name)

    def _keyless(self, request: Request) -> Access:
        if not self._dev:
            return Access.OFF
        client = request.client.host if request.client else None
        local = is_loopback_host(client) and not any(name in request.headers for name in PROXY_HEADERS)
        return Access.DEV if local else Access.NOT_LOCAL

    def attempt(self, address: str, presented: str, *, how: str) -> Attempt:
        """Try ``presented`` (from the login form, or a bearer header) for ``address``; every refusal is logged."""
        wait = self.throttle.wait(address)
        if wait is not None:
            log.warning("dashboard %s refused (too many wrong keys; retry in %d s) from %s", how, wait, address)
            return Attempt(None, "throttled", wait)
        key = self._ring.match(presented)
        if key is None:
            block = self.throttle.failed(address)
            log.warning("dashboard %s refused (wrong key) from %s", how, address)  # never the key given
            return Attempt(None, "throttled" if block else "wrong_key", block)
        if not key.allows(Scope.ADMIN):
            log.warning("dashboard %s refused (key %r lacks the admin scope) from %s", how, key.name, address)
            return Attempt(key, "no_scope")
        self.throttle.succeeded(address)
        return Attempt(key)

    # -- sessions ----------------------------------------------------------------------------------------

    def new_session(self, key: ApiKey) -> str:
        """A session cookie's value for ``key``, valid for ``SESSION_TTL`` from now."""
        expires = int((self._clock() + SESSION_TTL).timestamp())
        body = f"{expires}.{key.name}.{self._fingerprint(key)}.{secrets.token_urlsafe(24)}"
        return f"{body}.{self._mac(body)}"

    def session(self, value: str) -> Session | None:
        """The session ``value`` is, while it is valid; None for anything else (malformed, forged, expired,
        logged out, or its key removed or rotated)."""
        session = self._signed(value)
        if session is None or session.expires <= self._clock().timestamp():
            return None
        current = any(
            key.name == session.name
            and key.allows(Scope.ADMIN)
            and hmac.compare_digest(self._fingerprint(key), session.fingerprint)
            for key in self._ring.keys
        )
        # Asked last: only a session that is valid otherwise costs a look at the (shared) state.
        return session if current and not self._state.session_ended(_session_hash(session)) else None

    def session_valid(self, value: str) -> bool:
        return self.session(value) is not None

    def end_session(self, value: str) -> None:
        """Log a session out on the server side: its cookie is refused from now on, by every process sharing the
        state (the database's: every replica)."""
        session = self._signed(value)
        if session is None:
            return
        expires_at = datetime.fromtimestamp(session.expires, UTC)
        self._state.end_session(_session_hash(session), expires_at=expires_at, now=self._clock())

    def _signed(self, value: str) -> Session | None:
        if len(value) > _SESSION_MAX_CHARS:
            return None
        found = _SESSION.fullmatch(value)
        if found is None:
            return None
        expires, name, fingerprint, session_id, mac = found.groups()
        body = value[: -len(mac) - 1]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return Session(int(expires), name, fingerprint, session_id)

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, f"lk_dashboard:v2:{body}".encode(), hashlib.sha256).hexdigest()

    def _fingerprint(self, key: ApiKey) -> str:
        return hmac.new(self._secret, b"fingerprint:" + key.secret.encode(), hashlib.sha256).hexdigest()[:16]


def _bearer_access(tried: Attempt) -> Access:
    if tried.refused is None:
        return Access.BEARER
    return {"throttled": Access.THROTTLED, "no_scope": Access.NO_SCOPE}.get(tried.refused, Access.WRONG_KEY)


class LoginThrottle:
    """Failed sign-ins per client address, in the ``DashboardState`` (every replica's, in ``serve``); a blocked
    address is refused unchecked."""

    def __init__(self, clock: Clock, state: DashboardState) -> None:
        self._clock = clock
        self._state = state

    def wait(self, address: str) -> int | None:
        """Whole seconds ``address`` must still wait, or None when it may try."""
        until = self._state.login_blocked_until(address)
        left = (until - self._clock()).total_seconds() if until is not None else 0.0
        return max(1, math.ceil(left)) if left > 0 else None

    def failed(self, address: str) -> int | None:
        """Count a failure; the seconds ``address`` is now blocked for (from the ``MAX_FAILURES``-th), or None."""
        now = self._clock()
        return self._state.login_failed(address, now=now, forget_before=now - FORGET_AFTER, block_s=block_seconds)

    def succeeded(self, address: str) -> None:
        self._state.login_succeeded(address)

    def blocked(self, address: str) -> bool:
        return self.wait(address) is not None


def block_seconds(failures: int) -> int | None:
    """How long the ``failures``-th wrong key in a row blocks its address: none before ``MAX_FAILURES``, then 1 s,
    doubling, at most ``MAX_WAIT_S``."""
    if failures < MAX_FAILURES:
        return None
    doubling: int = 2 ** min(failures - MAX_FAILURES, 8)
    return min(MAX_WAIT_S, doubling)


def _session_hash(session: Session) -> str:
    """What the state keeps of a signed-out session: a hash of its random id, never the cookie (which signs in)."""
    return hashlib.sha256(session.session_id.encode()).hexdigest()


def _address(request: Request) -> str:
    return client_host(request.scope) or "an unknown address"


def _session_secret(settings: Settings) -> bytes:
    """The sessions' own signing secret: derived from ``TOKEN_ENCRYPTION_KEY`` (shared by every process, and
    never from an API key); a random one for this process when there is no encryption key."""
    text = settings.token_encryption_key.get_secret_value()
    if not text:
        return secrets.token_bytes(32)
    return hmac.new(text.encode(), b"lightkeeper dashboard sessions v2", hashlib.sha256).digest()


def _local_http(url: str) -> bool:
    """An ``http://`` public URL on this machine: a local run, whose browser could not send a Secure cookie."""
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


__all__ = [
    "COOKIE_PATH",
    "FORM_COOKIE",
    "MAX_FAILURES",
    "MAX_TRACKED",
    "MAX_WAIT_S",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "Access",
    "Attempt",
    "DashboardAuth",
    "DashboardState",
    "LoginThrottle",
    "Visitor",
    "block_seconds",
]

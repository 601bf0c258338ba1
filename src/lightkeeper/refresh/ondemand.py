"""A valid access token on demand, with single-flight refreshes across threads, processes and machines.

Many callers finding the same expired token is where rotating refresh tokens break integrations: two
refreshes of one connection and the loser's pair is revoked. Here exactly one caller refreshes: inside a
process the callers of one connection queue on a lock (shared with run workers), across processes the
fenced database lease decides, and every waiter re-reads the row and uses the pair the winner committed
(invariants 1 and 2).

A transient failure puts the connection on a growing cooldown; callers during the cooldown get the
typed error at once, without calling Lightspeed (Nango's lesson: one broken connection must not turn
into tens of thousands of refresh calls a day).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import ConnectionExpired, ConnectionNotFound, ProviderError, ProviderUnavailable, RateLimited
from ..store import REFRESHABLE, ConnectionRecord, Lease, Status
from . import policy
from .drain import CLAIM_AHEAD_S
from .policy import Outcome
from .single import Refresher


@dataclass(frozen=True)
class AccessGrant:
    """A usable access token for one connection."""

    connection_id: int
    account_id: str
    access_token: str
    expires_at: datetime
    provider: str  # whose API the token opens (the connection's provider): the proxy and the client ask it

    def __repr__(self) -> str:
        return f"AccessGrant(connection_id={self.connection_id}, access_token=***, expires_at={self.expires_at})"


class TokenProvider:
    def __init__(
        self,
        refresher: Refresher,
        *,
        leeway: timedelta,
        wait: timedelta = timedelta(seconds=30),
        poll: timedelta = timedelta(milliseconds=50),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.refresher, self.leeway, self.wait, self.poll = refresher, leeway, wait, poll
        # What it uses beside the refresher's one verb (``refresh``): explicit, not reached through it.
        self.parts = refresher.parts
        self._sleep = sleep
        # (connection id, ciphertext) -> access token: a row still holding the same ciphertext needs no
        # decrypt. The id is part of the key, so a ciphertext copied into another row is still refused.
        self._opened: dict[tuple[int, str], str] = {}

    def fresh_token(self, connection_id: int, *, rejected: str | None = None) -> AccessGrant:
        """A token valid for at least the leeway.

        ``rejected`` is an access token Lightspeed just answered 401 to: unless the stored token is
        already another one (someone refreshed meanwhile), it is refreshed even if not yet expired.
        """
        record = self._load(connection_id)
        if not self._needs_new(record, rejected):
            return self._grant(record)
        deadline = time.monotonic() + self.wait.total_seconds()  # one bound for the whole call
        while True:
            if (grant := self._attempt(connection_id, rejected, deadline)) is not None:
                return grant
            if time.monotonic() >= deadline:
                raise _busy(connection_id)
            self._sleep(self.poll.total_seconds())

    def current(self, connection_id: int) -> AccessGrant | None:
        """The stored token if it is valid for the leeway, else None: one read, never waits, never calls
        Lightspeed. For async code that may do the fast path on its event loop and hand only a refresh
        (``fresh_token``) to a thread."""
        record = self._load(connection_id)
        return None if self._needs_new(record, None) else self._grant(record)

    # -- the slow path -------------------------------------------------------------------------------
    def _attempt(self, connection_id: int, rejected: str | None, deadline: float) -> AccessGrant | None:
        """Under the connection's lock in this process (shared with run workers): the committed token if
        someone refreshed meanwhile, else our own refresh; None while another process holds the lease."""
        lock = self.parts.locks.get(connection_id)
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _busy(connection_id)
        try:
            record = self._load(connection_id)
            if not self._needs_new(record, rejected):
                return self._grant(record)  # someone else refreshed while we queued
            self._check_cooldown(record)
            acquired = self._acquire(record, deadline)
            return None if acquired is None else self._refresh(*acquired, rejected)
        finally:
            lock.release()

    def _needs_new(self, record: ConnectionRecord, rejected: str | None) -> bool:
        if rejected is not None and self._access_token(record) == rejected:
            return True
        return policy.needs_refresh(record, self.parts.clock(), self.leeway)

    def _acquire(self, record: ConnectionRecord, deadline: float) -> tuple[Lease, float] | None:
        """The lease, taken just ahead of a pacing slot of the connection's provider, and that slot (the refresh
        waits for it right before its send); None (no slot spent) while someone holds the lease. A slot beyond the
        caller's ``deadline`` (a ``Retry-After`` hold on the provider's client) is ``RateLimited`` at once: the
        caller is not kept waiting past what it agreed to."""
        connection_id, connections = record.id, self.parts.connections
        pacer = self.parts.pacer(record.provider)  # ConfigError: the provider is no longer configured
        if connections.lease_live(connection_id):
            return None
        slot = pacer.reserve()
        if slot > deadline:
            wait = slot - time.monotonic()
            raise RateLimited(
                f"connection {connection_id}: Lightspeed asked to wait {wait:.0f} s before the next token request "
                "(Retry-After); try again later",
                retry_after=wait,
            )
        pacer.sleep_until(slot - CLAIM_AHEAD_S)
        leased = connections.acquire(connection_id, owner=self.parts.owner, lease=self.parts.lease)
        return None if leased is None else (leased, slot)

    def _refresh(self, leased: Lease, slot: float, rejected: str | None) -> AccessGrant | None:
        """Our refresh under the lease; None when it was not sent (the lease moved on, or too little of it was
        left after waiting for a slot): the caller looks again."""
        record = leased.record
        if record.status not in REFRESHABLE:  # found dead by another process while we waited for our slot
            self.parts.connections.release(record.id, leased.token)
            _check_refreshable(record)
        if not self._needs_new(record, rejected):  # the lease holder before us had just finished
            self.parts.connections.release(record.id, leased.token)
            return self._grant(record)
        result = self.refresher.refresh(leased, slot=slot)
        if result.tokens is not None:  # committed before anyone sees it (invariant 2)
            tokens = result.tokens
            return AccessGrant(record.id, record.account_id, tokens.access_token, tokens.expires_at, record.provider)
        if result.outcome is Outcome.SKIPPED and result.error is None:
            current = self._load(record.id)  # the lease moved on (use theirs), or our send was called off
            return None if self._needs_new(current, rejected) else self._grant(current)
        raise _failure(record.id, result.outcome, result.error)

    @contextmanager
    def leased(self, connection_id: int) -> Iterator[Lease]:
        """Hold the connection's lease (waiting for a refresh in flight) while the body runs."""
        deadline = time.monotonic() + self.wait.total_seconds()
        lock = self.parts.locks.get(connection_id)
        if not lock.acquire(timeout=self.wait.total_seconds()):
            raise _busy(connection_id)
        try:
            held = self._wait_for_lease(connection_id, deadline)
            try:
                yield held
            finally:
                self.parts.connections.release(connection_id, held.token)
        finally:
            lock.release()

    def _wait_for_lease(self, connection_id: int, deadline: float) -> Lease:
        connections = self.parts.connections
        while True:
            if connections.get(connection_id) is None:
                raise ConnectionNotFound(f"there is no connection {connection_id}")
            held = connections.acquire(connection_id, owner=self.parts.owner, lease=self.parts.lease)
            if held is not None:
                return held
            if time.monotonic() >= deadline:
                raise ProviderUnavailable(f"connection {connection_id} is busy refreshing; try again")
            self._sleep(self.poll.total_seconds())

    # -- helpers -------------------------------------------------------------------------------------
    def _load(self, connection_id: int) -> ConnectionRecord:
        record = self.parts.connections.get(connection_id)
        if record is None:
            raise ConnectionNotFound(f"there is no connection {connection_id}")
        _check_refreshable(record)
        return record

    def _check_cooldown(self, record: ConnectionRecord) -> None:
        now = self.parts.clock()
        if record.status is Status.ERROR and policy.in_backoff(record, now):
            assert record.next_attempt_at is not None
            seconds = int((record.next_attempt_at - now).total_seconds()) + 1
            raise ProviderUnavailable(
                f"connection {record.id} is cooling down after a failed refresh (retry in {seconds}s): "
                f"{record.last_error}"
            )

    def _grant(self, record: ConnectionRecord) -> AccessGrant:
        assert record.token_expires_at is not None
        token, expires_at = self._access_token(record), record.token_expires_at
        return AccessGrant(record.id, record.account_id, token, expires_at, record.provider)

    def _access_token(self, record: ConnectionRecord) -> str:
        key = (record.id, record.access_token or "")
        token = self._opened.get(key)
        if token is None:
            token = self.parts.vault.access_token(record)  # raises for a row without tokens
            if len(self._opened) >= _OPENED_MAX:
                self._opened.clear()  # tokens rotate: old entries are dead weight, and this stays bounded
            self._opened[key] = token
        return token


#: Decrypted access tokens kept per TokenProvider (one a connection in use, so this is plenty).
_OPENED_MAX = 4096


def _busy(connection_id: int) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"connection {connection_id}: another caller is refreshing it and did not finish in time (TOKEN_WAIT_S)"
    )


def _failure(connection_id: int, outcome: Outcome, error: Exception | None) -> Exception:
    if outcome is Outcome.EXPIRED:
        return ConnectionExpired(
            f"connection {connection_id}: Lightspeed refused the refresh token (invalid_grant): "
            "the merchant must reconnect"
        )
    if isinstance(error, ProviderError):
        return error
    return ProviderUnavailable(
        f"connection {connection_id}: the refresh failed ({policy.describe(error or Exception())})"
    )


def _check_refreshable(record: ConnectionRecord) -> None:
    if record.status not in REFRESHABLE:
        raise ConnectionExpired(f"connection {record.id} is {record.status.value}: the merchant must reconnect")


__all__ = ["AccessGrant", "TokenProvider"]

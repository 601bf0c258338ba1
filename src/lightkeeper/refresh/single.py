"""Refreshing one connection whose lease we hold: call Lightspeed, then write the outcome under that lease.

The order is the whole point (invariants 1-3):

* nothing is sent on a lease with less than ``HTTP_TIMEOUT_S`` left (a token request never outlives it);
* the new pair is committed, under our lease token and the ``token_version`` we read, before anyone can use
  its access token; a pair Lightspeed issued is never thrown away for a missing field;
* a failure never overwrites a token; only ``invalid_grant`` marks a connection expired; an undecryptable row
  is that row's error; only an OAuth ``invalid_client`` stops everything, as a configuration fault.

An outcome write that finds the lease or the tokens changed lands nowhere and is not counted in the run:
whoever holds the connection now (or the run claiming it again) writes and counts it. This process reports
it as ``skipped`` (``lease_lost``).

Each outcome is reported once, after its write returned: one ``refresh`` log event (connection, account,
outcome, reason, duration, run, trigger) and one count in ``lightkeeper_refresh_attempts_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from ..clock import Clock
from ..errors import ConfigError, DecryptError, InvalidClient, ProviderError, UnknownKey
from ..lightspeed import TokenSet
from ..lightspeed.oauth import AsyncSender
from ..lightspeed.pacing import Pacer, Stopped, retry_once_after, retry_once_after_async
from ..lightspeed.providers import Provider, Providers
from ..lightspeed.senders import ThreadedSender
from ..metrics import Reason, count_refresh, failure_reason, observe_refresh_seconds
from ..store import ConnectionRecord, ConnectionRepo, Lease, RunRepo, Store, Tally
from ..vault import TokenVault
from . import policy
from .locks import ConnectionLocks
from .policy import Outcome

log = logging.getLogger(__name__)

#: The ``trigger`` of a refresh outside any run: a caller asked for a token (``fresh_token``).
ON_DEMAND = "on_demand"


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did: its outcome, the committed pair (if saved), the failure (if any)."""

    outcome: Outcome
    tokens: TokenSet | None = None
    error: Exception | None = None


T = TypeVar("T")


class DatabaseCalls(Protocol):
    """How a run's event loop calls the (blocking) store: ``await calls(fn, *args)`` (see ``drain``)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class _NotSent(Exception):
    """The lease has too little time left for one more request: it is not sent."""


@dataclass(frozen=True)
class RefreshParts:
    """What the callers of a ``Refresher`` use beside its verbs (a run, its drain, the on-demand provider):
    handed to them explicitly, so each says what it depends on instead of reaching through the refresher."""

    connections: ConnectionRepo
    #: The run records (a run is a store-wide thing: its claims and counts are rows every process shares).
    runs: RunRepo
    vault: TokenVault
    #: The configured providers (a run drains each in turn; a connection's provider opens its requests).
    providers: Providers
    #: Each provider's token-request spacing (its OAuth client's slot row and Retry-After hold), by name.
    pacers: Mapping[str, Pacer]
    locks: ConnectionLocks
    clock: Clock
    owner: str
    lease: timedelta
    http_timeout: float
    #: REFRESH_MAX_RETRY_AFTER_S: a hold on a provider's client longer than this ends a run's drain of it.
    max_hold: float = 30.0

    def pacer(self, provider: str) -> Pacer:
        """The provider's pacer; ``ConfigError`` when the deployment no longer configures the provider."""
        if provider not in self.pacers:
            self.providers[provider]  # raises, naming the setting that is missing
        return self.pacers[provider]


@dataclass
class Refresher:
    """What a refresh needs, built once per process and shared by every worker thread."""

    store: Store
    vault: TokenVault
    providers: Providers
    #: Each configured provider's pacer, by name (see ``RefreshParts.pacers``).
    pacers: Mapping[str, Pacer]
    clock: Clock
    owner: str
    lease: timedelta = timedelta(seconds=120)
    #: A 429 asking us to wait longer than this is recorded as an error instead of waited out.
    max_retry_after: float = 30.0
    #: HTTP_TIMEOUT_S: the total deadline of one request, and the least lease left to send one.
    http_timeout: float = 20.0
    locks: ConnectionLocks = field(default_factory=ConnectionLocks)
    #: A refresh run's token-request sender for ``concurrency`` requests at once (``lightspeed.senders``);
    #: by default httpx2 on threads, the seam ``Keeper`` replaces with aiohttp when no transport is handed in.
    open_sender: Callable[[int], AbstractAsyncContextManager[AsyncSender]] | None = None
    _log: logging.Logger = field(default=log, repr=False)

    @property
    def parts(self) -> RefreshParts:
        return RefreshParts(
            connections=self.store.connections,
            runs=self.store.runs,
            vault=self.vault,
            providers=self.providers,
            pacers=self.pacers,
            locks=self.locks,
            clock=self.clock,
            owner=self.owner,
            lease=self.lease,
            http_timeout=self.http_timeout,
            max_hold=self.max_retry_after,
        )

    def sender(self, concurrency: int) -> AbstractAsyncContextManager[AsyncSender]:
        """A sender for a run's token requests, ``concurrency`` at once (open it inside the run's loop)."""
        if self.open_sender is not None:
            return self.open_sender(concurrency)
        # Any provider's ``send`` sends any token request: the request carries its URL and form.
        return ThreadedSender(next(iter(self.providers.values())), limit=concurrency)

    def provider_of(self, record: ConnectionRecord) -> Provider:
        """The connection's provider; ``ConfigError`` when the deployment no longer configures it."""
        return self.providers[record.provider]

    def refresh_claimed(self, lease: Lease, *, trigger: str, run_id: int | None = None) -> Outcome:
        """Refresh a connection a run claimed; with ``run_id`` the outcome is counted in that run by the
        transaction that records it."""
        if self._skipped_backing_off(lease, trigger, run_id):
            return Outcome.SKIPPED
        return self.refresh(lease, run_id=run_id, trigger=trigger).outcome

    async def refresh_claimed_async(
        self,
        lease: Lease,
        sender: AsyncSender,
        calls: DatabaseCalls,
        *,
        trigger: str,
        run_id: int,
        slot: float | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> Outcome | None:
        """``refresh_claimed`` on a run's event loop: the request goes through ``sender``, the database
        work through ``calls`` (threads of their own), and leaves on its pacing ``slot`` (``Pacer.on_time``).
        None when ``stopped()`` turned true before anything was sent: the claim is handed back to the run."""
        if await calls(self._skipped_backing_off, lease, trigger, run_id):
            return Outcome.SKIPPED
        report = _Report(self, lease, run_id, trigger)
        try:
            attempt = await self._attempt_async(lease, sender, calls, slot, stopped)
            if isinstance(attempt, Stopped):
                await calls(self.store.connections.unclaim, lease.record.id, lease.token)
                return None
            return (await calls(self._conclude, lease, report, attempt)).outcome
        except BaseException:
            await calls(self.store.connections.unclaim, lease.record.id, lease.token)
            raise

    def refresh(
        self, lease: Lease, *, run_id: int | None = None, trigger: str = ON_DEMAND, slot: float | None = None
    ) -> RefreshResult:
        """Refresh under our lease and write the outcome; the lease always ends here. With ``slot`` (a pacing
        slot taken before the lease), the request leaves on it (``Pacer.on_time_sync``)."""
        try:
            return self._conclude(lease, _Report(self, lease, run_id, trigger), self._attempt(lease, slot))
        except BaseException:
            # Handed back, not released: a run claims it again and counts it (this participant is leaving).
            self.store.connections.unclaim(lease.record.id, lease.token)
            raise

    def _skipped_backing_off(self, lease: Lease, trigger: str, run_id: int | None) -> bool:
        """An automatic run leaves a connection in its backoff alone: released, counted skipped."""
        if not policy.should_skip(lease.record, trigger, self.clock()):
            return False
        report = _Report(self, lease, run_id, trigger)
        released = self.store.connections.release(lease.record.id, lease.token, tally=_tally(run_id, Outcome.SKIPPED))
        report(Outcome.SKIPPED, Reason.BACKOFF if released else Reason.LEASE_LOST)
        return True

    def _attempt(self, lease: Lease, slot: float | None = None) -> TokenSet | Exception:
        """The new pair, or what went wrong (``_conclude`` decides what it means)."""
        try:
            provider = self.provider_of(lease.record)
            refresh_token = self._refresh_token_to_send(lease)
            account_id = lease.record.account_id
            pacer = self.pacers[provider.name]
            if slot is not None:  # the last step before the send, as a run's (``_on_time``)
                self._on_time_sync(lease, pacer, slot)
            return retry_once_after(
                lambda: self._timed(lambda token: provider.refresh(token, account_id), refresh_token),
                pacer=pacer,
                max_wait=self.max_retry_after,
                may_send=lambda: self._lease_outlives_a_request(lease),
            )
        except Exception as exc:
            return exc

    async def _attempt_async(
        self,
        lease: Lease,
        sender: AsyncSender,
        calls: DatabaseCalls,
        slot: float | None,
        stopped: Callable[[], bool] | None,
    ) -> TokenSet | Exception:
        try:
            provider = self.provider_of(lease.record)
            refresh_token = self._refresh_token_to_send(lease)
            if slot is not None:
                await self._on_time(lease, slot, calls, stopped)
            return await retry_once_after_async(
                lambda: self._timed_async(provider, sender, refresh_token, lease.record.account_id),
                pacer=self.pacers[provider.name],
                max_wait=self.max_retry_after,
                may_send=lambda: self._lease_outlives_a_request(lease),
                offload=calls,
                stopped=stopped,
            )
        except Exception as exc:
            return exc

    async def _on_time(
        self, lease: Lease, slot: float, calls: DatabaseCalls, stopped: Callable[[], bool] | None
    ) -> None:
        """Wait for the pacing slot, the last step before sending (``Pacer.on_time``); ``_NotSent`` when a new
        slot ate so much of the lease that less than a request's worth is left, ``Stopped`` when asked to stop."""
        pacer = self.pacers[lease.record.provider]
        await pacer.on_time(slot, lambda: calls(pacer.reserve), lambda: calls(pacer.read_hold), stopped=stopped)
        if not self._lease_outlives_a_request(lease):
            raise _NotSent

    def _on_time_sync(self, lease: Lease, pacer: Pacer, slot: float) -> None:
        pacer.on_time_sync(slot)
        if not self._lease_outlives_a_request(lease):
            raise _NotSent

    def _conclude(self, lease: Lease, report: _Report, attempt: TokenSet | Exception) -> RefreshResult:
        """Write what the attempt came to, under our lease, and report it."""
        if isinstance(attempt, TokenSet):
            outcome = self._save(lease, attempt, report.run_id)
            report(outcome, Reason.NONE if outcome is Outcome.REFRESHED else Reason.LEASE_LOST)
            return RefreshResult(outcome, tokens=attempt if outcome is Outcome.REFRESHED else None)
        if isinstance(attempt, InvalidClient):
            self.store.connections.release(lease.record.id, lease.token)
            report(Outcome.ERROR, Reason.INVALID_CLIENT, attempt)
            raise ConfigError(_INVALID_CLIENT) from attempt
        if isinstance(attempt, _NotSent):
            return RefreshResult(self._not_sent(lease, report))
        if not isinstance(attempt, DecryptError | ProviderError):  # a bug must cost one connection, not the run
            self._log.error("unexpected error refreshing connection %s", lease.record.id, exc_info=attempt)
        return RefreshResult(self._failed(lease, attempt, report), error=attempt)

    def _refresh_token_to_send(self, lease: Lease) -> str:
        refresh_token = self.vault.refresh_token(lease.record)
        if not self._lease_outlives_a_request(lease):
            raise _NotSent
        return refresh_token

    def _timed(self, call: Callable[[str], TokenSet], refresh_token: str) -> TokenSet:
        started = time.monotonic()
        try:
            return call(refresh_token)
        finally:  # failures too: a slow timeout is exactly what the histogram is for
            observe_refresh_seconds(time.monotonic() - started)

    async def _timed_async(
        self, provider: Provider, sender: AsyncSender, refresh_token: str, account_id: str
    ) -> TokenSet:
        started = time.monotonic()
        try:
            return await provider.refresh_with(sender, refresh_token, account_id)
        finally:
            observe_refresh_seconds(time.monotonic() - started)

    def _lease_outlives_a_request(self, lease: Lease) -> bool:
        """Policy of invariant 1: send only on a lease with at least ``HTTP_TIMEOUT_S`` left."""
        return lease.seconds_left() >= self.http_timeout

    def _save(self, lease: Lease, tokens: TokenSet, run_id: int | None) -> Outcome:
        record = lease.record
        saved = self.store.connections.save_tokens(
            record.id,
            lease_token=lease.token,
            version=record.token_version,
            tokens=self.vault.seal(record.id, tokens),
            now=self.clock(),
            tally=_tally(run_id, Outcome.REFRESHED),
        )
        if saved:
            return Outcome.REFRESHED
        # Our lease ended (this process was paused past it) and another holder took the connection over.
        self._log.warning("connection %s: lease lost during refresh; the new lease holder's tokens stand", record.id)
        return Outcome.SKIPPED

    def _failed(self, lease: Lease, exc: Exception, report: _Report) -> Outcome:
        record, now, error, run_id = lease.record, self.clock(), _describe(exc, lease.record), report.run_id
        if isinstance(exc, ProviderError) and policy.is_fatal_for_connection(exc):
            outcome = Outcome.EXPIRED
            marked = self.store.connections.mark_expired(
                record.id,
                lease_token=lease.token,
                version=record.token_version,
                error=error,
                now=now,
                tally=_tally(run_id, outcome),
            )
        else:
            outcome = Outcome.ERROR
            marked = self.store.connections.mark_error(
                record.id,
                lease_token=lease.token,
                version=record.token_version,
                error=error,
                retry_at=policy.retry_at(record, exc, now),
                now=now,
                tally=_tally(run_id, outcome),
            )
        if not marked:  # the lease or the tokens moved on
            report(Outcome.SKIPPED, Reason.LEASE_LOST)
            return Outcome.SKIPPED
        report(outcome, failure_reason(exc), error)
        return outcome

    def _not_sent(self, lease: Lease, report: _Report) -> Outcome:
        self._log.warning("connection %s: lease too short to send a refresh; left for the next run", lease.record.id)
        tally = _tally(report.run_id, Outcome.SKIPPED)
        released = self.store.connections.release(lease.record.id, lease.token, tally=tally)
        report(Outcome.SKIPPED, Reason.LEASE_TOO_SHORT if released else Reason.LEASE_LOST)
        return Outcome.SKIPPED


@dataclass
class _Report:
    """Reports one refresh's outcome once its write returned: a count and one structured log event."""

    refresher: Refresher
    lease: Lease
    run_id: int | None
    trigger: str
    started: float = field(default_factory=time.monotonic)

    def __call__(self, outcome: Outcome, reason: Reason, error: Exception | str | None = None) -> None:
        count_refresh(outcome.value, reason)
        failed = outcome in (Outcome.ERROR, Outcome.EXPIRED)
        level = logging.WARNING if failed else logging.INFO
        logger = self.refresher._log
        if logger.isEnabledFor(level):  # no formatting work for a disabled level
            logger.log(level, self._message(outcome, error), extra=self._extra(outcome, reason))

    def _message(self, outcome: Outcome, error: Exception | str | None) -> str:
        text = f"connection {self.lease.record.id} {outcome.value}"
        if error is None:
            return text
        return f"{text}: {error if isinstance(error, str) else _describe(error)}"

    def _extra(self, outcome: Outcome, reason: Reason) -> dict[str, object]:
        fields = {
            "connection_id": self.lease.record.id,
            "account_id": self.lease.record.account_id,
            "outcome": outcome.value,
            "reason": reason.value,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            "run_id": self.run_id,
            "trigger": self.trigger,
        }
        return {"event": "refresh", "fields": fields}


_INVALID_CLIENT = (
    "Lightspeed rejected the client credentials (invalid_client): check LIGHTSPEED_CLIENT_ID and "
    "LIGHTSPEED_CLIENT_SECRET; no connection was changed"
)

_TALLY_FIELD = {
    Outcome.REFRESHED: "refreshed",
    Outcome.EXPIRED: "expired",
    Outcome.ERROR: "errors",
    Outcome.SKIPPED: "skipped",
}


def _tally(run_id: int | None, outcome: Outcome) -> Tally | None:
    return None if run_id is None else Tally(run_id, _TALLY_FIELD[outcome])


def _describe(exc: Exception, record: ConnectionRecord | None = None) -> str:
    if isinstance(exc, UnknownKey):
        return f"stored tokens cannot be decrypted: {exc}"
    if isinstance(exc, DecryptError):
        return f"stored tokens were tampered with or copied from another row: {exc}"
    return policy.describe(exc, record)


__all__ = ["ON_DEMAND", "DatabaseCalls", "RefreshResult", "Refresher"]

"""Refreshing one connection whose lease we hold: call Lightspeed, then commit the outcome.

The order is the whole point (invariants 1-3): the new pair is committed, guarded by compare-and-swap on
``token_version``, before anyone can use its access token; a failure never overwrites a token; only
``invalid_grant`` marks a connection expired; ``invalid_client`` and an unknown encryption key stop
everything as configuration faults and change no connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from ..clock import Clock
from ..errors import ConfigError, DecryptError, InvalidClient, ProviderError, RateLimited, UnknownKey
from ..lightspeed import OAuthClient, TokenSet
from ..store import ConnectionRecord, Store, Tally
from ..vault import TokenVault
from . import policy
from .pacing import Pacer
from .policy import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did: its outcome, the committed pair (if saved), the failure (if any)."""

    outcome: Outcome
    tokens: TokenSet | None = None
    error: Exception | None = None


@dataclass
class Refresher:
    """What a refresh needs, built once per process and shared by every worker thread."""

    store: Store
    vault: TokenVault
    oauth: OAuthClient
    pacer: Pacer
    clock: Clock
    owner: str
    lease: timedelta = timedelta(seconds=120)
    #: A 429 asking us to wait longer than this is recorded as an error instead of waited out.
    max_retry_after: float = 60.0
    _log: logging.Logger = field(default=log, repr=False)

    def refresh_claimed(self, record: ConnectionRecord, *, trigger: str, run_id: int | None = None) -> Outcome:
        """Refresh a connection this process holds the lease of (a run); the lease is always released.

        With ``run_id`` the outcome is counted in that run by the same transaction that records it.
        """
        if policy.should_skip(record, trigger, self.clock()):
            self.store.connections.release(record.id, self.owner, tally=_tally(run_id, Outcome.SKIPPED))
            return Outcome.SKIPPED
        return self.refresh_leased(record, run_id=run_id).outcome

    def refresh_leased(self, record: ConnectionRecord, *, run_id: int | None = None) -> RefreshResult:
        """Refresh under our lease and commit the outcome; with the new pair when it was saved."""
        try:
            return self._refresh(record, run_id)
        except BaseException:
            self.store.connections.release(record.id, self.owner)
            raise

    def _refresh(self, record: ConnectionRecord, run_id: int | None) -> RefreshResult:
        try:
            tokens = self._call_lightspeed(record)
        except (InvalidClient, UnknownKey) as exc:
            raise ConfigError(_config_message(exc)) from exc
        except DecryptError as exc:
            return RefreshResult(self._undecryptable(record, exc, run_id), error=exc)
        except ProviderError as exc:
            return RefreshResult(self._failed(record, exc, run_id), error=exc)
        except Exception as exc:  # a bug must cost one connection, not the run
            self._log.exception("unexpected error refreshing connection %s", record.id)
            return RefreshResult(self._failed(record, exc, run_id), error=exc)
        outcome = self._save(record, tokens, run_id)
        return RefreshResult(outcome, tokens=tokens if outcome is Outcome.REFRESHED else None)

    def _call_lightspeed(self, record: ConnectionRecord) -> TokenSet:
        refresh_token = self.vault.refresh_token(record)
        try:
            return self._send(refresh_token)
        except RateLimited as exc:
            if exc.retry_after is None or exc.retry_after > self.max_retry_after:
                raise
            self.pacer.hold(exc.retry_after)  # everyone waits, then this one tries once more
            return self._send(refresh_token)

    def _send(self, refresh_token: str) -> TokenSet:
        self.pacer.wait()
        return self.oauth.refresh(refresh_token)

    def _save(self, record: ConnectionRecord, tokens: TokenSet, run_id: int | None) -> Outcome:
        sealed = self.vault.seal(record.id, tokens)
        saved = self.store.connections.save_tokens(
            record.id, version=record.token_version, tokens=sealed, now=self.clock(),
            tally=_tally(run_id, Outcome.REFRESHED),
        )  # fmt: skip
        if saved:
            self._log.info("connection %s refreshed, access token valid until %s", record.id, tokens.expires_at)
            return Outcome.REFRESHED
        # Our lease ran out and another refresher saved first: its pair is the live one, ours is dropped.
        self._log.warning("connection %s: tokens changed during refresh; keeping the newer pair", record.id)
        self.store.connections.release(record.id, self.owner, tally=_tally(run_id, Outcome.SKIPPED))
        return Outcome.SKIPPED

    def _failed(self, record: ConnectionRecord, exc: Exception, run_id: int | None) -> Outcome:
        now, error, version = self.clock(), policy.describe(exc), record.token_version
        connections = self.store.connections
        if isinstance(exc, ProviderError) and policy.is_fatal_for_connection(exc):
            outcome = Outcome.EXPIRED
            marked = connections.mark_expired(record.id, version=version, error=error, now=now,
                                              tally=_tally(run_id, outcome))  # fmt: skip
        else:
            outcome = Outcome.ERROR
            retry = policy.retry_at(record, exc, now) if isinstance(exc, ProviderError) else now + policy.backoff(1)
            marked = connections.mark_error(record.id, version=version, error=error, retry_at=retry, now=now,
                                            tally=_tally(run_id, outcome))  # fmt: skip
        self._log.warning("connection %s: %s (%s)", record.id, outcome.value, error)
        if not marked:  # tokens were replaced meanwhile: our failure is about a stale pair
            connections.release(record.id, self.owner, tally=_tally(run_id, Outcome.SKIPPED))
            return Outcome.SKIPPED
        return outcome

    def _undecryptable(self, record: ConnectionRecord, exc: DecryptError, run_id: int | None) -> Outcome:
        """A tampered row changes nothing: it is reported, left as it is, and the run goes on."""
        self._log.error("connection %s: stored tokens cannot be decrypted: %s", record.id, exc)
        self.store.connections.release(record.id, self.owner, tally=_tally(run_id, Outcome.ERROR))
        return Outcome.ERROR


_TALLY_FIELD = {
    Outcome.REFRESHED: "refreshed",
    Outcome.EXPIRED: "expired",
    Outcome.ERROR: "errors",
    Outcome.SKIPPED: "skipped",
}


def _tally(run_id: int | None, outcome: Outcome) -> Tally | None:
    return None if run_id is None else Tally(run_id, _TALLY_FIELD[outcome])


def _config_message(exc: Exception) -> str:
    if isinstance(exc, InvalidClient):
        return (
            "Lightspeed rejected the client credentials (invalid_client): check LIGHTSPEED_CLIENT_ID and "
            "LIGHTSPEED_CLIENT_SECRET; no connection was changed"
        )
    return f"{exc}; no connection was changed"


__all__ = ["RefreshResult", "Refresher"]

"""Refresh policy as pure functions of the record, the error and ``now``: no I/O, no clock reads."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from ..cron import next_tick
from ..errors import InvalidGrant, ProviderError, RateLimited
from ..store import AUTOMATIC_TRIGGERS, ConnectionRecord, StrictCutoffs

#: Backoff after consecutive transient failures: 1, 2, 4 … minutes, capped at an hour so that a
#: schedule of every few hours always retries, while a broken connection never hammers Lightspeed.
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    EXPIRED = "expired"
    ERROR = "error"
    SKIPPED = "skipped"


def strict_cutoffs(now: datetime, schedule: str, leeway_s: float, max_idle_s: float) -> StrictCutoffs:
    """Which connections of strict rotation (no grace window) a full run starting at ``now`` refreshes: those
    whose access token expires before the schedule's next tick plus ``leeway_s`` (the next run would be too
    late), and those last refreshed more than ``max_idle_s`` ago. Each refresh of theirs risks the chain, so never
    more often than that."""
    tick = next_tick(schedule, now)
    return StrictCutoffs(
        expiring_before=tick + timedelta(seconds=leeway_s), idle_before=now - timedelta(seconds=max_idle_s)
    )


def backoff(failures: int) -> timedelta:
    """How long to leave a connection alone after its ``failures``-th failure in a row (1-based)."""
    exponent = max(0, min(failures - 1, 16))
    delay: timedelta = BACKOFF_BASE * 2**exponent
    return min(delay, BACKOFF_CAP)


def retry_at(record: ConnectionRecord, error: Exception, now: datetime) -> datetime:
    """When a connection that just failed may be tried again: its backoff, or longer if Lightspeed asked."""
    wait = backoff(record.consecutive_failures + 1)
    if isinstance(error, RateLimited) and error.retry_after:
        wait = max(wait, timedelta(seconds=error.retry_after))
    return now + wait


def in_backoff(record: ConnectionRecord, now: datetime) -> bool:
    return record.next_attempt_at is not None and record.next_attempt_at > now


def should_skip(record: ConnectionRecord, trigger: str, now: datetime) -> bool:
    return trigger in AUTOMATIC_TRIGGERS and in_backoff(record, now)


def is_fatal_for_connection(error: ProviderError) -> bool:
    """Only ``invalid_grant`` means the merchant must reconnect (invariant 3)."""
    return isinstance(error, InvalidGrant)


def needs_refresh(record: ConnectionRecord, now: datetime, leeway: timedelta) -> bool:
    """An access token expiring within ``leeway`` is refreshed before use."""
    return record.token_expires_at is None or record.token_expires_at - leeway <= now


#: What a dead refresh token means on a provider of strict rotation (no grace window to recover a lost answer).
#: Both causes end the same way, and the provider's answer does not say which it was.
LOST_ROTATION = (
    "the rotation was lost, or the merchant removed access: this provider revokes a refresh token the moment it "
    "issues the next, so a refresh whose answer was lost before it was saved (a crash, a cut connection) ends the "
    "chain, as does removing the add-on in the store; either way the merchant must reconnect"
)


def describe(error: Exception, record: ConnectionRecord | None = None) -> str:
    """The one-line ``last_error`` for a failure of ``record``'s refresh. Our errors' messages never hold a
    token. A dead refresh token of strict rotation names both things that could have happened."""
    if isinstance(error, InvalidGrant) and record is not None and record.strict_rotation:
        return f"{error} ({LOST_ROTATION})"
    if isinstance(error, ProviderError):
        return str(error)
    return f"unexpected {type(error).__name__} while refreshing (see the service log)"


__all__ = [
    "AUTOMATIC_TRIGGERS",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "LOST_ROTATION",
    "Outcome",
    "backoff",
    "describe",
    "in_backoff",
    "is_fatal_for_connection",
    "needs_refresh",
    "retry_at",
    "should_skip",
]

"""The outbox's upkeep, in every ``serve`` and ``worker`` whether or not it delivers (NOTIFY_WEBHOOK_URL).

Events are written by every process in the transaction of the change they report; only their delivery depends
on configuration. So that the outbox neither misses an alert nor grows without end where nothing delivers:

- ``sweep`` writes ``connection.error`` for connections in ``error`` longer than ``NOTIFY_ERROR_AFTER_S``;
- ``tidy`` makes ``dead`` the ``pending`` events older than ``NOTIFY_GIVE_UP_S`` + ``GIVE_UP_GRACE`` that nobody
  sends (a delivering process makes its last attempt on the ``NOTIFY_GIVE_UP_S`` deadline itself; the grace
  leaves it that attempt), and deletes ``delivered`` and ``dead`` events settled more than
  ``NOTIFY_RETENTION_DAYS`` ago. Each round touches at most ``TIDY_BATCH`` events of each kind: a backlog is
  worked off over the next rounds, and no round holds the table for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..clock import Clock
from ..config import Settings
from ..store import EventsRepo
from ..store.events import TIDY_BATCH

#: How long after ``NOTIFY_GIVE_UP_S`` a pending event is left to a delivering process before it is given up.
GIVE_UP_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class UpkeepPolicy:
    error_after: timedelta
    give_up: timedelta
    retention: timedelta
    batch: int = TIDY_BATCH

    @classmethod
    def from_settings(cls, settings: Settings) -> UpkeepPolicy:
        return cls(
            error_after=timedelta(seconds=settings.notify_error_after_s),
            give_up=timedelta(seconds=settings.notify_give_up_s),
            retention=timedelta(days=settings.notify_retention_days),
        )


@dataclass(frozen=True)
class Tidied:
    given_up: int
    pruned: int


class Upkeep:
    def __init__(self, events: EventsRepo, policy: UpkeepPolicy, *, clock: Clock) -> None:
        self._events = events
        self._policy = policy
        self._clock = clock

    def sweep(self) -> int:
        """Write ``connection.error`` for connections in ``error`` longer than ``NOTIFY_ERROR_AFTER_S``."""
        now = self._clock()
        return len(self._events.sweep_errors(errored_before=now - self._policy.error_after, now=now))

    def tidy(self) -> Tidied:
        """Give up pending events nobody sent, and delete settled ones past their retention (bounded)."""
        now = self._clock()
        limit = self._policy.batch
        given_up = self._events.give_up_stale(created_before=now - self._policy.give_up - GIVE_UP_GRACE, limit=limit)
        pruned = self._events.prune(settled_before=now - self._policy.retention, limit=limit)
        return Tidied(given_up, pruned)


__all__ = ["GIVE_UP_GRACE", "Tidied", "Upkeep", "UpkeepPolicy"]

"""What the dashboard remembers between requests: signed-out sessions, and wrong keys per client address.

``DashboardAuth`` is handed a ``DashboardState`` and decides with it. ``serve`` hands it the database's
(``Keeper.dashboard_state``, ``store/dashboard.py``), which every replica behind a load balancer shares: a cookie
signed out on one replica is refused by all of them, and guesses spread over the replicas are counted together.
``MemoryDashboardState`` is one process's, with the same rules and the same bound (``MAX_TRACKED``), for an
auth built by hand (tests) where no other process is to be told.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from ..store.dashboard import MAX_TRACKED

T = TypeVar("T")


class DashboardState(Protocol):
    """The dashboard's state: the policy (how many failures, how long to wait) is the caller's; the state counts
    and remembers. Times are timezone-aware, from the dashboard's clock."""

    def end_session(self, session_hash: str, *, expires_at: datetime, now: datetime) -> None:
        """Refuse the session ``session_hash`` (a hash of its id) until ``expires_at``, its own end."""

    def session_ended(self, session_hash: str) -> bool:
        """Whether the session was signed out."""

    def login_blocked_until(self, address: str) -> datetime | None:
        """Until when ``address`` is refused unchecked (None: it may try)."""

    def login_failed(
        self, address: str, *, now: datetime, forget_before: datetime, block_s: Callable[[int], int | None]
    ) -> int | None:
        """Count a wrong key from ``address`` (the first again when its last came before ``forget_before``); block
        it for ``block_s(failures)`` seconds from ``now`` unless that is None; those seconds, or None."""

    def login_succeeded(self, address: str) -> None:
        """The right key from ``address``: its count starts again."""


@dataclass
class _Failures:
    failures: int
    last: datetime
    blocked_until: datetime | None = None


class MemoryDashboardState:
    """A ``DashboardState`` in this process's memory; beyond ``MAX_TRACKED`` entries the oldest are forgotten."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._max_tracked = max_tracked
        self._ended: dict[str, datetime] = {}  # session hash -> the session's end
        self._failures: dict[str, _Failures] = {}  # least recent failure first
        self._lock = threading.Lock()

    def end_session(self, session_hash: str, *, expires_at: datetime, now: datetime) -> None:
        with self._lock:
            for ended, expires in list(self._ended.items()):
                if expires <= now:
                    del self._ended[ended]
            self._ended[session_hash] = expires_at
            self._bound(self._ended)

    def session_ended(self, session_hash: str) -> bool:
        with self._lock:
            return session_hash in self._ended

    def login_blocked_until(self, address: str) -> datetime | None:
        with self._lock:
            record = self._failures.get(address)
            return record.blocked_until if record else None

    def login_failed(
        self, address: str, *, now: datetime, forget_before: datetime, block_s: Callable[[int], int | None]
    ) -> int | None:
        with self._lock:
            record = self._failures.pop(address, None)
            if record is None or record.last < forget_before:
                record = _Failures(0, now)
            record.failures += 1
            record.last = now
            wait = block_s(record.failures)
            if wait is not None:
                record.blocked_until = now + timedelta(seconds=wait)
            self._failures[address] = record  # the most recent last: the oldest are forgotten first
            self._bound(self._failures)
        return wait

    def login_succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _bound(self, entries: dict[str, T]) -> None:
        while len(entries) > self._max_tracked:
            del entries[next(iter(entries))]


__all__ = ["DashboardState", "MemoryDashboardState"]

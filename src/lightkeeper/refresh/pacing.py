"""Spacing refresh requests for the whole deployment: ``REFRESH_DELAY_MS`` and ``Retry-After``.

Lightspeed rate-limits (and may block) the OAuth client as a whole, so the spacing holds across every process
sharing the database (invariant 7): slots come from ``store.PacingRepo``, one row that every process updates.
``LocalSlots`` keeps them in memory, for one process and for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

REFRESH = "refresh"


class Slots(Protocol):
    """Where send slots live: ``store.PacingRepo`` (shared) or ``LocalSlots`` (this process)."""

    def take(self, name: str, interval_s: float) -> float: ...

    def hold(self, name: str, seconds: float) -> None: ...

    def pending(self, name: str) -> float: ...


class LocalSlots:
    """Send slots of one process, in memory (the same contract as ``store.PacingRepo``)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, name: str, interval_s: float) -> float:
        with self._lock:
            now = self._monotonic()
            slot = max(now, self._next.get(name, 0.0))
            self._next[name] = slot + interval_s
        return slot - now

    def hold(self, name: str, seconds: float) -> None:
        with self._lock:
            self._next[name] = max(self._next.get(name, 0.0), self._monotonic() + seconds)

    def pending(self, name: str) -> float:
        with self._lock:
            return max(0.0, self._next.get(name, 0.0) - self._monotonic())


class Pacer:
    """Hands out send slots at least ``interval_s`` apart; ``hold`` pauses everyone (``Retry-After``).

    With ``interval_s`` 0 no slot is taken (so replicas speed a run up), but a hold still stops every sender.
    """

    def __init__(
        self,
        interval_s: float,
        slots: Slots | None = None,
        *,
        name: str = REFRESH,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval_s = max(0.0, interval_s)
        self._slots: Slots = slots if slots is not None else LocalSlots()
        self._name = name
        self._sleep = sleep

    def wait(self) -> float:
        """Block until this caller may send; returns how long it waited."""
        if self.interval_s > 0:
            delay = self._slots.take(self._name, self.interval_s)
        else:
            delay = self._slots.pending(self._name)
        if delay > 0:
            self._sleep(delay)
        return delay

    def hold(self, seconds: float) -> None:
        """No slot is handed out for ``seconds`` from now, in any process sharing the slots."""
        self._slots.hold(self._name, seconds)


__all__ = ["REFRESH", "LocalSlots", "Pacer", "Slots"]

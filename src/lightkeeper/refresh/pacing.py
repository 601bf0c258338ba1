"""One limiter shared by every refresh of a process: spaces requests to Lightspeed and honours 429s.

The seed guide slept 200 ms between accounts; here the spacing holds across concurrent workers, so
concurrency hides latency without raising the request rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Hands out send slots at least ``interval_s`` apart; ``hold`` pauses everyone (``Retry-After``)."""

    def __init__(
        self,
        interval_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = max(0.0, interval_s)
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this caller may send; returns how long it waited."""
        with self._lock:
            now = self._monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay

    def hold(self, seconds: float) -> None:
        """No slot is handed out for ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, self._monotonic() + seconds)


__all__ = ["Pacer"]

"""Whether the scheduler loop is alive: when it last showed a sign of life, on the monotonic clock.

The loop beats at every iteration, and for every connection a run it helps finishes (a long run keeps the
loop in one step for as long as it lasts). ``/healthz`` calls the loop stalled after no beat for twice its
poll interval, and never less than ``MIN_STALL_S``; a loop that has just started is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..metrics import scheduler_ticked

#: The least silence called a stall: a poll interval of a second must not flap on one slow database call.
MIN_STALL_S = 30.0


class LoopLiveness:
    def __init__(self, poll_s: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.stall_after_s = max(2 * poll_s, MIN_STALL_S)
        self._last = monotonic()  # healthy at start

    def beat(self) -> None:
        """The loop is alive now (also exported as ``lightkeeper_scheduler_last_tick_timestamp_seconds``)."""
        self._last = self._monotonic()
        scheduler_ticked()

    def seconds_since_beat(self) -> float:
        return max(0.0, self._monotonic() - self._last)

    def alive(self) -> bool:
        return self.seconds_since_beat() <= self.stall_after_s


__all__ = ["MIN_STALL_S", "LoopLiveness"]

"""A run's cutoffs, read as it starts: which connections a due-based run (``REFRESH_DUE_AFTER``) refreshes, and
which connections of strict rotation (X-Series) a full run does. ``refresh.policy`` has the rules; this reads
their inputs.

Every way a run starts asks them alike (``Keeper.refresh`` and ``begin_run``, a cron tick, a queued request), from
the clock, three settings and the job's schedule as it is now (operators change it while processes run). They
were helpers inside ``Keeper``; they live here, beside the schedule whose next tick they depend on, so that the
facade stays a list of verbs within the 500 lines a module may have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..clock import Clock
from ..config import Settings
from ..refresh import policy
from ..store import Job, StrictCutoffs


@dataclass(frozen=True)
class RunCutoffs:
    """The cutoffs of a run starting now, from ``settings``, ``clock`` and the refresh ``job`` as it is now."""

    settings: Settings
    clock: Clock
    job: Callable[[], Job]

    def strict(self) -> StrictCutoffs:
        """Which connections of strict rotation a full run starting now refreshes (``policy.strict_cutoffs``)."""
        settings, schedule = self.settings, self.job().schedule
        leeway_s, max_idle_s = settings.token_refresh_leeway_s, settings.x_series_max_idle_s
        return policy.strict_cutoffs(self.clock(), schedule, leeway_s, max_idle_s)

    def due_before(self) -> datetime | None:
        """The cutoff of a due-based run starting now: ``REFRESH_DUE_AFTER`` ago; None when that is 0."""
        due_after = self.settings.refresh_due_after
        return self.clock() - timedelta(seconds=due_after) if due_after else None

    def automatic(self) -> dict[str, Any]:
        """An automatic run's cutoffs, as ``RunRepo.start_tick`` and ``activate_queued`` take them."""
        return {"due_before": self.due_before(), "strict": self.strict()}


__all__ = ["RunCutoffs"]

"""Cron triggers as pure functions of time (UTC): which tick is due, and when the next one comes."""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter

from ..cron import next_tick
from ..store import EMBEDDED, Job

_EPSILON = timedelta(microseconds=1)


def latest_tick(expression: str, now: datetime) -> datetime:
    """The most recent fire time at or before ``now``."""
    tick: datetime = croniter(expression, now + _EPSILON).get_prev(datetime)
    return tick


def due_tick(job: Job, now: datetime) -> datetime | None:
    """The tick an embedded scheduler should run now, if any.

    Only the latest tick counts, so ticks missed while nothing ran are replayed at most once; ticks from
    before the job's last change (schedule set, resume, hand-over) are not replayed at all.
    """
    if not job.active or job.owner != EMBEDDED:
        return None
    tick = latest_tick(job.schedule, now)
    return tick if tick > job.updated_at else None


__all__ = ["due_tick", "latest_tick", "next_tick"]

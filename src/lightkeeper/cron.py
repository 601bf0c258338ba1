"""Cron expressions: checked the same way by settings, the scheduler and the CLI.

A leaf module (croniter only), so that ``config`` and ``scheduler`` can share it without importing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterBadDateError, CroniterError, croniter


def check_cron(expression: str) -> str:
    """``expression`` with single spaces, if it is a 5-field cron that fires; else ValueError."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"not a valid cron expression: expected 5 fields, got {len(fields)}")
    normalised = " ".join(fields)
    try:
        # A fixed start keeps this pure; get_next() catches expressions that never match (Feb 30).
        croniter(normalised, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError("not a valid cron expression: no date ever matches it") from None
    except CroniterError as exc:
        raise ValueError(f"not a valid cron expression: {exc}") from None
    return normalised


def next_tick(expression: str, now: datetime) -> datetime:
    """The first fire time after ``now``."""
    tick: datetime = croniter(expression, now).get_next(datetime)
    return tick


__all__ = ["check_cron", "next_tick"]

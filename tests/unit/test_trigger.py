"""Cron triggers: pure functions of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lightkeeper.scheduler import due_tick, latest_tick, next_tick
from lightkeeper.store import Job

EVERY_6H = "0 */6 * * *"


def job(*, schedule: str = EVERY_6H, active: bool = True, owner: str = "embedded", updated: datetime) -> Job:
    return Job(
        name="refresh-lightspeed-tokens-every-6h", schedule=schedule, active=active, owner=owner, updated_at=updated
    )


def at(hour: int, minute: int = 0, second: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [(at(6), at(6)), (at(6, 0, 1), at(6)), (at(11, 59, 59), at(6)), (at(0), at(0)), (at(5, 59), at(0))],
)
def test_latest_tick_is_the_last_fire_time_at_or_before_now(now: datetime, expected: datetime) -> None:
    assert latest_tick(EVERY_6H, now) == expected


def test_next_tick_is_strictly_after_now() -> None:
    assert next_tick(EVERY_6H, at(6)) == at(12)
    assert next_tick(EVERY_6H, at(23)) == at(0, day=3)


def test_the_guide_schedule_fires_four_times_a_day() -> None:
    ticks, now = [], at(0) - timedelta(seconds=1)
    while (now := next_tick(EVERY_6H, now)) < at(0, day=3):
        ticks.append(now.hour)
    assert ticks == [0, 6, 12, 18]


def test_due_tick_is_the_latest_tick_after_the_last_change() -> None:
    assert due_tick(job(updated=at(1)), at(6, 0, 5)) == at(6)
    assert due_tick(job(updated=at(1)), at(5)) is None  # the 00:00 tick came before the change


def test_missed_ticks_are_replayed_once_not_each() -> None:
    """Down from 01:00 to 20:00: only 18:00 is due, not 06:00 and 12:00 too."""
    assert due_tick(job(updated=at(1)), at(20)) == at(18)


def test_paused_or_pg_cron_owned_jobs_never_tick() -> None:
    assert due_tick(job(active=False, updated=at(1)), at(7)) is None
    assert due_tick(job(owner="pg_cron", updated=at(1)), at(7)) is None

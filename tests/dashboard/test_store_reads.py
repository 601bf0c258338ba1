"""The store reads behind the dashboard, on SQLite and PostgreSQL alike: connections counted by status in one
grouped query, and refresh outcomes summed by UTC day of the runs' start."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert

from lightkeeper.store import DailyOutcomes, Status, Store
from lightkeeper.store.schema import runs
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)

MIDNIGHT = datetime(2026, 6, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:  # noqa: F811 (the fixture imported above)
    store = Store.from_url(database_url)
    try:
        yield store
    finally:
        store.close()


def connect(store: Store, user: str) -> int:
    return store.connections.upsert_connected(
        user_id=user,
        account_id=f"acct-{user}",
        account_name=None,
        encrypt=lambda cid: (f"enc-a-{cid}", f"enc-r-{cid}"),
        expires_at=MIDNIGHT + timedelta(hours=1),
        now=MIDNIGHT,
    )


def expire(store: Store, connection_id: int) -> None:
    held = store.connections.acquire(connection_id, owner="w1", lease=LEASE)
    assert held is not None
    version, token = held.record.token_version, held.token
    assert store.connections.mark_expired(connection_id, lease_token=token, version=version, error="x", now=MIDNIGHT)


def add_run(store: Store, started_at: datetime | None, *counts: int) -> None:
    """A finished run that started at ``started_at`` with (refreshed, expired, errors, skipped) ``counts``."""
    refreshed, expired, errors, skipped = counts
    values = {
        "job_name": "job",
        "trigger": "manual",
        "status": "completed" if started_at else "queued",
        "created_at": started_at or MIDNIGHT,
        "started_at": started_at,
        "finished_at": started_at,
        "total": sum(counts),
        "refreshed": refreshed,
        "expired": expired,
        "errors": errors,
        "skipped": skipped,
    }
    with store.engine.begin() as conn:
        conn.execute(insert(runs).values(**values))


def test_status_summary_counts_each_status_present(store: Store) -> None:
    assert store.connections.status_summary().counts == {}
    ids = [connect(store, f"u{n}") for n in range(5)]
    expire(store, ids[0])
    expire(store, ids[1])

    assert store.connections.status_summary().counts == {Status.CONNECTED.value: 3, Status.EXPIRED.value: 2}


def test_daily_outcomes_sum_the_runs_of_each_utc_day_and_fill_days_without_runs(store: Store) -> None:
    add_run(store, MIDNIGHT - timedelta(microseconds=1), 100, 0, 0, 0)  # the day before the window
    add_run(store, MIDNIGHT, 3, 1, 0, 0)  # the window's first instant
    add_run(store, MIDNIGHT + timedelta(hours=23, minutes=59), 2, 0, 1, 4)
    add_run(store, MIDNIGHT + timedelta(days=2, hours=6), 5, 0, 0, 0)
    add_run(store, MIDNIGHT + timedelta(days=3), 100, 0, 0, 0)  # the day after the window
    add_run(store, None, 100, 0, 0, 0)  # queued, never started

    days = store.runs.daily_outcomes(first_day=MIDNIGHT, days=3)

    assert days == [
        DailyOutcomes(date(2026, 6, 1), refreshed=5, expired=1, errors=1, skipped=4),
        DailyOutcomes(date(2026, 6, 2)),
        DailyOutcomes(date(2026, 6, 3), refreshed=5),
    ]


def test_daily_outcomes_of_an_empty_history_are_zeros(store: Store) -> None:
    days = store.runs.daily_outcomes(first_day=MIDNIGHT, days=14)

    assert [day.day for day in days] == [date(2026, 6, 1) + timedelta(days=n) for n in range(14)]
    assert all(day == DailyOutcomes(day.day) for day in days)

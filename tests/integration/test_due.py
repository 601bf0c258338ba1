"""Due-based runs (``REFRESH_DUE_AFTER``): automatic runs refresh only connections whose last refresh is older
than the setting, selected by the claim query; the rest are counted skipped. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord, Trigger
from lightkeeper.store.schema import connections as connections_table
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory

HOUR = 3600


def age_last_refresh(keeper: Keeper, connection_id: int, age: timedelta | None) -> None:
    """Pretend the connection was last refreshed ``age`` ago (None: never)."""
    when = None if age is None else datetime.now(UTC) - age
    with keeper.store.engine.begin() as conn:
        stmt = update(connections_table).where(connections_table.c.id == connection_id)
        conn.execute(stmt.values(last_token_refresh_at=when))


def refreshed_ids(keeper: Keeper, before: dict[int, int]) -> set[int]:
    return {r.id for r in keeper.connections() if r.token_version != before[r.id]}


def versions(keeper: Keeper) -> dict[int, int]:
    return {r.id: r.token_version for r in keeper.connections()}


@pytest.fixture
def due_keeper(make_keeper: KeeperFactory, sim: SimulatorControl) -> Keeper:
    return make_keeper(REFRESH_DUE_AFTER=str(6 * HOUR), REFRESH_DELAY_MS="0")


Mixed = tuple[list[ConnectionRecord], list[ConnectionRecord]]


@pytest.fixture
def mixed(due_keeper: Keeper) -> Mixed:
    """Two connections due (refreshed 7 h ago, and never), two not due (1 h ago, and just now)."""
    records = [connect(due_keeper, f"user-{n}") for n in range(4)]
    age_last_refresh(due_keeper, records[0].id, timedelta(hours=7))
    age_last_refresh(due_keeper, records[1].id, None)
    age_last_refresh(due_keeper, records[2].id, timedelta(hours=1))
    return records[:2], records[2:]


def test_a_scheduled_run_refreshes_only_what_is_due(due_keeper: Keeper, mixed: Mixed, sim: SimulatorControl) -> None:
    due, _ = mixed
    before, refreshes = versions(due_keeper), sim.stats()["refreshes"]
    run = due_keeper.start_scheduled_run(due_keeper.refresh_job(), datetime.now(UTC).replace(microsecond=0))
    assert run is not None and run.due_before is not None
    done = due_keeper.execute_run(run)
    assert (done.status, done.total, done.refreshed, done.skipped) == (RunStatus.COMPLETED, 4, 2, 2)
    assert refreshed_ids(due_keeper, before) == {r.id for r in due}
    assert sim.stats()["refreshes"] - refreshes == 2  # Lightspeed saw the due ones only
    assert sim.stats()["reuse"] == 0


def test_a_sql_request_is_due_based_and_an_api_request_is_not(
    due_keeper: Keeper, mixed: Mixed, sim: SimulatorControl
) -> None:
    due_keeper.store.runs.request(trigger=Trigger.SQL, now=datetime.now(UTC))
    sql_run = due_keeper.start_queued_run()
    assert sql_run is not None and sql_run.due_before is not None
    assert due_keeper.execute_run(sql_run).refreshed == 2

    due_keeper.store.runs.request(trigger=Trigger.API, now=datetime.now(UTC))
    api_run = due_keeper.start_queued_run()
    assert api_run is not None and api_run.due_before is None
    assert due_keeper.execute_run(api_run).refreshed == 4


def test_a_manual_run_refreshes_everything_unless_asked_for_due(due_keeper: Keeper, mixed: Mixed) -> None:
    due, _ = mixed
    assert due_keeper.refreshable_count(due=True) == 2
    before = versions(due_keeper)
    run = due_keeper.refresh(trigger=Trigger.MANUAL, due=True)
    assert (run.total, run.refreshed, run.skipped) == (4, 2, 2)
    assert refreshed_ids(due_keeper, before) == {r.id for r in due}
    assert due_keeper.refreshable_count(due=True) == 0  # they were just refreshed
    assert due_keeper.refresh(trigger=Trigger.MANUAL).refreshed == 4


def test_with_the_default_every_run_refreshes_everything(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_DELAY_MS="0")
    for n in range(3):
        connect(keeper, f"user-{n}")
    assert keeper.due_before() is None
    assert keeper.refresh(trigger=Trigger.MANUAL, due=True).refreshed == 3
    run = keeper.start_scheduled_run(keeper.refresh_job(), datetime.now(UTC).replace(microsecond=0))
    assert run is not None and run.due_before is None
    assert keeper.execute_run(run).refreshed == 3


def test_a_participant_joining_claims_by_the_runs_cutoff(
    due_keeper: Keeper, make_keeper: KeeperFactory, mixed: Mixed
) -> None:
    """The cutoff lives on the run: a process with another REFRESH_DUE_AFTER joining the run follows it."""
    run = due_keeper.start_scheduled_run(due_keeper.refresh_job(), datetime.now(UTC).replace(microsecond=0))
    assert run is not None
    other = make_keeper(REFRESH_DELAY_MS="0")  # REFRESH_DUE_AFTER=0 here
    done = other.execute_run(run)
    assert (done.status, done.refreshed, done.skipped) == (RunStatus.COMPLETED, 2, 2)


def test_backoff_skips_are_not_counted_twice(due_keeper: Keeper, mixed: Mixed) -> None:
    """A connection both not due and backing off is one skip, not two."""
    _, not_due = mixed
    with due_keeper.store.engine.begin() as conn:
        stmt = update(connections_table).where(connections_table.c.id == not_due[0].id)
        conn.execute(stmt.values(status="error", next_attempt_at=datetime.now(UTC) + timedelta(hours=1)))
    run = due_keeper.start_scheduled_run(due_keeper.refresh_job(), datetime.now(UTC).replace(microsecond=0))
    assert run is not None
    done = due_keeper.execute_run(run)
    assert (done.total, done.refreshed, done.skipped) == (4, 2, 2)

"""The embedded scheduler in-process with an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from lightkeeper import ConfigError, Keeper, RunStatus
from lightkeeper.scheduler import Worker
from lightkeeper.scheduler.schedule import ScheduleService
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import JOB_NAME, RunRecord
from lightkeeper.store.schema import runs as runs_table
from tests.conftest import FakeClock
from tests.helpers import age_heartbeat, connect, make_settings

START = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)


@pytest.fixture
def make_worker(
    database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl, clock: FakeClock
) -> Iterator[Callable[[], Worker]]:
    clock.current = START
    keepers: list[Keeper] = []

    def factory() -> Worker:
        keeper = Keeper(make_settings(database_url, simulator_server.url), clock=clock)
        keepers.append(keeper)
        return Worker(keeper, poll_s=0.05)

    yield factory
    for keeper in keepers:
        keeper.close()


@pytest.fixture
def worker(make_worker: Callable[[], Worker]) -> Worker:
    made = make_worker()
    for n in range(3):
        connect(made.keeper, f"user-{n}")
    made.step()  # creates the job at START: ticks before now are history, not due
    return made


def schedule_runs(worker: Worker) -> list[RunRecord]:
    return [r for r in worker.keeper.store.runs.list(limit=100) if r.trigger == "schedule"]


def test_a_new_job_does_not_replay_the_tick_before_it_existed(worker: Worker) -> None:
    assert schedule_runs(worker) == []


def test_each_tick_starts_one_run_that_refreshes_everything(worker: Worker, clock: FakeClock) -> None:
    clock.advance(hours=1, seconds=5)  # 06:00:05
    worker.step()
    worker.step()  # the same tick again: nothing new
    [run] = schedule_runs(worker)
    assert run.status is RunStatus.COMPLETED and run.refreshed == 3
    assert run.scheduled_for == datetime(2026, 6, 1, 6, tzinfo=UTC)

    clock.advance(hours=6)
    worker.step()
    assert len(schedule_runs(worker)) == 2


def test_missed_ticks_are_replayed_once(worker: Worker, clock: FakeClock) -> None:
    clock.advance(hours=20)  # 06:00, 12:00, 18:00 and 00:00 passed while nothing ran
    worker.step()
    [run] = schedule_runs(worker)
    assert run.scheduled_for == datetime(2026, 6, 2, 0, tzinfo=UTC)


def test_replicas_start_one_run_per_tick(make_worker: Callable[[], Worker], worker: Worker, clock: FakeClock) -> None:
    replicas = [worker, *(make_worker() for _ in range(3))]
    clock.advance(hours=1, seconds=1)
    barrier = threading.Barrier(len(replicas))

    def step(replica: Worker) -> None:
        barrier.wait()
        replica.step()

    threads = [threading.Thread(target=step, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with worker.keeper.store.engine.connect() as conn:
        rows = conn.execute(select(runs_table.c.status).where(runs_table.c.trigger == "schedule")).all()
    assert [row.status for row in rows] == ["completed"]


def test_a_tick_during_a_running_run_is_not_doubled(worker: Worker, clock: FakeClock) -> None:
    going = worker.keeper.store.runs.start(trigger="manual", owner="elsewhere", now=clock())
    clock.advance(hours=1, seconds=1)
    tick_run = worker.keeper.store.runs.start_tick(
        job_name=JOB_NAME, tick=datetime(2026, 6, 1, 6, tzinfo=UTC), owner="x", now=clock()
    )
    assert tick_run is not None and tick_run.status is RunStatus.SKIPPED
    assert tick_run.message and str(going.id) in tick_run.message


def test_paused_job_does_not_tick_and_resume_does_not_replay(worker: Worker, clock: FakeClock) -> None:
    service = ScheduleService(worker.keeper.store, clock=clock, default_schedule="0 */6 * * *")
    service.pause()
    clock.advance(hours=2)  # 07:00: the 06:00 tick passes while paused
    worker.step()
    assert schedule_runs(worker) == []
    service.resume()
    worker.step()
    assert schedule_runs(worker) == []  # 06:00 is not replayed
    clock.advance(hours=5)  # 12:00 tick
    worker.step()
    assert len(schedule_runs(worker)) == 1


def test_a_running_worker_picks_up_a_new_schedule(worker: Worker, clock: FakeClock) -> None:
    service = ScheduleService(worker.keeper.store, clock=clock, default_schedule="0 */6 * * *")
    view = service.set("*/10 * * * *")
    assert view.schedule == "*/10 * * * *"
    assert view.next_run_at == datetime(2026, 6, 1, 5, 10, tzinfo=UTC)
    clock.advance(minutes=10, seconds=1)
    worker.step()
    [run] = schedule_runs(worker)
    assert run.scheduled_for == datetime(2026, 6, 1, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "every day", "61 * * * *", "* * * *", "0 0 30 2 *"])
def test_a_bad_cron_is_refused_and_changes_nothing(worker: Worker, clock: FakeClock, bad: str) -> None:
    service = ScheduleService(worker.keeper.store, clock=clock, default_schedule="0 */6 * * *")
    with pytest.raises(ConfigError, match="cron"):
        service.set(bad)
    assert service.show().schedule == "0 */6 * * *"


def test_queued_requests_are_run_by_a_worker(worker: Worker) -> None:
    request = worker.keeper.store.runs.request(trigger="api", now=worker.keeper.clock())
    worker.step()
    done = worker.keeper.store.runs.get(request.id)
    assert done is not None and done.status is RunStatus.COMPLETED and done.refreshed == 3


def test_a_worker_joins_a_run_started_elsewhere(make_worker: Callable[[], Worker], worker: Worker) -> None:
    """A run whose starter vanished right after starting is finished by any worker."""
    run = worker.keeper.store.runs.start(trigger="manual", owner="vanished", now=worker.keeper.clock())
    make_worker().step()
    done = worker.keeper.store.runs.get(run.id)
    assert done is not None and done.status is RunStatus.COMPLETED and done.refreshed == 3


def test_run_forever_stops_promptly(worker: Worker) -> None:
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    worker.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_stale_runs_are_closed_by_workers(worker: Worker, clock: FakeClock) -> None:
    stale = worker.keeper.store.runs.start(
        trigger="manual", owner="dead", now=clock() - timedelta(minutes=5), connection_id=1
    )
    age_heartbeat(worker.keeper.store, stale.id, timedelta(minutes=5))
    worker.step()
    closed = worker.keeper.store.runs.get(stale.id)
    assert closed is not None and closed.status is RunStatus.INTERRUPTED

"""A run's event loop (``refresh.drain``) on SQLite and PostgreSQL, against the simulator over real HTTP.

The loop must behave exactly as the threads it replaced: many requests in flight, nothing sent twice, a
connection an on-demand caller of the same process holds waited for (not skipped), a run started from inside
a host app's own coroutine, and a stop that hands claims back.
"""

from __future__ import annotations

import asyncio
import threading
import time

from lightkeeper import RunStatus, Status
from lightkeeper.simulator import SimulatorControl
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory


def test_requests_are_in_flight_together(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="8", REFRESH_DELAY_MS="0")
    for n in range(16):
        connect(keeper, f"user-{n}")
    sim.configure(token_latency_ms=300)

    started = time.monotonic()
    run = keeper.refresh()
    elapsed = time.monotonic() - started

    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 16, 0)
    # One after another, 16 answers of 0.3 s take 4.8 s; eight at a time, two rounds.
    assert elapsed < 16 * 0.3 / 2, elapsed
    stats = sim.stats()
    assert (stats["refreshes"], stats["reuse"], stats["invalid_grant"]) == (16, 0, 0)


def test_a_connection_held_by_an_on_demand_caller_is_waited_for(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="2", REFRESH_DELAY_MS="0")
    held, other = connect(keeper, "held"), connect(keeper, "other")
    lock = keeper.refresher.locks.get(held.id)
    assert lock.acquire(timeout=1)
    releaser = threading.Timer(0.5, lock.release)
    releaser.start()
    try:
        run = keeper.refresh()
    finally:
        releaser.join()

    assert (run.status, run.refreshed, run.skipped) == (RunStatus.COMPLETED, 2, 0)
    assert {r.id: r.status for r in keeper.connections()} == {held.id: Status.CONNECTED, other.id: Status.CONNECTED}
    assert sim.stats()["reuse"] == 0
    assert len(keeper.refresher.locks) == 0  # every lock given back


def test_a_run_started_inside_a_coroutine_completes(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_DELAY_MS="0")
    for n in range(3):
        connect(keeper, f"user-{n}")

    async def host_app() -> RunStatus:
        return keeper.refresh().status  # a host app calling the blocking verb from its own loop

    assert asyncio.run(host_app()) is RunStatus.COMPLETED
    stats = sim.stats()
    assert (stats["refreshes"], stats["reuse"]) == (3, 0)


def test_a_stopped_drain_hands_its_claims_back(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="2", REFRESH_DELAY_MS="400")
    for n in range(6):
        connect(keeper, f"user-{n}")
    run = keeper.begin_run(trigger="manual")
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()

    stopped = keeper.execute_run(run, stop=stop)

    records = keeper.connections()
    assert all(r.acquired_until is None and r.lease_token is None for r in records)  # nothing left leased
    done = sim.stats()["refreshes"]
    assert 0 < done < 6
    # Nobody else worked on it: closed, not left running (a stopped process leaves a record, issue 19).
    assert (stopped.status, stopped.refreshed) == (RunStatus.INTERRUPTED, done)
    finished = keeper.execute_run(keeper.begin_run(trigger="manual"))  # the next run does all of them again
    assert (finished.status, finished.refreshed) == (RunStatus.COMPLETED, 6)
    assert sim.stats()["reuse"] == 0

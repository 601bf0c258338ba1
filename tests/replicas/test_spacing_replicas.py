"""One spacing for two real processes when the database stalls and when Lightspeed says ``Retry-After``
(issue 19, promise 7: the provider sees one client).

Two ``lightkeeper worker`` processes share one run at ``REFRESH_DELAY_MS=500``, on SQLite and on PostgreSQL.
What they send is measured where it matters, at the simulator's arrival of each refresh request:

* another connection holds the database (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the pacing row's lock) for
  1.5 s in the middle of the run: the slots that passed meanwhile are not fired at once when it lets go;
* the simulator answers one refresh request of the run with ``429 Retry-After: 2``: no refresh request of
  either process arrives during the hold, including those whose slots were handed out before it came.

Workers, their fixtures and helpers are those of ``test_replicas.py`` and ``test_fencing_replicas.py``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.helpers import make_settings
from tests.integration.test_spacing import pacing_row_locked
from tests.replicas.test_fencing_replicas import pause_schedule
from tests.replicas.test_replicas import (
    HEARTBEAT_S,
    StartWorkers,
    account_refreshes,
    wait_for_counts,
    wait_for_run,
)
from tests.seeding import seed_connections

pytestmark = pytest.mark.postgres

DELAY_S = 0.5
MIN_GAP_S = 0.9 * DELAY_S
STALL_S = 1.5
RETRY_AFTER_S = 2
# The end of a hold is read from the database's clock and put on each process's own: a few ms either way.
HOLD_SLACK_S = 0.05
WATCH_TIMEOUT_S = 30.0


@pytest.fixture(params=["sqlite", "postgresql"])
def spacing_database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_database_url"))


@pytest.fixture
def spacing_keeper(
    spacing_database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl
) -> Iterator[Keeper]:
    """The library in this process, on the workers' database: seeds and reads, never refreshes."""
    settings = make_settings(spacing_database_url, simulator_server.url, RUN_HEARTBEAT_S=str(HEARTBEAT_S))
    with Keeper(settings) as opened:
        yield opened


def gaps(times: list[float]) -> list[float]:
    return [round(later - earlier, 3) for earlier, later in itertools.pairwise(times)]


def shared_run(keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers, count: int, **env: str) -> None:
    """Seed ``count`` connections, start two workers on the keeper's database, and have them complete one run
    with every connection refreshed and no error."""
    pause_schedule(keeper)
    seed_connections(keeper, sim, count, user_prefix="spaced")
    workers = start_workers(
        2, DATABASE_URL=keeper.settings.database_url, REFRESH_DELAY_MS=str(int(DELAY_S * 1000)), **env
    )
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=90, workers=workers)
    run = wait_for_counts(keeper, requested.id, count)
    assert (run.refreshed, run.errors, run.expired) == (count, 0, 0), run
    split = [len(worker.refreshed_ids()) for worker in workers]
    assert all(split), f"both processes must send refreshes for the spacing to be shared: {split}"
    print(f"split {split}")


def assert_one_refresh_each(sim: SimulatorControl, count: int) -> None:
    assert sim.reuse() == 0, sim.stats()
    assert sorted(account_refreshes(sim).values()) == [1] * count


# -- a stalled database ---------------------------------------------------------------------------------------


@dataclass
class Stall:
    """When the database was held (monotonic seconds of this process, the simulator's clock too)."""

    began: float = 0.0
    ended: float = 0.0


def stall_after(keeper: Keeper, sim: SimulatorControl, refreshes: int, stall: Stall) -> None:
    """Once ``refreshes`` refresh requests reached the simulator, hold the database for ``STALL_S``."""
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while len(sim.refresh_times()) < refreshes and time.monotonic() < deadline:
        time.sleep(0.01)
    with pacing_row_locked(keeper, STALL_S):
        stall.began = time.monotonic()
    stall.ended = time.monotonic()


@pytest.mark.parametrize(
    "spacing_database_url",
    [
        "sqlite",
        "postgresql",
    ],
    indirect=True,
)
def test_a_stalled_database_does_not_bunch_the_requests_of_two_processes(
    spacing_keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    count = 12
    sim.configure(token_latency_ms=100)
    stall = Stall()
    staller = threading.Thread(target=stall_after, args=(spacing_keeper, sim, 3, stall), daemon=True)
    staller.start()
    shared_run(spacing_keeper, sim, start_workers, count, REFRESH_CONCURRENCY="4")
    staller.join(WATCH_TIMEOUT_S)

    times = sim.refresh_times()
    assert len(times) == count, f"{len(times)} refresh requests for {count} connections"
    assert stall.began and times[0] < stall.began and stall.ended < times[-1], (
        f"the database was not held in the middle of the run: {stall}, {[t - times[0] for t in times]}"
    )
    held = f"held from +{stall.began - times[0]:.3f} s to +{stall.ended - times[0]:.3f} s"
    assert min(gaps(times)) >= MIN_GAP_S, f"requests {min(gaps(times)) * 1000:.0f} ms apart: {gaps(times)}; {held}"
    assert_one_refresh_each(sim, count)
    print(f"stall {stall.ended - stall.began:.2f} s from +{stall.began - times[0]:.2f} s; gaps {gaps(times)}")


# -- Retry-After --------------------------------------------------------------------------------------------


@dataclass
class RateLimit:
    """When the 429 arrived at the simulator: after ``earliest`` and before ``latest`` (monotonic seconds)."""

    earliest: float = 0.0
    latest: float = 0.0


def rate_limit_after(server: SimulatorServer, sim: SimulatorControl, refreshes: int, seen: RateLimit) -> None:
    """Once ``refreshes`` refresh requests reached the simulator, answer the next one 429 ``Retry-After``, and
    bracket its arrival by reading the simulator's counters in this process every few ms."""
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while len(sim.refresh_times()) < refreshes and time.monotonic() < deadline:
        time.sleep(0.01)
    seen.earliest = time.monotonic()
    sim.inject_fault("token", "rate_limit", retry_after=RETRY_AFTER_S)
    while time.monotonic() < deadline:
        before = time.monotonic()
        if server.state.stats()["faults_served"]:
            seen.latest = time.monotonic()
            return
        seen.earliest = before
        time.sleep(0.002)


def test_retry_after_holds_both_processes_including_the_slots_already_handed_out(
    spacing_keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer, start_workers: StartWorkers
) -> None:
    count = 12
    seen = RateLimit()
    watcher = threading.Thread(target=rate_limit_after, args=(simulator_server, sim, 2, seen), daemon=True)
    watcher.start()
    # Four refreshes in flight per process: at 500 ms, each has slots up to 2 s ahead when the 429 comes.
    shared_run(spacing_keeper, sim, start_workers, count, REFRESH_CONCURRENCY="4")
    watcher.join(WATCH_TIMEOUT_S)

    stats = sim.stats()
    assert (stats["faults_served"], stats["token_requests"]) == (1, count + 1), "one 429, then one grant each"
    assert seen.latest, "the 429 was never served"
    times = sim.refresh_times()
    assert len(times) == count
    before = [t for t in times if t < seen.earliest]
    after = [t for t in times if t >= seen.earliest]
    assert before and after, f"the 429 did not come in the middle of the run: {seen}, {times}"
    # The 429's end binds every slot: nothing arrives from its arrival until RETRY_AFTER_S later.
    hold_end = seen.earliest + RETRY_AFTER_S - HOLD_SLACK_S
    during = [round(t - seen.earliest, 3) for t in after if t < hold_end]
    assert not during, f"refresh requests sent during the {RETRY_AFTER_S} s hold, at +s from the 429: {during}"
    # The 429 was a request too: it kept its distance from the grant before it (bracketed to a few ms).
    assert seen.earliest - before[-1] >= MIN_GAP_S - (seen.latest - seen.earliest), (before[-1], seen)
    assert min(gaps(times)) >= MIN_GAP_S, f"refresh requests {min(gaps(times)) * 1000:.0f} ms apart: {gaps(times)}"
    assert_one_refresh_each(sim, count)
    print(
        f"429 at +{seen.earliest - times[0]:.2f} s (bracket {1000 * (seen.latest - seen.earliest):.0f} ms); "
        f"next grant {after[0] - seen.earliest:.2f} s later; gaps {gaps(times)}"
    )

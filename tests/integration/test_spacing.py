"""REFRESH_DELAY_MS and Retry-After bind the moment a token request leaves (issue 19).

- A stalled database (another connection holding the pacing row's lock) must not bunch the requests up when it
  lets go: the slots that passed meanwhile are exchanged for new ones, not fired at once.
- A 429's ``Retry-After`` binds every slot, including those already handed out: nothing is sent during it.
Gaps are measured where they matter: at the simulator's arrival of each refresh request.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import sqlite_path
from tests.integration.conftest import KeeperFactory, _url_with_database
from tests.seeding import seed_connections

DELAY_MS = 200


def gaps(sim: SimulatorControl) -> list[float]:
    times = sim.refresh_times()
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@contextmanager
def pacing_row_locked(keeper: Keeper, seconds: float, *, every_table: bool = False) -> Iterator[threading.Thread]:
    """Another connection holds the pacing row (SQLite: the whole database; ``every_table``: PostgreSQL's
    connections too) for ``seconds``, from a thread."""
    database = keeper.store.engine.url.database or ""
    with database_held(keeper.settings.database_url, database, seconds, every_table=every_table) as thread:
        yield thread


@contextmanager
def database_held(
    url: str, pg_database: str, seconds: float, *, every_table: bool = False
) -> Iterator[threading.Thread]:
    """``pacing_row_locked`` for a database given by its URL (``pg_database``: its name on PostgreSQL). The row
    is let go of unchanged; leaving waits for that."""
    ready = threading.Event()

    def hold() -> None:
        path = sqlite_path(url)
        if path is not None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            ready.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
            conn.close()
            return
        with psycopg.connect(_url_with_database(pg_database)) as conn:
            conn.execute("SELECT * FROM lightkeeper_pacing FOR UPDATE")
            if every_table:
                conn.execute("LOCK TABLE lightspeed_connections IN EXCLUSIVE MODE")
            ready.set()
            time.sleep(seconds)
            conn.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    ready.wait(10)
    yield thread
    thread.join(seconds + 10)


def test_a_stalled_database_does_not_bunch_the_requests(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_DELAY_MS=str(DELAY_MS), REFRESH_CONCURRENCY="4")
    seed_connections(keeper, sim, 12, user_prefix="stall")
    stop_after = threading.Event()

    def stall_midway() -> None:
        while len(sim.refresh_times()) < 3 and not stop_after.is_set():
            time.sleep(0.01)
        # 2.5 s: the slots already handed out (up to 4 x 0.2 s) go out during it, and a gap over 1 s still shows it.
        with pacing_row_locked(keeper, 2.5):
            pass

    staller = threading.Thread(target=stall_midway, daemon=True)
    staller.start()
    run = keeper.refresh()
    stop_after.set()
    staller.join(15)
    assert (run.status, run.refreshed) == (RunStatus.COMPLETED, 12)
    assert min(gaps(sim)) >= 0.9 * DELAY_MS / 1000, gaps(sim)
    assert max(gaps(sim)) >= 1.0  # the stall really happened between two requests
    assert sim.reuse() == 0


def test_retry_after_binds_the_slots_already_handed_out(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_DELAY_MS=str(DELAY_MS), REFRESH_CONCURRENCY="8")
    seed_connections(keeper, sim, 12, user_prefix="hold")
    sim.inject_fault("token", "rate_limit", retry_after=2)  # the first request is told to wait 2 s
    started = time.monotonic()
    run = keeper.refresh()
    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 12, 0), run
    # The simulator runs in this process, on the same monotonic clock. The 429 answered the first request:
    # every grant came after its hold, none during it (before: 7 of 12 went out during the hold).
    assert min(sim.refresh_times()) >= started + 2.0 - 0.05, [t - started for t in sim.refresh_times()]
    assert min(gaps(sim)) >= 0.9 * DELAY_MS / 1000, gaps(sim)
    assert sim.stats()["token_requests"] == 13  # one 429, then one grant each
    assert time.monotonic() - started >= 2 + 11 * DELAY_MS / 1000 - 0.1


def test_a_stalled_database_loses_no_pair_lightspeed_issued(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    """A 0.6 s answer while the database is locked for 2.5 s, with HTTP_TIMEOUT_S=2: the answer is read in time
    and its pair saved once the database lets go (before: the stalled loop let the timeout fire on an answer that
    had arrived, the pair was thrown away, and the next run presented the old refresh token again)."""
    keeper = make_keeper(HTTP_TIMEOUT_S="2", REFRESH_LEASE_S="10", REFRESH_MAX_RETRY_AFTER_S="1")
    seed_connections(keeper, sim, 1, user_prefix="stall")
    sim.configure(token_latency_ms=600)
    done: list[float] = []

    def lock_once_sent() -> None:
        while sim.stats()["token_requests"] < 1:
            time.sleep(0.005)
        with pacing_row_locked(keeper, 2.5, every_table=True):
            done.append(time.monotonic())

    locker = threading.Thread(target=lock_once_sent, daemon=True)
    locker.start()
    run = keeper.refresh()
    locker.join(15)
    assert done, "the database was locked while the answer came"
    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 1, 0), run
    sim.configure(token_latency_ms=0)
    assert keeper.refresh().refreshed == 1
    assert sim.reuse() == 0


def test_a_token_endpoint_that_never_answers_ends_the_run_at_the_deadline(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(HTTP_TIMEOUT_S="2", REFRESH_LEASE_S="10", REFRESH_MAX_RETRY_AFTER_S="1")
    seed_connections(keeper, sim, 1, user_prefix="silent")
    sim.inject_fault("token", "timeout", seconds=30)
    started = time.monotonic()
    run = keeper.refresh()
    assert (run.status, run.errors) == (RunStatus.COMPLETED, 1)
    assert time.monotonic() - started <= 2 + 0.5  # the run's record is closed within 0.5 s of the deadline


def test_a_deadline_of_five_seconds_or_more_is_not_rounded_up(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    """aiohttp rounds a timeout above 5 s up to the next whole second of the event loop's clock (the monotonic
    clock): with that rounding, this run closed 6.07-6.11 s after it began. The run starts just before a whole
    second of that clock, where rounding would add most of a second; a deadline kept exactly does not care."""
    timeout_s = 5.05
    # The shortest lease the settings take: 2 x HTTP_TIMEOUT_S + REFRESH_MAX_RETRY_AFTER_S = 11.1 s.
    keeper = make_keeper(HTTP_TIMEOUT_S=str(timeout_s), REFRESH_LEASE_S="12", REFRESH_MAX_RETRY_AFTER_S="1")
    seed_connections(keeper, sim, 1, user_prefix="silent5")
    sim.inject_fault("token", "timeout", seconds=30)
    time.sleep((0.95 - time.monotonic()) % 1.0)
    started = time.monotonic()
    run = keeper.refresh()
    took = time.monotonic() - started
    assert (run.status, run.errors) == (RunStatus.COMPLETED, 1), run
    assert run.finished_at is not None
    assert timeout_s - 0.05 <= took <= timeout_s + 0.5, f"the run's record closed {took:.2f} s after it began"
    print(f"HTTP_TIMEOUT_S={timeout_s}: the run's record closed {took:.3f} s after it began")


def test_retry_after_in_one_process_binds_the_slots_another_was_given(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    """Two processes (two Keepers, each its own pacer) on one run: the 429 one of them gets holds the other's
    slots too, including those it was handed before the hold came (it reads the hold right before sending)."""
    first = make_keeper(REFRESH_DELAY_MS=str(DELAY_MS), REFRESH_CONCURRENCY="4")
    second = make_keeper(REFRESH_DELAY_MS=str(DELAY_MS), REFRESH_CONCURRENCY="4")
    seed_connections(first, sim, 12, user_prefix="hold2")
    sim.inject_fault("token", "rate_limit", retry_after=2)
    run = first.begin_run(trigger="manual")
    started = time.monotonic()
    workers = [threading.Thread(target=keeper.execute_run, args=(run,)) for keeper in (first, second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert first.store.runs.get(run.id).refreshed == 12  # type: ignore[union-attr]
    assert min(sim.refresh_times()) >= started + 2.0 - 0.05, [t - started for t in sim.refresh_times()]
    assert min(gaps(sim)) >= 0.9 * DELAY_MS / 1000, gaps(sim)

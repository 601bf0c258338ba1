"""Strict rotation under the races the R-Series fence tests run, on SQLite and PostgreSQL: with no grace window, a
refresh token presented twice kills the store's chain, so each race must end with reuse 0, nothing expired, and
every store's stored refresh token the one X-Series still honours.

- a run and forced on-demand refreshes in one process (the ``serve`` case: one lease owner);
- two processes (two keepers) sharing a run whose queue of slow refreshes is longer than a lease;
- on-demand callers in three spawned processes on one token that expired in our books (one refresh);
- two ``refresh --all`` subprocesses and forced on-demand refreshes from this process, all at once;
- a holder whose lease ran out (as a paused process's would: a lease of length 0 here) and one whose lease is too
  short for a slow answer: neither sends the refresh token, so a slow token endpoint never makes two holders
  present it. A real pause (SIGSTOP) and a real skewed clock (libfaketime) are in test_faults.py and
  test_replicas.py.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from queue import Empty

from lightkeeper import Keeper, ProviderUnavailable, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.helpers import make_env
from tests.ondemand.callers import fresh_token_callers
from tests.xseries.conftest import StartCli, XKeeperFactory
from tests.xseries.support import (
    NO_R_SERIES,
    holds_the_live_pair,
    seed_x_connections,
    set_row,
    status_counts,
    versions,
    x_env,
    x_refreshes,
)

#: Every seeded token expires before the next tick: every full run refreshes every store.
EXPIRING_TTL_S = 60


def seed_expiring(keeper: Keeper, sim: SimulatorControl, count: int) -> list[int]:
    sim.configure(x_access_token_ttl=EXPIRING_TTL_S)
    return seed_x_connections(keeper, sim, count, user_prefix="race")


def assert_chains_intact(keeper: Keeper, sim: SimulatorControl, server: SimulatorServer, ids: list[int]) -> None:
    stats = sim.stats()
    assert (stats["x_reuse"], stats["x_invalid_grant"], stats["x_family_revocations"]) == (0, 0, 0), stats
    assert status_counts(keeper) == {"connected": len(ids)}
    lost = [cid for cid in ids if not holds_the_live_pair(keeper, server, cid)]
    assert not lost, f"connections whose stored pair is not the one X-Series honours: {lost}"


def forced(keeper: Keeper, connection_id: int, rejected: str) -> str:
    """A caller whose access token X-Series just refused: it gets another one (or is told to come back)."""
    try:
        grant = keeper.tokens.fresh_token(connection_id, rejected=rejected)
    except ProviderUnavailable:
        return "busy"
    assert grant.access_token != rejected, f"connection {connection_id}: the refused token was handed out again"
    return "fresh"


def test_a_run_and_forced_token_calls_in_one_process_never_spend_a_token_twice(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    keeper = make_x_keeper(both=True, REFRESH_CONCURRENCY="3")
    ids = seed_expiring(keeper, sim, 6)
    rejected = {cid: keeper.vault.access_token(keeper.connection(cid)) for cid in ids}
    sim.configure(token_latency_ms=400)

    with ThreadPoolExecutor(8) as pool:
        run = pool.submit(keeper.refresh, trigger="api")
        calls = [pool.submit(forced, keeper, cid, rejected[cid]) for cid in ids * 2]
        outcomes = [call.result() for call in calls]
        finished = run.result()

    assert finished.status is RunStatus.COMPLETED and finished.expired == 0, finished
    assert set(outcomes) == {"fresh"}, outcomes
    assert_chains_intact(keeper, sim, simulator_server, ids)
    assert all(count >= 1 for count in x_refreshes(sim).values())


def test_two_processes_share_a_run_whose_queue_outlasts_a_lease(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """1.5 s refreshes, a 10 s lease, 12 stores, 2 in flight per process: a batch leased at once would run out."""
    first, second = (
        make_x_keeper(REFRESH_LEASE_S="10", HTTP_TIMEOUT_S="3", REFRESH_MAX_RETRY_AFTER_S="2", REFRESH_CONCURRENCY="2")
        for _ in range(2)
    )
    ids = seed_expiring(first, sim, 12)
    before = versions(first)
    sim.configure(token_latency_ms=1500)

    with ThreadPoolExecutor(2) as pool:
        results = [run.result() for run in [pool.submit(k.refresh, trigger="manual") for k in (first, second)]]

    assert len({r.id for r in results}) == 1  # one run, shared
    final = first.store.runs.get(results[0].id)
    assert final is not None and final.status is RunStatus.COMPLETED
    assert (final.total, final.refreshed, final.expired, final.errors) == (12, 12, 0, 0), final
    assert sorted(x_refreshes(sim).values()) == [1] * 12  # each store exactly once
    assert versions(first) == {cid: version + 1 for cid, version in before.items()}
    assert_chains_intact(first, sim, simulator_server, ids)


def test_callers_in_three_processes_cause_exactly_one_refresh(
    x_keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer, database_url: str
) -> None:
    processes_n, threads = 3, 10
    [connection_id] = seed_x_connections(x_keeper, sim, 1)
    old = x_keeper.vault.access_token(x_keeper.connection(connection_id))
    set_row(x_keeper, connection_id, token_expires_at=x_keeper.clock() - timedelta(minutes=1))  # expired for us
    sim.configure(token_latency_ms=300)

    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes_n * threads), context.Queue()
    env = make_env(database_url, simulator_server.url) | x_env(simulator_server.url) | NO_R_SERIES
    processes = [
        context.Process(target=fresh_token_callers, args=(env, connection_id, threads, start, results), daemon=True)
        for _ in range(processes_n)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [outcome for _ in processes for outcome in results.get(timeout=60)]
    except Empty:
        outcomes = []
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    errors = [detail for status, detail, _ in outcomes if status != "ok"]
    assert not errors, errors[:3]
    assert len(outcomes) == processes_n * threads, "not every process reported"
    assert list(x_refreshes(sim).values()) == [1], "exactly one refresh reached X-Series"
    tokens = {token for _, token, _ in outcomes}
    assert len(tokens) == 1 and old not in tokens, "everyone got the one new token"
    saved = x_keeper.connection(connection_id)
    assert x_keeper.vault.access_token(saved) in tokens and saved.acquired_by is None
    assert_chains_intact(x_keeper, sim, simulator_server, [connection_id])


def test_two_cli_runs_and_forced_token_calls_at_once(
    mixed_keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer, start_cli: StartCli
) -> None:
    keeper = mixed_keeper
    ids = seed_expiring(keeper, sim, 8)
    rejected = {cid: keeper.vault.access_token(keeper.connection(cid)) for cid in ids}
    sim.configure(token_latency_ms=300)

    clis = [start_cli(f"run-{n}", "refresh", "--all", "--json", REFRESH_CONCURRENCY="2") for n in (1, 2)]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda cid: forced(keeper, cid, rejected[cid]), ids))
    codes = [cli.wait() for cli in clis]

    assert codes == [0, 0], "\n".join(cli.story() for cli in clis)
    assert set(outcomes) <= {"fresh", "busy"} and "fresh" in outcomes, outcomes
    assert all(run.status is RunStatus.COMPLETED and run.expired == 0 for run in keeper.run_history()), (
        keeper.run_history()
    )
    assert_chains_intact(keeper, sim, simulator_server, ids)
    assert all(count >= 1 for count in x_refreshes(sim).values())
    assert all("Traceback" not in cli.log.read_text() for cli in clis)


def test_a_refresher_whose_lease_ran_out_sends_nothing_and_cannot_write(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """A process paused past its lease (or on a skewed clock) wakes up after another took the store over: it must
    not present the refresh token the other one already exchanged, nor write over the new pair."""
    slow, other = make_x_keeper(), make_x_keeper()
    [connection_id] = seed_expiring(slow, sim, 1)
    held = slow.store.connections.acquire(connection_id, owner=slow.owner, lease=timedelta(0))
    assert held is not None  # a lease that has already run out

    assert other.refresh().refreshed == 1  # takes the store over
    requests = sim.x_stats()["x_token_requests"]

    assert slow.refresher.refresh_claimed(held, trigger="manual").value == "skipped"
    late = slow.store.connections.mark_error(
        connection_id,
        lease_token=held.token,
        version=held.record.token_version,
        error="late",
        retry_at=slow.clock(),
        now=slow.clock(),
    )
    assert late is False
    assert sim.x_stats()["x_token_requests"] == requests, "the stale holder sent its refresh token again"
    assert_chains_intact(other, sim, simulator_server, [connection_id])


def test_a_lease_too_short_for_a_slow_answer_sends_nothing(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """5 s of lease left and HTTP_TIMEOUT_S 20: X-Series could answer after the lease ended (and another holder
    would present the exchanged token), so the request is not sent at all."""
    keeper = make_x_keeper()
    [connection_id] = seed_expiring(keeper, sim, 1)
    held = keeper.store.connections.acquire(connection_id, owner=keeper.owner, lease=timedelta(seconds=5))
    assert held is not None

    assert keeper.refresher.refresh(held).outcome.value == "skipped"

    assert sim.x_stats()["x_token_requests"] == 0
    assert keeper.refresh().refreshed == 1  # the lease was released: the next run refreshes it
    assert_chains_intact(keeper, sim, simulator_server, [connection_id])

"""PostgreSQL becomes unreachable in the middle of a run and comes back.

A throwaway cluster is killed (``pg_ctl stop -m immediate``) while ``refresh --all`` is between Lightspeed's
answers and its commits, then started again. The process may die or carry on; whatever it does, the promises
hold: a later run completes, every connection is connected, the only replayed refresh tokens are the pairs
lost with the database (recovered in the grace window), and no run stays ``running`` past the stale interval.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.cluster import Cluster
from tests.faults.support import (
    HEARTBEAT_S,
    SHORT_LEASE,
    Cli,
    no_run_left_running,
    process_env,
    refreshes_per_account,
    statuses,
    wait_for,
)
from tests.helpers import make_settings
from tests.seeding import seed_connections

pytestmark = pytest.mark.postgres

COUNT = 10
CONCURRENCY = 2


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.create()
        yield made
    finally:
        made.remove()


def test_a_database_outage_mid_run_loses_no_token(
    cluster: Cluster, simulator_server: SimulatorServer, sim: SimulatorControl, tmp_path: Path
) -> None:
    settings = make_settings(cluster.url, simulator_server.url, RUN_HEARTBEAT_S=str(HEARTBEAT_S), **SHORT_LEASE)
    with Keeper(settings) as keeper:
        seed_connections(keeper, sim, COUNT, user_prefix="outage")
    sim.configure(token_latency_ms=300)
    env = process_env(tmp_path, cluster.url, simulator_server.url, REFRESH_CONCURRENCY=str(CONCURRENCY))
    cli = Cli.start(tmp_path, "refresh", ["refresh", "--all"], env | SHORT_LEASE)
    try:
        wait_for(lambda: sim.stats()["refreshes"] >= 3, what="a few refreshes before the outage")
        cluster.stop("immediate")
        time.sleep(1.0)
        cluster.start()
        code = cli.wait(60)
    finally:
        cli.end()
    sim.configure(token_latency_ms=0)

    with Keeper(settings) as keeper:
        run = keeper.refresh()
        assert run.status is RunStatus.COMPLETED, run
        assert statuses(keeper) == {"connected": COUNT}, f"exit {code}\n{cli.story()}"
        stats = sim.stats()
        assert stats["invalid_grant"] == 0, stats
        # Pairs answered while the database was gone were never committed: each comes back through the grace
        # window, at most one per refresh that was in flight.
        assert stats["reuse"] == stats["refreshes_in_grace"] <= CONCURRENCY, f"{stats}\nexit {code}\n{cli.story()}"
        assert all(n >= 1 for n in refreshes_per_account(sim).values())
        no_run_left_running(keeper)
    print(f"database outage: the run's process exited {code}; simulator {stats}")

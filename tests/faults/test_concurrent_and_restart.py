"""Two full runs started at once on PostgreSQL, and the simulator restarting mid-run (keeping its state).

Two ``refresh --all`` processes started together end in one shared run or in runs that split the work: either
way every account is refreshed exactly once and no refresh token is presented twice. A provider that goes away
for a moment costs the refreshes sent meanwhile an ``error`` (tokens kept); the next run refreshes them all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import RunRecord
from tests.conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
from tests.faults.conftest import StartCli
from tests.faults.support import (
    HEARTBEAT_S,
    no_run_left_running,
    refreshes_per_account,
    statuses,
    versions,
    wait_for,
)
from tests.helpers import make_settings
from tests.seeding import seed_connections

COUNT = 12


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_full_runs_started_at_once_refresh_each_connection_once(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli
) -> None:
    seed_connections(keeper, sim, COUNT, user_prefix="twice")
    before = versions(keeper)
    sim.configure(token_latency_ms=100)
    clis = [start_cli(f"run-{n}", "refresh", "--all", "--json", REFRESH_CONCURRENCY="2") for n in (1, 2)]

    codes = [cli.wait() for cli in clis]
    assert codes == [0, 0], "\n".join(cli.story() for cli in clis)
    reports = [json.loads(cli.out.read_text()) for cli in clis]

    assert sorted(refreshes_per_account(sim).values()) == [1] * COUNT
    stats = sim.stats()
    assert (stats["reuse"], stats["invalid_grant"], stats["refreshes_in_grace"]) == (0, 0, 0), stats
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert statuses(keeper) == {"connected": COUNT}
    runs = {report["run_id"]: report for report in reports}
    assert all(report["status"] == "completed" for report in reports), reports
    if len(runs) == 2:  # the second began after the first had ended: it found nothing left to do
        assert sum(report["refreshed"] for report in runs.values()) == COUNT, reports
    no_run_left_running(keeper)


@pytest.fixture
def own_simulator() -> Iterator[SimulatorServer]:
    """A simulator of this test's own, so that restarting it disturbs no other test."""
    from lightkeeper.simulator import SimulatorConfig

    config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI)
    with SimulatorServer(config) as server:
        yield server


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_simulator_restarts_mid_run_and_nothing_is_lost(
    database_url: str, own_simulator: SimulatorServer, tmp_path: Path
) -> None:
    settings = make_settings(database_url, own_simulator.url, RUN_HEARTBEAT_S=str(HEARTBEAT_S), REFRESH_CONCURRENCY="2")
    with Keeper(settings) as keeper, own_simulator.control() as control:
        ids = seed_connections(keeper, control, COUNT, user_prefix="restart")
        control.configure(token_latency_ms=200)
        accounts_before = control.accounts()
        first: list[RunRecord] = []
        runner = threading.Thread(target=lambda: first.append(keeper.refresh()))
        runner.start()
        wait_for(lambda: control.stats()["refreshes"] >= 3, what="a few refreshes")
        own_simulator.stop()  # in-flight grants finish and are answered; new requests are refused
        time.sleep(0.5)
        own_simulator.start()  # same port, same state
        runner.join(60)
        [run] = first
        assert run.status is RunStatus.COMPLETED, "a provider outage fails connections, not the run"

        again = keeper.refresh()  # a manual run retries the connections that failed meanwhile

        assert [a["account_id"] for a in control.accounts()] == [a["account_id"] for a in accounts_before]
        assert statuses(keeper) == {"connected": COUNT}, again
        assert again.expired == 0 and again.errors == 0, again
        stats = control.stats()
        assert stats["invalid_grant"] == 0, stats
        # A request cut by the restart after its grant is recovered in the grace window, and only then.
        assert stats["reuse"] == stats["refreshes_in_grace"] <= 2, stats
        assert all(n >= 1 for n in refreshes_per_account(control).values())
        assert len(ids) == COUNT
        no_run_left_running(keeper)

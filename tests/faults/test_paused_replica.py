"""A replica paused (SIGSTOP) while it waits, until its lease has run out, then resumed (SIGCONT).

Meanwhile another process takes the row over and refreshes it. Once resumed, the paused process must send
nothing more for that row and its late write must land nowhere: the stored pair and ``token_version`` are the
other process's. Two waits are paused: a slow token answer (the request is out; its pair rotates at the
provider while the process sleeps) and the wait for a pacing slot after a 429's ``Retry-After`` (nothing sent).
"""

from __future__ import annotations

import signal

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.conftest import StartCli
from tests.faults.support import (
    Cli,
    lease_ran_out,
    newest_refresh_tokens,
    no_run_left_running,
    statuses,
    stored_refresh_token,
    versions,
    wait_for,
)
from tests.seeding import seed_connections

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


def pause_until_lease_runs_out(keeper: Keeper, cli: Cli, connection_id: int) -> None:
    cli.process.send_signal(signal.SIGSTOP)
    wait_for(lambda: lease_ran_out(keeper, connection_id), what="the paused process's lease to run out")


def resume_and_check(
    keeper: Keeper, sim: SimulatorControl, server: SimulatorServer, cli: Cli, connection_id: int, version: int
) -> None:
    """The other process's refresh stands; the resumed one sends nothing and overwrites nothing."""
    taken_over = keeper.refresh()
    assert (taken_over.status, taken_over.refreshed) == (RunStatus.COMPLETED, 1), taken_over
    stored = stored_refresh_token(keeper, connection_id)
    requests = sim.stats()["token_requests"]

    cli.process.send_signal(signal.SIGCONT)
    cli.wait()

    assert sim.stats()["token_requests"] == requests, f"the resumed process sent again:\n{cli.story()}"
    assert versions(keeper) == {connection_id: version + 1}, "one write only: the other process's"
    assert stored_refresh_token(keeper, connection_id) == stored
    account = keeper.connection(connection_id).account_id
    assert newest_refresh_tokens(server, account) == [stored]
    assert statuses(keeper) == {"connected": 1}
    assert sim.stats()["invalid_grant"] == 0
    no_run_left_running(keeper)


def test_paused_while_its_token_answer_is_slow(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    [cid] = seed_connections(keeper, sim, 1, user_prefix="paused")
    version = versions(keeper)[cid]
    sim.configure(token_latency_ms=1500)
    cli = start_cli("paused", "refresh", "--all")
    # Counted on arrival, while the answer is still 1.5 s away (refresh_times is filled once it is granted).
    wait_for(lambda: sim.stats()["token_requests"] == 1, what="the refresh request to arrive")
    pause_until_lease_runs_out(keeper, cli, cid)
    sim.configure(token_latency_ms=0)

    resume_and_check(keeper, sim, simulator_server, cli, cid, version)

    # Its pair rotated at the provider while it slept and never reached the database: the other process's
    # refresh was a grace-window use of the stored token, which discarded the paused one's pair.
    stats = sim.stats()
    assert len(sim.refresh_times()) == 2
    assert (stats["refreshes"], stats["refreshes_in_grace"], stats["reuse"]) == (2, 1, 1), stats


def test_paused_while_it_waits_for_a_slot_after_retry_after(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    [cid] = seed_connections(keeper, sim, 1, user_prefix="paused")
    version = versions(keeper)[cid]
    sim.inject_fault("token", "rate_limit", retry_after=2)
    # It may wait out a Retry-After of 2 s; the lease is the least the settings accept for that.
    cli = start_cli("paused", "refresh", "--all", REFRESH_MAX_RETRY_AFTER_S="2", HTTP_TIMEOUT_S="3")
    wait_for(lambda: sim.stats()["faults_served"] == 1, what="the 429")
    pause_until_lease_runs_out(keeper, cli, cid)

    resume_and_check(keeper, sim, simulator_server, cli, cid, version)

    stats = sim.stats()
    assert stats["token_requests"] == 2, "the 429, then the other process's refresh: no retry after the lease"
    assert (stats["refreshes"], stats["reuse"]) == (1, 0), stats

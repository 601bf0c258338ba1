"""SIGKILL after Lightspeed issued a pair, before lightkeeper committed it.

The simulator grants the refresh in full (the pair rotates) and stalls the answer; the ``refresh --all``
process is killed meanwhile. Lightspeed's rule (docs/LIGHTSPEED.md): the old refresh token keeps working until
the new access token is first used. lightkeeper never used the lost pair, so the next run presents the old
token inside the grace window and succeeds: nothing expired, one reuse, recorded as a grace-window refresh.

The second test shows the rule's other side: had the lost access token been used (only the provider could),
the grace window is over and the connection ends ``expired``, which is Lightspeed's rule and not a token
lightkeeper lost.
"""

from __future__ import annotations

import signal

import httpx2
import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.conftest import StartCli
from tests.faults.support import (
    Cli,
    newest_refresh_tokens,
    no_run_left_running,
    refreshes_per_account,
    statuses,
    stored_refresh_token,
    unseen_access_token,
    versions,
    wait_for,
)
from tests.seeding import seed_connections

COUNT = 3


def kill_after_issue(keeper: Keeper, sim: SimulatorControl, start_cli: StartCli) -> tuple[list[int], Cli]:
    """Stall the first refresh's answer after its pair is issued, and SIGKILL the run's process then."""
    ids = sorted(versions(keeper))
    sim.stall_after_issue(seconds=60)
    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="1")
    wait_for(lambda: sim.stats()["refreshes"] == 1, what="the first pair to be issued")
    cli.process.send_signal(signal.SIGKILL)
    cli.process.wait(10)
    assert sim.stats()["refreshes"] == 1, "nothing else was refreshed before the kill"
    return ids, cli


def test_the_next_run_recovers_the_lost_pair_in_the_grace_window(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    seed_connections(keeper, sim, COUNT, user_prefix="lost")
    before = versions(keeper)
    ids, _ = kill_after_issue(keeper, sim, start_cli)
    lost = keeper.connection(ids[0])  # concurrency 1 claims in id order: the first row's answer was lost
    assert versions(keeper)[lost.id] == before[lost.id], "the killed process committed nothing"

    run = keeper.refresh()  # waits for the dead process's lease to run out, then takes the row over

    assert (run.status, run.refreshed, run.expired, run.errors) == (RunStatus.COMPLETED, COUNT, 0, 0), run
    assert statuses(keeper) == {"connected": COUNT}
    stats = sim.stats()
    assert (stats["refreshes_in_grace"], stats["reuse"], stats["invalid_grant"]) == (1, 1, 0), stats
    assert refreshes_per_account(sim)[lost.account_id] == 2  # the lost pair, then its replacement
    assert all(version == before[cid] + 1 for cid, version in versions(keeper).items())
    for cid in ids:  # what is stored is exactly the one pair the provider still honours
        account = keeper.connection(cid).account_id
        assert newest_refresh_tokens(simulator_server, account) == [stored_refresh_token(keeper, cid)]
    no_run_left_running(keeper)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_once_the_lost_access_token_is_used_the_grace_window_is_over(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    seed_connections(keeper, sim, COUNT, user_prefix="lost")
    ids, _ = kill_after_issue(keeper, sim, start_cli)
    lost = keeper.connection(ids[0])
    access = unseen_access_token(simulator_server, lost.account_id, stored_refresh_token(keeper, lost.id))
    used = httpx2.get(f"{simulator_server.url}/API/V3/Account.json", headers={"Authorization": f"Bearer {access}"})
    assert used.status_code == 200  # the provider's side used the new pair: the old refresh token is revoked

    run = keeper.refresh()

    assert (run.refreshed, run.expired, run.errors) == (COUNT - 1, 1, 0), run
    assert statuses(keeper) == {"connected": COUNT - 1, "expired": 1}
    assert keeper.connection(lost.id).status.value == "expired"
    stats = sim.stats()
    assert (stats["refreshes_in_grace"], stats["reuse"], stats["invalid_grant"]) == (0, 1, 1), stats
    no_run_left_running(keeper)

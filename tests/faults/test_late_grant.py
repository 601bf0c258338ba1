"""A pair Lightspeed grants after our deadline (``HTTP_TIMEOUT_S``) is not a lost token.

The token request is abandoned at its deadline, but the slow provider still rotates the pair a moment later.
The connection is recorded as an ``error`` with its tokens kept. A retry presents the same refresh token again,
and Lightspeed still honours it because the late pair's access token was never used (docs/LIGHTSPEED.md).
Nothing expires; the simulator counts one reuse, inside the grace window, and what is stored is the one pair
the provider honours.
"""

from __future__ import annotations

from lightkeeper import Keeper, RunStatus, Status
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.support import newest_refresh_tokens, statuses, stored_refresh_token, versions, wait_for
from tests.seeding import seed_connections

#: Longer than the fault suite's HTTP_TIMEOUT_S (3 s, ``support.SHORT_LEASE``).
SLOW_MS = 4500


def test_a_pair_granted_after_the_deadline_is_recovered_by_the_next_refresh(
    keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    seed_connections(keeper, sim, 1, user_prefix="late")
    [connection_id] = versions(keeper)
    sim.configure(token_latency_ms=SLOW_MS)

    run = keeper.refresh()

    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 0, 1), run
    record = keeper.connection(connection_id)
    assert record.status is Status.ERROR and "did not answer in time" in (record.last_error or "")
    wait_for(lambda: sim.stats()["refreshes"] == 1, what="Lightspeed's late grant")
    sim.configure(token_latency_ms=0)

    retry = keeper.refresh(connection_id=connection_id)  # asked for by name: its backoff does not hold it

    assert (retry.status, retry.refreshed) == (RunStatus.COMPLETED, 1), retry
    stats = sim.stats()
    counts = (stats["refreshes"], stats["refreshes_in_grace"], stats["reuse"], stats["invalid_grant"])
    assert counts == (2, 1, 1, 0), stats
    assert statuses(keeper) == {"connected": 1}
    account = keeper.connection(connection_id).account_id
    assert newest_refresh_tokens(simulator_server, account) == [stored_refresh_token(keeper, connection_id)]

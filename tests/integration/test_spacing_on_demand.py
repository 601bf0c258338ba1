"""REFRESH_DELAY_MS binds the moment an on-demand refresh leaves, as it binds a run's (issue 19).

An on-demand refresh (``fresh_token``: the token route, the proxy, a host app's client) takes its slot, then its
lease, then decrypts and sends. A database that stalls between the slot and the send used to leave it sending the
moment the stall ended, whatever the slot said: two callers stalled together went out together. Now the slot is
waited for right before the send, and a slot reached late is exchanged for a new one. Gaps are measured at the
simulator's arrival of each refresh request.
"""

from __future__ import annotations

import itertools
import threading
import time

from lightkeeper.simulator import SimulatorControl
from tests.integration.conftest import KeeperFactory
from tests.integration.test_spacing import pacing_row_locked
from tests.seeding import seed_connections

DELAY_MS = 500


def test_on_demand_refreshes_stalled_together_do_not_leave_together(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_DELAY_MS=str(DELAY_MS))
    first, *others = seed_connections(keeper, sim, 3, user_prefix="on-demand")
    rejected = {cid: keeper.tokens.fresh_token(cid).access_token for cid in [first, *others]}
    keeper.tokens.fresh_token(first, rejected=rejected[first])  # a slot taken: the next ones are in the future
    errors: list[BaseException] = []

    def refresh(cid: int) -> None:
        try:
            keeper.tokens.fresh_token(cid, rejected=rejected[cid])
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=refresh, args=(cid,)) for cid in others]
    for caller in callers:
        caller.start()
    time.sleep(0.15)  # both hold a slot in the future and are about to take their leases
    with pacing_row_locked(keeper, 1.5, every_table=True):
        pass  # the database stalls past both slots
    for caller in callers:
        caller.join(30)
    assert not errors, errors
    times = sim.refresh_times()
    assert len(times) == 3, times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.9 * DELAY_MS / 1000, gaps
    assert max(gaps) >= 1.0, gaps  # the stall really came between two requests
    assert sim.reuse() == 0

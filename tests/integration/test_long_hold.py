"""A token endpoint's ``Retry-After`` longer than ``REFRESH_MAX_RETRY_AFTER_S``: it holds every sender, a run leaves
what it did not reach to the next run (and says so) instead of sleeping through the hold, and an on-demand caller
is answered ``RateLimited`` at once. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from lightkeeper.errors import RateLimited
from lightkeeper.simulator import SimulatorControl
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory

HOLD_S = 120


def test_a_long_retry_after_ends_the_run_and_leaves_the_rest_for_the_next(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_MAX_RETRY_AFTER_S="1", REFRESH_CONCURRENCY="1")
    records = [connect(keeper, f"user-{n}") for n in range(3)]
    sim.inject_fault("token", kind="rate_limit", retry_after=HOLD_S)
    before = sim.stats()["token_requests"]

    run = keeper.refresh()

    assert run.status.value == "completed"
    assert (run.refreshed, run.errors) == (0, 1)  # the one that got the 429; the others were not reached
    assert run.message is not None and "asked to wait" in run.message and "next run" in run.message
    assert sim.stats()["token_requests"] - before == 1  # nothing else was sent into the hold
    untouched = [r for r in keeper.connections() if r.status.value == "connected"]
    assert len(untouched) == len(records) - 1


def test_an_on_demand_caller_is_answered_at_once_during_a_long_hold(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_MAX_RETRY_AFTER_S="1", TOKEN_WAIT_S="5")
    first, second = connect(keeper, "user-a"), connect(keeper, "user-b")
    sim.inject_fault("token", kind="rate_limit", retry_after=HOLD_S)
    keeper.refresh(connection_id=first.id)  # the 429 that puts the hold on
    current = keeper.fresh_token(second.id).access_token  # still valid: no request
    before = sim.stats()["token_requests"]

    with pytest.raises(RateLimited) as limited:  # Lightspeed answered 401 to it: a refresh is needed now
        keeper.tokens.fresh_token(second.id, rejected=current)

    assert limited.value.retry_after is not None and limited.value.retry_after > HOLD_S - 10
    assert sim.stats()["token_requests"] == before

"""R-Series and X-Series connections in the same runs, on SQLite and PostgreSQL; X-Series' strict refresh policy.

A full run refreshes every R-Series connection and, of the X-Series ones (strict rotation: each refresh risks the
chain), only those whose access token expires before the schedule's next tick plus ``TOKEN_REFRESH_LEEWAY_S``, or
that were last refreshed more than ``X_SERIES_MAX_IDLE_S`` ago; the rest are counted skipped. ``REFRESH_DUE_AFTER``
does not apply to X-Series. A run of one connection (``refresh --connection ID``) refreshes it at once.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl
from tests.seeding import seed_connections
from tests.xseries.conftest import StartCli, XKeeperFactory
from tests.xseries.support import (
    r_refreshes,
    reuse_both,
    seed_x_connections,
    set_row,
    status_counts,
    versions,
    x_refreshes,
)

#: Access token lifetimes at the simulator: one that ends before any next tick of the default schedule (every
#: 6 hours) plus the 5 minutes' leeway, and one that outlives it.
EXPIRING_TTL_S = 60
LASTING_TTL_S = 86_400


def seed_x(keeper: Keeper, sim: SimulatorControl, count: int, *, ttl: int, user_prefix: str) -> list[int]:
    sim.configure(x_access_token_ttl=ttl)
    return seed_x_connections(keeper, sim, count, user_prefix=user_prefix)


def prefix_of(keeper: Keeper, connection_id: int) -> str:
    return keeper.connection(connection_id).account_id


def test_a_mixed_run_refreshes_each_connection_of_both_providers_once(
    mixed_keeper: Keeper, sim: SimulatorControl
) -> None:
    keeper = mixed_keeper
    r_ids = seed_connections(keeper, sim, 3, user_prefix="r")
    x_ids = seed_x(keeper, sim, 3, ttl=EXPIRING_TTL_S, user_prefix="x")
    before = versions(keeper)

    run = keeper.refresh()

    assert (run.status, run.total, run.refreshed, run.skipped, run.errors, run.expired) == (
        RunStatus.COMPLETED,
        6,
        6,
        0,
        0,
        0,
    ), run
    assert reuse_both(sim) == (0, 0)
    assert sorted(r_refreshes(sim).values()) == [1, 1, 1]
    assert x_refreshes(sim) == {prefix_of(keeper, cid): 1 for cid in x_ids}
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert {r.provider for r in keeper.connections() if r.id in r_ids} == {"r-series"}
    assert status_counts(keeper) == {"connected": 6}
    stats = sim.stats()
    assert (stats["invalid_grant"], stats["x_invalid_grant"]) == (0, 0)
    # The stored pair of every X-Series store is the one live pair X-Series holds for it.
    assert [store["active_refresh_tokens"] for store in sim.x_stores()] == [1, 1, 1]


def test_a_full_run_refreshes_an_x_series_store_only_when_it_must(mixed_keeper: Keeper, sim: SimulatorControl) -> None:
    keeper = mixed_keeper
    [r_id] = seed_connections(keeper, sim, 1, user_prefix="r")
    [lasting, recent] = seed_x(keeper, sim, 2, ttl=LASTING_TTL_S, user_prefix="lasting")
    [expiring] = seed_x(keeper, sim, 1, ttl=EXPIRING_TTL_S, user_prefix="expiring")
    [idle] = seed_x(keeper, sim, 1, ttl=LASTING_TTL_S, user_prefix="idle")
    now = keeper.clock()
    set_row(keeper, idle, last_token_refresh_at=now - timedelta(days=15))  # X_SERIES_MAX_IDLE_S: 14 days
    set_row(keeper, recent, last_token_refresh_at=now - timedelta(days=13))
    prefixes = {cid: prefix_of(keeper, cid) for cid in (lasting, recent, expiring, idle)}

    first = keeper.refresh()

    assert (first.status, first.total, first.refreshed, first.skipped) == (RunStatus.COMPLETED, 5, 3, 2), first
    assert x_refreshes(sim) == {prefixes[lasting]: 0, prefixes[recent]: 0, prefixes[expiring]: 1, prefixes[idle]: 1}
    assert list(r_refreshes(sim).values()) == [1]

    second = keeper.refresh()  # the simulator now issues day-long tokens: every X-Series store can wait

    assert (second.total, second.refreshed, second.skipped) == (5, 1, 4), second
    assert x_refreshes(sim) == {prefixes[lasting]: 0, prefixes[recent]: 0, prefixes[expiring]: 1, prefixes[idle]: 1}
    assert list(r_refreshes(sim).values()) == [2]

    by_name = keeper.refresh(connection_id=lasting)  # asked for by name: refreshed at once, due or not

    assert (by_name.total, by_name.refreshed, by_name.skipped) == (1, 1, 0), by_name
    assert x_refreshes(sim)[prefixes[lasting]] == 1
    assert reuse_both(sim) == (0, 0) and status_counts(keeper) == {"connected": 5}
    assert keeper.connection(r_id).status.value == "connected"


@pytest.mark.parametrize(
    ("schedule", "refreshed"),
    [("* * * * *", 0), ("0 0 1 1 *", 1)],
    ids=["next-tick-in-a-minute", "next-tick-next-year"],
)
def test_the_schedule_s_next_tick_decides_whether_a_token_is_expiring(
    x_keeper: Keeper, sim: SimulatorControl, schedule: str, refreshed: int
) -> None:
    """A token with 30 minutes left is refreshed only if the next run comes too late for it."""
    x_keeper.set_schedule(schedule)
    [connection_id] = seed_x(x_keeper, sim, 1, ttl=1800, user_prefix="tick")

    run = x_keeper.refresh()

    assert (run.total, run.refreshed, run.skipped) == (1, refreshed, 1 - refreshed), run
    assert x_refreshes(sim) == {prefix_of(x_keeper, connection_id): refreshed}


def test_refresh_due_after_does_not_apply_to_x_series(make_x_keeper: XKeeperFactory, sim: SimulatorControl) -> None:
    """An automatic run with ``REFRESH_DUE_AFTER``: R-Series connections refreshed a moment ago wait; an X-Series
    token about to expire is refreshed all the same, and a lasting one is not, however old its refresh."""
    keeper = make_x_keeper(both=True, REFRESH_DUE_AFTER="3600")
    [r_id] = seed_connections(keeper, sim, 1, user_prefix="r")
    [expiring] = seed_x(keeper, sim, 1, ttl=EXPIRING_TTL_S, user_prefix="expiring")
    [lasting] = seed_x(keeper, sim, 1, ttl=LASTING_TTL_S, user_prefix="lasting")
    set_row(keeper, lasting, last_token_refresh_at=keeper.clock() - timedelta(days=2))

    run = keeper.refresh(trigger="schedule", due=True)

    assert (run.total, run.refreshed, run.skipped) == (3, 1, 2), run
    assert x_refreshes(sim) == {prefix_of(keeper, expiring): 1, prefix_of(keeper, lasting): 0}
    assert list(r_refreshes(sim).values()) == [0]
    assert keeper.connection(r_id).token_version == versions(keeper)[r_id]


def test_the_cli_refreshes_one_x_series_connection_at_once(
    mixed_keeper: Keeper, sim: SimulatorControl, start_cli: StartCli
) -> None:
    keeper = mixed_keeper
    seed_connections(keeper, sim, 1, user_prefix="r")
    [lasting, other] = seed_x(keeper, sim, 2, ttl=LASTING_TTL_S, user_prefix="lasting")
    before = versions(keeper)

    cli = start_cli("one", "refresh", "--connection", str(lasting), "--json")
    assert cli.wait() == 0, cli.story()

    report = json.loads(cli.out.read_text())
    assert (report["status"], report["refreshed"], report["skipped"]) == ("completed", 1, 0), report
    assert x_refreshes(sim) == {prefix_of(keeper, lasting): 1, prefix_of(keeper, other): 0}
    assert versions(keeper) == before | {lasting: before[lasting] + 1}

    full = start_cli("all", "refresh", "--all", "--json")
    assert full.wait() == 0, full.story()
    report = json.loads(full.out.read_text())
    assert (report["refreshed"], report["skipped"]) == (1, 2), report  # the R-Series one; both X-Series wait
    assert reuse_both(sim) == (0, 0)

"""A pair X-Series issued that never reached our database: the documented outcome, on SQLite and PostgreSQL.

X-Series revokes a refresh token the moment it issues the next one, with no grace window. So when the answer is
lost between X-Series and our commit (the process is SIGKILLed while the answer is on its way, or the answer comes
after our deadline), the stored refresh token is already dead and nothing can bring the chain back. What
lightkeeper promises instead (issue 18, "Refresh"): the connection goes ``expired`` at its next refresh, with a
``last_error`` and a ``connection.expired`` event saying the rotation was lost, and no other connection, of
either provider, is touched.
"""

from __future__ import annotations

import signal

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.support import HEARTBEAT_S, no_run_left_running, wait_for
from tests.seeding import seed_connections
from tests.xseries.conftest import StartCli, XKeeperFactory
from tests.xseries.support import (
    events_of,
    holds_the_live_pair,
    r_refreshes,
    reuse_both,
    seed_x_connections,
    statuses,
    versions,
    x_refreshes,
)

#: Tokens that expire before any next tick: every full run refreshes every X-Series store.
EXPIRING_TTL_S = 60
#: What ``last_error`` (and the event) must say: the cause, not just "invalid_grant".
LOST = "rotation was lost"


def assert_lost_rotation(keeper: Keeper, connection_id: int) -> None:
    dead = keeper.connection(connection_id)
    assert dead.status.value == "expired"
    assert dead.last_error and "invalid_grant" in dead.last_error, dead.last_error
    assert LOST in dead.last_error, f"last_error does not say the rotation was lost: {dead.last_error!r}"
    [event] = events_of(keeper, connection_id)
    assert (event["type"], event["provider"], event["status"]) == ("connection.expired", "x-series", "expired")
    assert event["last_error"] == dead.last_error


def test_a_sigkill_between_x_series_answer_and_our_commit_loses_that_store_only(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer, start_cli: StartCli
) -> None:
    keeper = make_x_keeper(
        both=True,
        RUN_HEARTBEAT_S=str(HEARTBEAT_S),
        HTTP_TIMEOUT_S="3",
        REFRESH_MAX_RETRY_AFTER_S="0",
        REFRESH_LEASE_S="10",
    )  # as tests/faults' keeper (SHORT_LEASE): the dead process's claim is taken over 10 s after it was made
    r_ids = seed_connections(keeper, sim, 2, user_prefix="r")
    sim.configure(x_access_token_ttl=EXPIRING_TTL_S)
    x_ids = seed_x_connections(keeper, sim, 3, user_prefix="x")
    before = versions(keeper)
    sim.inject_fault("x_token", "stall_after_issue", seconds=60)

    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="1")
    wait_for(lambda: sum(x_refreshes(sim).values()) == 1, what="X-Series to issue the first pair")
    cli.process.send_signal(signal.SIGKILL)
    cli.process.wait(10)

    [lost_prefix] = [prefix for prefix, count in x_refreshes(sim).items() if count == 1]
    [lost] = [cid for cid in x_ids if keeper.connection(cid).account_id == lost_prefix]
    assert versions(keeper)[lost] == before[lost], "the killed process committed nothing for it"
    assert keeper.connection(lost).status.value == "connected"  # nobody knows yet
    assert all(count <= 1 for count in r_refreshes(sim).values())

    run = keeper.refresh()  # takes the dead process's claim over once its lease has run out

    assert run.status is RunStatus.COMPLETED and run.expired == 1 and run.errors == 0, run
    assert statuses(keeper) == {cid: "connected" for cid in r_ids + x_ids} | {lost: "expired"}
    assert_lost_rotation(keeper, lost)
    others = [cid for cid in x_ids if cid != lost]
    assert all(holds_the_live_pair(keeper, simulator_server, cid) for cid in others)
    assert all(versions(keeper)[cid] > before[cid] for cid in r_ids + others)
    assert all(events_of(keeper, cid) == [] for cid in r_ids + others), "another connection was alerted"
    stats = sim.stats()
    assert reuse_both(sim) == (0, 1), stats  # the dead token, presented once by the next refresh
    assert (stats["invalid_grant"], stats["x_invalid_grant"]) == (0, 1), stats
    assert x_refreshes(sim)[lost_prefix] == 1  # the pair that was lost; nothing issued after

    again = keeper.refresh()  # the next runs leave the dead store alone and keep the others alive
    assert (again.expired, again.errors, again.refreshed) == (0, 0, len(r_ids) + len(others)), again
    assert reuse_both(sim) == (0, 1)
    no_run_left_running(keeper)


def test_a_grant_after_our_deadline_is_a_lost_rotation_too(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """The request is abandoned at HTTP_TIMEOUT_S, X-Series grants it a moment later: R-Series' grace window would
    recover it (tests/faults/test_late_grant.py); on X-Series the store is lost, and says so at its next refresh."""
    keeper = make_x_keeper(HTTP_TIMEOUT_S="1", REFRESH_MAX_RETRY_AFTER_S="0", REFRESH_LEASE_S="10")
    [late, other] = seed_x_connections(keeper, sim, 2)
    prefix = keeper.connection(late).account_id
    sim.configure(token_latency_ms=2000)

    first = keeper.refresh(connection_id=late)

    assert (first.errors, first.refreshed) == (1, 0), first
    failed = keeper.connection(late)
    assert failed.status.value == "error" and "in time" in (failed.last_error or ""), failed.last_error
    assert events_of(keeper, late) == [] or {e["type"] for e in events_of(keeper, late)} == {"connection.error"}
    wait_for(lambda: x_refreshes(sim)[prefix] == 1, what="X-Series' late grant")
    sim.configure(token_latency_ms=0)

    retry = keeper.refresh(connection_id=late)

    assert retry.expired == 1, retry
    dead = keeper.connection(late)
    assert dead.status.value == "expired" and dead.last_error and LOST in dead.last_error, dead.last_error
    assert [e["type"] for e in events_of(keeper, late)][-1] == "connection.expired"
    assert reuse_both(sim) == (0, 1)
    assert keeper.refresh(connection_id=other).refreshed == 1  # the other store is untouched
    assert holds_the_live_pair(keeper, simulator_server, other) and events_of(keeper, other) == []

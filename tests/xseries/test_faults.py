"""The fault tests of ``tests/faults`` for X-Series: signals with refreshes in flight, a paused replica, the
provider restarting mid-run. X-Series revokes a refresh token the moment it issues the next one, with no grace
window, so each fault must end with no X-Series refresh token presented twice (``x_reuse`` 0), nothing expired,
and the runs closed; where the R-Series test accepts a grace-window replay (a pair issued and then lost on our
side), this one checks what lightkeeper promises instead (README, "X-Series beside R-Series"): that connection
alone goes ``expired`` at its next refresh, with a ``last_error`` saying the rotation was lost and a
``connection.expired`` event, after its dead token was presented that once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.errors import ConnectionExpired
from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer
from lightkeeper.store import RunRecord
from tests.conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
from tests.faults.support import (
    HEARTBEAT_S,
    Cli,
    lease_ran_out,
    no_run_left_running,
    stored_refresh_token,
    wait_for,
)
from tests.helpers import make_settings
from tests.xseries.conftest import StartCli, XKeeperFactory
from tests.xseries.support import (
    events_of,
    holds_the_live_pair,
    live_x_refresh_tokens,
    seed_x_connections,
    status_counts,
    statuses,
    versions,
    x_env,
    x_refreshes,
)

COUNT = 8
#: Seeded tokens expire before any next tick: every full run refreshes every X-Series store.
EXPIRING_TTL_S = 60
#: What ``last_error`` says of a store whose rotation was lost (``refresh.policy.LOST_ROTATION``).
LOST = "rotation was lost"
#: Where the second signal's message says what a quit at once may cost on X-Series (``cli.commands.runs``).
NO_GRACE = "an X-Series store has no grace window, so such a connection goes expired"
#: A Retry-After on X-Series' client that an on-demand caller waits out (shorter than TOKEN_WAIT_S).
HOLD_S = 3.0


@pytest.fixture
def keeper(make_x_keeper: XKeeperFactory) -> Keeper:
    """This process's keeper (both providers), with the fault suite's short leases: seeds, reads, and is "the
    next run" that takes over what a dead or paused process left, 10 s after that one claimed it."""
    return make_x_keeper(
        both=True,
        RUN_HEARTBEAT_S=str(HEARTBEAT_S),
        HTTP_TIMEOUT_S="3",
        REFRESH_MAX_RETRY_AFTER_S="0",
        REFRESH_LEASE_S="10",
    )  # tests.faults.support.SHORT_LEASE, as start_cli's processes have it


def seed_expiring(keeper: Keeper, sim: SimulatorControl, count: int, *, prefix: str = "xf") -> list[int]:
    sim.configure(x_access_token_ttl=EXPIRING_TTL_S)
    return seed_x_connections(keeper, sim, count, user_prefix=prefix)


def assert_no_token_spent_twice(sim: SimulatorControl) -> None:
    stats = sim.x_stats()
    assert (stats["x_reuse"], stats["x_invalid_grant"], stats["x_family_revocations"]) == (0, 0, 0), stats


def assert_chains_intact(keeper: Keeper, sim: SimulatorControl, server: SimulatorServer, ids: list[int]) -> None:
    """No X-Series refresh token presented twice, every store connected and holding the pair X-Series honours."""
    assert_no_token_spent_twice(sim)
    assert status_counts(keeper) == {"connected": len(ids)}
    lost = [cid for cid in ids if not holds_the_live_pair(keeper, server, cid)]
    assert not lost, f"connections whose stored pair is not the one X-Series honours: {lost}"


def assert_lost_rotation(keeper: Keeper, connection_id: int) -> None:
    """The documented end of a store whose issued pair never reached our database."""
    dead = keeper.connection(connection_id)
    assert dead.status.value == "expired", dead
    assert dead.last_error and "invalid_grant" in dead.last_error and LOST in dead.last_error, dead.last_error
    [event] = events_of(keeper, connection_id)
    assert (event["type"], event["provider"], event["last_error"]) == (
        "connection.expired",
        "x-series",
        dead.last_error,
    )


def lost_store(keeper: Keeper, sim: SimulatorControl, ids: list[int]) -> int:
    """The one store X-Series issued a pair to (the pair stalled on its way to the process)."""
    [prefix] = [prefix for prefix, count in x_refreshes(sim).items() if count == 1]
    [lost] = [cid for cid in ids if keeper.connection(cid).account_id == prefix]
    return lost


# -- signals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_x_series_refreshes_in_flight_finish_and_spends_no_token_twice(
    keeper: Keeper,
    sim: SimulatorControl,
    simulator_server: SimulatorServer,
    start_cli: StartCli,
    signum: signal.Signals,
) -> None:
    """Three refreshes in flight when the signal comes: X-Series rotated those three stores' tokens, so each pair
    must reach the database (a pair cancelled on its way would end that store for good)."""
    ids = seed_expiring(keeper, sim, COUNT)
    before = versions(keeper)
    sim.configure(token_latency_ms=1500)
    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="3")
    wait_for(lambda: sim.x_stats()["x_token_requests"] >= 3, what="three X-Series refreshes in flight")
    cli.process.send_signal(signum)
    assert cli.wait() == 0, cli.story()

    sent, issued = sim.x_stats()["x_token_requests"], sim.x_stats()["x_refreshes"]
    saved = [cid for cid, version in versions(keeper).items() if version > before[cid]]
    assert 3 <= sent < COUNT, "it stopped before the end"
    assert len(saved) == sent == issued, f"every X-Series refresh in flight was saved\n{cli.story()}"
    assert "stopping" in cli.log.read_text()
    assert all(holds_the_live_pair(keeper, simulator_server, cid) for cid in saved)
    no_run_left_running(keeper)
    [stopped] = keeper.run_history(limit=1)
    assert stopped.status is RunStatus.INTERRUPTED and stopped.refreshed == len(saved), stopped

    sim.configure(token_latency_ms=0)
    run = keeper.refresh()
    assert (run.status, run.refreshed, run.errors, run.expired) == (RunStatus.COMPLETED, COUNT, 0, 0), run
    assert_chains_intact(keeper, sim, simulator_server, ids)


def test_a_second_signal_quits_at_once_and_the_x_series_store_it_cut_off_ends_alone(
    keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer, start_cli: StartCli
) -> None:
    """The answer to the first refresh never comes (X-Series issued it, then it stalls): a second SIGINT quits at
    once, and says so for X-Series. What follows is what it said: the next run finds that store's refresh token
    dead, presents it that once, and marks it expired (rotation lost); the other store is refreshed and alerted
    about nothing."""
    ids = seed_expiring(keeper, sim, 2)
    sim.inject_fault("x_token", "stall_after_issue", seconds=60)
    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="1")
    wait_for(lambda: sim.x_stats()["x_refreshes"] == 1, what="X-Series to issue the first pair")
    cli.process.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in cli.log.read_text(), what="the process to say it is stopping")
    started = time.monotonic()
    cli.process.send_signal(signal.SIGINT)
    assert cli.wait(timeout=5) == 130, cli.story()
    assert time.monotonic() - started < 2
    assert NO_GRACE in " ".join(cli.log.read_text().split()), cli.story()

    lost = lost_store(keeper, sim, ids)
    [other] = [cid for cid in ids if cid != lost]
    run = keeper.refresh()  # takes the dead process's claim over once its lease has run out

    assert (run.status, run.refreshed, run.expired, run.errors) == (RunStatus.COMPLETED, 1, 1, 0), run
    assert_lost_rotation(keeper, lost)
    assert holds_the_live_pair(keeper, simulator_server, other) and events_of(keeper, other) == []
    stats = sim.x_stats()
    # The dead token, presented once by the run that found it dead; X-Series then revoked the stalled pair too.
    assert (stats["x_reuse"], stats["x_invalid_grant"], stats["x_family_revocations"]) == (1, 1, 1), stats
    assert live_x_refresh_tokens(simulator_server, keeper.connection(lost).account_id) == []
    again = keeper.refresh()  # the dead store is left alone from now on
    assert (again.refreshed, again.expired, again.errors) == (1, 0, 0), again
    assert sim.x_stats()["x_reuse"] == 1
    no_run_left_running(keeper)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_workers_second_signal_quits_at_once_and_names_x_series_missing_grace_window(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, signum: signal.Signals
) -> None:
    ids = seed_expiring(keeper, sim, 2, prefix="xw")
    before = versions(keeper)
    sim.inject_fault("x_token", "stall_after_issue", seconds=60)  # a graceful stop waits for it (HTTP_TIMEOUT_S)
    keeper.store.runs.request(trigger="api", now=keeper.clock())  # queued, as POST /api/refresh does
    cli = start_cli("worker", "worker", REFRESH_CONCURRENCY="1", WORKER_POLL_S="0.1")
    wait_for(lambda: sim.x_stats()["x_refreshes"] == 1, what="the worker's first X-Series pair to be issued")
    cli.process.send_signal(signum)
    wait_for(lambda: "stopping" in cli.log.read_text(), what="the worker to say it is stopping")
    started = time.monotonic()
    cli.process.send_signal(signum)
    assert cli.wait(timeout=5) == 130, cli.story()
    assert time.monotonic() - started < 2
    assert NO_GRACE in " ".join(cli.log.read_text().split()), cli.story()
    assert versions(keeper) == before, "nothing was saved: the one answer never came, nothing else started"
    assert sim.x_stats()["x_token_requests"] == 1 and statuses(keeper) == dict.fromkeys(ids, "connected")


# -- a paused replica ------------------------------------------------------------------------------------------


def pause_until_lease_runs_out(keeper: Keeper, cli: Cli, connection_id: int) -> None:
    cli.process.send_signal(signal.SIGSTOP)
    wait_for(lambda: lease_ran_out(keeper, connection_id), what="the paused process's lease to run out")


def resume(keeper: Keeper, sim: SimulatorControl, cli: Cli, connection_id: int) -> None:
    """SIGCONT: the resumed process sends nothing more and writes nothing over what the other process wrote."""
    requests, version = sim.x_stats()["x_token_requests"], versions(keeper)[connection_id]
    stored = stored_refresh_token(keeper, connection_id)
    cli.process.send_signal(signal.SIGCONT)
    assert cli.wait() == 0, cli.story()
    assert sim.x_stats()["x_token_requests"] == requests, f"the resumed process sent again:\n{cli.story()}"
    assert versions(keeper)[connection_id] == version, f"the resumed process wrote:\n{cli.story()}"
    assert stored_refresh_token(keeper, connection_id) == stored
    assert "Traceback" not in cli.log.read_text(), cli.story()
    no_run_left_running(keeper)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_paused_while_its_x_series_answer_is_slow_ends_that_store_as_a_lost_rotation(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    """Paused with its request out: X-Series issues the pair while the process sleeps past its lease, so the
    stored refresh token is dead. R-Series' grace window lets the next holder present it again and go on; X-Series
    has none, so the next holder's refresh is the lost rotation README promises: that store goes expired with a
    clear ``last_error``, and the resumed process, holding the only pair X-Series had issued, neither sends nor
    writes (that pair was revoked when the dead token came back, so no one holds a usable token)."""
    [cid] = seed_expiring(keeper, sim, 1, prefix="paused")
    version = versions(keeper)[cid]
    sim.configure(token_latency_ms=1500)
    cli = start_cli("paused", "refresh", "--all")
    # Counted on arrival, while the answer is still 1.5 s away.
    wait_for(lambda: sim.x_stats()["x_token_requests"] == 1, what="the X-Series refresh request to arrive")
    pause_until_lease_runs_out(keeper, cli, cid)
    sim.configure(token_latency_ms=0)
    assert sim.x_stats()["x_refreshes"] == 1, "X-Series issued the pair while the process slept"

    taken_over = keeper.refresh()

    assert (taken_over.status, taken_over.expired, taken_over.refreshed) == (RunStatus.COMPLETED, 1, 0), taken_over
    assert_lost_rotation(keeper, cid)
    assert versions(keeper)[cid] == version, "no pair was ever saved for it"
    resume(keeper, sim, cli, cid)
    assert_lost_rotation(keeper, cid)
    stats = sim.x_stats()
    assert (stats["x_reuse"], stats["x_invalid_grant"], stats["x_family_revocations"]) == (1, 1, 1), stats
    assert live_x_refresh_tokens(simulator_server, keeper.connection(cid).account_id) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_paused_while_it_waits_for_a_slot_after_an_http_date_retry_after(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, simulator_server: SimulatorServer
) -> None:
    """Paused while it waits out X-Series' 429 (``Retry-After`` an HTTP date): nothing is out, so the other process
    refreshes the store and the resumed one, whose lease has ended, sends nothing."""
    [cid] = seed_expiring(keeper, sim, 1, prefix="paused")
    version = versions(keeper)[cid]
    sim.inject_fault("x_token", "rate_limit", retry_after=2)
    # It may wait out the date (2 s, rounded up to the second); the lease is the least the settings accept.
    cli = start_cli("paused", "refresh", "--all", REFRESH_MAX_RETRY_AFTER_S="3", HTTP_TIMEOUT_S="3")
    wait_for(lambda: sim.stats()["faults_served"] == 1, what="the 429")
    pause_until_lease_runs_out(keeper, cli, cid)
    waiting = keeper.connection(cid)
    assert (waiting.status.value, waiting.last_error) == ("connected", None), "it was waiting, not giving up"

    taken_over = keeper.refresh()

    assert (taken_over.status, taken_over.refreshed) == (RunStatus.COMPLETED, 1), taken_over
    resume(keeper, sim, cli, cid)
    assert versions(keeper) == {cid: version + 1}, "one write only: the other process's"
    stats = sim.x_stats()
    assert (stats["x_token_requests"], stats["x_refreshes"]) == (2, 1), "the 429, then the other's refresh"
    assert_chains_intact(keeper, sim, simulator_server, [cid])


# -- the provider restarting mid-run ---------------------------------------------------------------------------

RESTART_COUNT = 12


@pytest.fixture
def own_simulator() -> Iterator[SimulatorServer]:
    """A simulator of this test's own, so that restarting it disturbs no other test."""
    config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI)
    with SimulatorServer(config) as server:
        yield server


def run_across_a_restart(keeper: Keeper, server: SimulatorServer, control: SimulatorControl) -> RunRecord:
    """A full run during which the simulator stops (grants in flight finish and are answered, new requests are
    refused) and comes back on the same port with the same state."""
    first: list[RunRecord] = []
    runner = threading.Thread(target=lambda: first.append(keeper.refresh()))
    runner.start()
    wait_for(lambda: control.x_stats()["x_refreshes"] >= 3, what="a few X-Series refreshes")
    server.stop()
    time.sleep(0.5)
    server.start()
    runner.join(60)
    [run] = first
    return run


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_simulator_restarts_mid_run_and_no_x_series_chain_is_lost(
    database_url: str, own_simulator: SimulatorServer, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        own_simulator.url,
        RUN_HEARTBEAT_S=str(HEARTBEAT_S),
        REFRESH_CONCURRENCY="2",
        **x_env(own_simulator.url),
    )
    with Keeper(settings) as keeper, own_simulator.control() as control:
        control.configure(x_access_token_ttl=EXPIRING_TTL_S)
        ids = seed_x_connections(keeper, control, RESTART_COUNT, user_prefix="restart")
        control.configure(token_latency_ms=200)
        stores_before = [store["domain_prefix"] for store in control.x_stores()]

        run = run_across_a_restart(keeper, own_simulator, control)
        assert run.status is RunStatus.COMPLETED, "a provider outage fails connections, not the run"
        assert (run.expired, run.refreshed + run.errors) == (0, RESTART_COUNT) and run.errors >= 1, run
        # Every pair X-Series issued reached the database: none was answered into a closed connection.
        assert control.x_stats()["x_refreshes"] == run.refreshed
        assert_no_token_spent_twice(control)
        again = keeper.refresh()  # a manual run retries the stores that failed meanwhile

        assert [store["domain_prefix"] for store in control.x_stores()] == stores_before
        assert (again.expired, again.errors) == (0, 0), again
        assert all(count >= 1 for count in x_refreshes(control).values()), x_refreshes(control)
        assert_chains_intact(keeper, control, own_simulator, ids)
        no_run_left_running(keeper)


# -- an on-demand caller queued behind a store that is found dead ----------------------------------------------


def lose_the_stored_pair(keeper: Keeper, server: SimulatorServer, connection_id: int) -> None:
    """X-Series exchanges the stored refresh token and its answer never reaches our database (a lost rotation)."""
    record = keeper.connection(connection_id)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": keeper.vault.refresh_token(record),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    answer = httpx2.post(f"{server.url}/x/{record.account_id}/api/1.0/token", data=form, timeout=10)
    assert answer.status_code == 200, answer.text


def on_demand(keeper: Keeper, connection_id: int, refused: str) -> str:
    try:
        keeper.tokens.fresh_token(connection_id, rejected=refused)
    except ConnectionExpired:
        return "expired"
    return "fresh"


def test_an_on_demand_caller_waiting_for_its_slot_sends_nothing_once_another_found_the_store_dead(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """A caller read the row (connected) and waits for its pacing slot (a Retry-After holds X-Series); meanwhile
    another process presents the stored refresh token, which X-Series had already exchanged for a pair we lost, and
    marks the store expired. The caller must not present that dead token a second time, nor alert twice."""
    caller, other = make_x_keeper(), make_x_keeper()
    [cid] = seed_expiring(caller, sim, 1, prefix="queued")
    refused = caller.vault.access_token(caller.connection(cid))
    lose_the_stored_pair(caller, simulator_server, cid)
    caller.store.pacing.hold("refresh:x-series", HOLD_S)
    outcome: list[str] = []
    waiting = threading.Thread(target=lambda: outcome.append(on_demand(caller, cid, refused)), name="on-demand")
    waiting.start()
    time.sleep(0.5)  # the caller has read the row and sleeps until the hold ends

    held = other.store.connections.acquire(cid, owner=other.owner, lease=timedelta(seconds=30))
    assert held is not None, "the waiting caller does not hold the lease while it waits"
    assert other.refresher.refresh(held).outcome.value == "expired"  # the dead token, presented once
    waiting.join(HOLD_S + 30)

    assert outcome == ["expired"]
    stats = sim.x_stats()
    assert (stats["x_token_requests"], stats["x_reuse"]) == (2, 1), f"the dead token was presented again: {stats}"
    assert_lost_rotation(other, cid)  # one connection.expired event

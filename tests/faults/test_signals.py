"""SIGINT and SIGTERM stop ``refresh --all`` gracefully: refreshes in flight finish and are saved, nothing new
starts, the run is closed; the next run presents no refresh token twice. A second signal quits at once and says
what may be left to Lightspeed's grace window.

Before: the event loop's own Ctrl-C handling cancelled the requests in flight. Lightspeed had rotated those
refresh tokens, the pairs were lost, and the next run counted a reuse for each.
"""

from __future__ import annotations

import signal
import time

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl
from tests.faults.conftest import StartCli
from tests.faults.support import no_run_left_running, statuses, versions, wait_for
from tests.seeding import seed_connections

COUNT = 8


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_lets_refreshes_in_flight_finish_and_spends_no_token_twice(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, signum: signal.Signals
) -> None:
    seed_connections(keeper, sim, COUNT, user_prefix="sig")
    before = versions(keeper)
    sim.configure(token_latency_ms=1500)
    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="3")
    wait_for(lambda: sim.stats()["token_requests"] >= 3, what="three refreshes in flight")
    cli.process.send_signal(signum)
    assert cli.wait() == 0, cli.story()
    sent = sim.stats()["token_requests"]
    saved = sum(1 for cid, version in versions(keeper).items() if version > before[cid])
    assert 3 <= sent < COUNT, "it stopped before the end"
    assert saved == sent == sim.stats()["refreshes"], f"every refresh in flight was saved\n{cli.story()}"
    assert "stopping" in cli.log.read_text()
    no_run_left_running(keeper)
    [stopped] = keeper.run_history(limit=1)
    assert stopped.status is RunStatus.INTERRUPTED and stopped.refreshed == saved

    sim.configure(token_latency_ms=0)
    run = keeper.refresh()
    assert (run.status, run.refreshed, run.errors, run.expired) == (RunStatus.COMPLETED, COUNT, 0, 0)
    assert sim.reuse() == 0
    assert statuses(keeper) == {"connected": COUNT}


def test_a_second_signal_quits_at_once_and_names_the_grace_window(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli
) -> None:
    seed_connections(keeper, sim, 2, user_prefix="sig")
    sim.stall_after_issue(seconds=60)  # the first answer never comes: a graceful stop would wait for it
    cli = start_cli("refresh", "refresh", "--all", REFRESH_CONCURRENCY="1")
    wait_for(lambda: sim.stats()["refreshes"] == 1, what="the first pair to be issued")
    cli.process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    cli.process.send_signal(signal.SIGINT)
    assert cli.wait(timeout=5) == 130
    assert time.monotonic() - started < 2
    assert "grace window" in cli.log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_workers_second_signal_quits_at_once_and_names_the_grace_window(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli, signum: signal.Signals
) -> None:
    seed_connections(keeper, sim, 2, user_prefix="wsig")
    sim.stall_after_issue(seconds=60)  # the first answer never comes: a graceful stop waits for it (HTTP_TIMEOUT_S)
    keeper.store.runs.request(trigger="api", now=keeper.clock())  # queued, as POST /api/refresh does
    cli = start_cli("worker", "worker", REFRESH_CONCURRENCY="1", WORKER_POLL_S="0.1")
    wait_for(lambda: sim.stats()["refreshes"] == 1, what="the worker's first pair to be issued")
    cli.process.send_signal(signum)
    wait_for(lambda: "stopping" in cli.log.read_text(), what="the worker to say it is stopping")
    started = time.monotonic()
    cli.process.send_signal(signum)
    assert cli.wait(timeout=5) == 130, cli.story()
    assert time.monotonic() - started < 2
    assert "grace window" in cli.log.read_text()


def test_a_signal_during_a_retry_after_hold_sends_nothing_more(
    keeper: Keeper, sim: SimulatorControl, start_cli: StartCli
) -> None:
    """Workers waiting out a 429's hold (up to REFRESH_MAX_RETRY_AFTER_S) with a claim in hand: a signal hands the
    claims back unsent and the run stops at once, instead of sending new refreshes when the hold ends."""
    seed_connections(keeper, sim, 4, user_prefix="sighold")
    sim.inject_fault("token", "rate_limit", retry_after=20)  # the first request: every sender holds for 20 s
    cli = start_cli(
        "refresh",
        "refresh",
        "--all",
        REFRESH_CONCURRENCY="3",
        REFRESH_DELAY_MS="200",  # spaced: the 429 is back before the next slot, so every other send is held
        REFRESH_MAX_RETRY_AFTER_S="30",
        REFRESH_LEASE_S="60",
    )
    wait_for(lambda: sim.stats()["token_requests"] >= 1 or cli.process.poll() is not None, what="the 429")
    assert cli.process.poll() is None, cli.story()
    time.sleep(0.5)  # the other workers wait for the hold's end, the first for its retry
    stopping = time.monotonic()
    cli.process.send_signal(signal.SIGINT)
    assert cli.wait(timeout=10) == 0, cli.story()
    assert time.monotonic() - stopping < 5, "it waited for the hold instead of stopping"
    assert sim.stats()["token_requests"] == 1  # nothing sent after the 429
    no_run_left_running(keeper)
    assert statuses(keeper) == {"connected": 4}

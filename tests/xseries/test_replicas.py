"""The replica tests of ``tests/replicas/test_fencing_replicas.py`` for X-Series, whose strict rotation turns any
refresh token presented twice into a dead store:

* a ``lightkeeper worker`` whose clock runs 10 minutes ahead (libfaketime) shares a run of X-Series stores with an
  honest one: leases are timed by the database's clock, so it frees no live lease and presents no refresh token
  X-Series already exchanged (``x_reuse`` 0), nothing expires, each store is refreshed once;
* a seeded random schedule of workers, runs requested, ``refresh --all`` processes, forced on-demand refreshes
  from this process, SIGKILLs and SIGTERMs, on SQLite and PostgreSQL. R-Series' version accepts one grace-window
  replay per SIGKILL. X-Series has no grace window, so the test checks what lightkeeper promises instead: a
  SIGKILL loses at most the one store whose pair was on its way (one refresh in flight per process), that store
  alone goes ``expired`` with a ``last_error`` saying the rotation was lost, its dead token was presented exactly
  once (when it was found dead), and every other store keeps the pair X-Series honours and refreshes again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.errors import ConnectionExpired, ProviderUnavailable
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.helpers import make_settings
from tests.replicas.test_fencing_replicas import (
    SHORT_LEASES,
    SKEW_S,
    Chaos,
    held_by,
    log_stamps,
    pause_schedule,
    settled_runs,
    skewed_env,
)
from tests.replicas.test_replicas import (  # noqa: F401 (fixtures reused by name)
    HEARTBEAT_S,
    STOP_TIMEOUT_S,
    StartWorkers,
    leases,
    start_workers,
    wait_for_counts,
    wait_for_run,
    worker_env,
)
from tests.xseries.conftest import XKeeperFactory
from tests.xseries.support import (
    events_of,
    holds_the_live_pair,
    seed_x_connections,
    status_counts,
    statuses,
    versions,
    x_env,
    x_refreshes,
)

#: Seeded tokens expire before any next tick: every full run refreshes every X-Series store.
EXPIRING_TTL_S = 60
LOST = "rotation was lost"


def assert_no_token_spent_twice(sim: SimulatorControl) -> None:
    stats = sim.x_stats()
    assert (stats["x_reuse"], stats["x_invalid_grant"], stats["x_family_revocations"]) == (0, 0, 0), stats


# -- 1. a replica whose clock runs 10 minutes ahead ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_replica_whose_clock_runs_ten_minutes_ahead_spends_no_x_series_token_twice(
    make_x_keeper: XKeeperFactory,
    sim: SimulatorControl,
    simulator_server: SimulatorServer,
    start_workers: StartWorkers,  # noqa: F811 (the fixture imported above)
    worker_env: dict[str, str],  # noqa: F811
) -> None:
    keeper = make_x_keeper(both=True, RUN_HEARTBEAT_S=str(HEARTBEAT_S))
    skew, x_series = skewed_env(), x_env(simulator_server.url)
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time(), time.monotonic())"],
        env=worker_env | skew,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    their_wall, their_monotonic = map(float, probe.stdout.split())
    assert their_wall >= time.time() + SKEW_S - 100, f"libfaketime did not skew the clock: {probe.stdout}"
    assert abs(their_monotonic - time.monotonic()) < 30, "the monotonic clock must stay real"

    # Slow grants and two refreshes in flight per process: the honest replica holds live leases (30 s by the
    # database's clock, so long gone by the skewed one's) every time the skewed one looks for work.
    pause_schedule(keeper)
    count = 16
    sim.configure(x_access_token_ttl=EXPIRING_TTL_S)
    ids = seed_x_connections(keeper, sim, count, user_prefix="skew")
    before = versions(keeper)
    sim.configure(token_latency_ms=1500)
    settings = {"HTTP_TIMEOUT_S": "5", "REFRESH_MAX_RETRY_AFTER_S": "0", "REFRESH_LEASE_S": "30"} | x_series
    [honest] = start_workers(1, **settings)
    [skewed] = start_workers(1, **settings, **skew)
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=60, workers=[honest, skewed])
    run = wait_for_counts(keeper, requested.id, count)

    assert_no_token_spent_twice(sim)
    assert (run.total, run.refreshed, run.expired, run.errors, run.skipped) == (count, count, 0, 0, 0), run
    assert sorted(x_refreshes(sim).values()) == [1] * count
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert status_counts(keeper) == {"connected": count}
    assert all(holds_the_live_pair(keeper, simulator_server, cid) for cid in ids)
    assert leases(keeper) == {}
    done = honest.refreshed_ids() + skewed.refreshed_ids()
    assert sorted(done) == sorted(ids), "every store refreshed by exactly one replica"
    assert honest.refreshed_ids() and skewed.refreshed_ids(), (
        f"both replicas must work on the run: honest {honest.refreshed_ids()}, skewed {skewed.refreshed_ids()}"
    )
    ahead = (min(log_stamps(skewed)) - min(log_stamps(honest))).total_seconds()
    assert ahead >= SKEW_S - 60, f"the skewed worker's log is only {ahead:.0f} s ahead"


# -- 2. a random interleaving of everything, on both databases -----------------------------------------------

CHAOS_S = 20.0
CHAOS_STORES = 12
SETTLE_TIMEOUT_S = 60.0
FINAL_TIMEOUT_S = 40.0
CLI_TIMEOUT_S = 30.0
MAX_WORKERS = 3


@pytest.fixture
def x_chaos(
    tmp_path: Path,
    worker_env: dict[str, str],  # noqa: F811 (the fixture imported above)
    database_url: str,
    simulator_server: SimulatorServer,
) -> Iterator[Chaos]:
    env = worker_env | SHORT_LEASES | x_env(simulator_server.url)
    # One refresh in flight per process: a SIGKILL can lose at most one pair X-Series already issued.
    fleet = Chaos(tmp_path, env | {"DATABASE_URL": database_url, "REFRESH_CONCURRENCY": "1", "REFRESH_DELAY_MS": "0"})
    yield fleet
    fleet.stop_all()


@pytest.fixture
def x_chaos_keeper(database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[Keeper]:
    """This process's keeper on the chaos database: seeds, reads, and makes forced on-demand refreshes."""
    settings = make_settings(
        database_url,
        simulator_server.url,
        RUN_HEARTBEAT_S=str(HEARTBEAT_S),
        TOKEN_WAIT_S="15",  # longer than a lease a killed process left behind
        **SHORT_LEASES,
        **x_env(simulator_server.url),
    )
    with Keeper(settings) as opened:
        yield opened


def forced_refresh(keeper: Keeper, connection_id: int) -> tuple[int, str]:
    """A caller whose access token X-Series just refused: another one, refreshed once; or told to come back; or
    told the store is gone (only for a store whose rotation a SIGKILL lost: checked at the end)."""
    record = keeper.connection(connection_id)
    if record.status.value == "expired":
        return connection_id, "expired"
    current = keeper.vault.access_token(record)
    try:
        grant = keeper.tokens.fresh_token(connection_id, rejected=current)
    except ConnectionExpired:
        return connection_id, "expired"
    except ProviderUnavailable:
        return connection_id, "busy"  # another holder did not finish within TOKEN_WAIT_S: never a wrong token
    assert grant.access_token != current, f"connection {connection_id}: the refused token was handed out again"
    return connection_id, "fresh"


@pytest.mark.postgres
def test_a_random_schedule_of_replicas_runs_token_calls_and_kills_loses_only_killed_x_series_pairs(
    x_chaos: Chaos, x_chaos_keeper: Keeper, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    seed = int(os.environ.get("LIGHTKEEPER_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed {seed} (rerun with LIGHTKEEPER_CHAOS_SEED={seed})")
    try:
        _chaos(seed, x_chaos, x_chaos_keeper, sim, simulator_server)
    except BaseException as exc:
        exc.add_note(f"chaos seed {seed}: rerun with LIGHTKEEPER_CHAOS_SEED={seed}\nsteps: {x_chaos.steps}")
        raise


def _chaos(seed: int, chaos: Chaos, keeper: Keeper, sim: SimulatorControl, server: SimulatorServer) -> None:
    rng = random.Random(seed)
    pause_schedule(keeper)
    sim.configure(x_access_token_ttl=EXPIRING_TTL_S, token_latency_ms=rng.randint(200, 500))
    ids = seed_x_connections(keeper, sim, CHAOS_STORES, user_prefix="chaos")
    before = versions(keeper)
    requested, calls = _schedule(rng, chaos, keeper, sim, ids)
    outcomes = [call.result(timeout=SETTLE_TIMEOUT_S) for call in calls]
    _wait_for_the_stopped(chaos, keeper)

    history = settled_runs(keeper, chaos)
    assert set(requested) <= {run.id for run in history}, "a requested run is missing from the history"
    for run in history:
        assert run.status in (RunStatus.COMPLETED, RunStatus.INTERRUPTED, RunStatus.SKIPPED), run
        assert run.refreshed + run.expired + run.errors + run.skipped == run.total, run
        assert run.total <= CHAOS_STORES and run.errors == 0, run

    # Every store still refreshes, but those whose pair a SIGKILL lost: this run finds the last of them dead.
    final = chaos.start_cli_refresh(REFRESH_CONCURRENCY="4")
    try:
        final.process.wait(FINAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the final refresh --all did not end within {FINAL_TIMEOUT_S} s:\n{chaos.logs()}", pytrace=False)
    assert final.process.returncode == 0, final.log()
    result = json.loads(final.log_path.with_suffix(".out").read_text())
    assert (result["status"], result["errors"]) == ("completed", 0), result

    lost = [cid for cid, status in statuses(keeper).items() if status == "expired"]
    kills = len(chaos.killed)
    assert len(lost) <= kills, f"{len(lost)} stores lost with {kills} SIGKILLs: {lost}"
    assert result["refreshed"] == CHAOS_STORES - len(lost), result
    assert status_counts(keeper) == {"connected": CHAOS_STORES - len(lost)} | ({"expired": len(lost)} if lost else {})
    for cid in lost:
        dead = keeper.connection(cid)
        assert dead.last_error and LOST in dead.last_error, dead.last_error
        assert {event["type"] for event in events_of(keeper, cid)} == {"connection.expired"}
    stats = sim.x_stats()
    reuse = stats["x_reuse"]
    # Each lost store's live pair was revoked once, when its dead token was first presented (that is how it was
    # found dead). The dead token is presented again only when a SIGKILL took the process that presented it before
    # it wrote the verdict (a kill that did so lost no pair: one request in flight per process). An on-demand caller
    # that waited for its slot meanwhile looks at the row again once it holds the lease, and sends nothing.
    assert stats["x_family_revocations"] == len(lost) and stats["x_invalid_grant"] == reuse, stats
    assert len(lost) <= reuse <= kills, f"{reuse} dead tokens presented, {kills} SIGKILLs: {stats}"
    alive = [cid for cid in ids if cid not in lost]
    assert all(holds_the_live_pair(keeper, server, cid) for cid in alive)
    assert all(versions(keeper)[cid] > before[cid] for cid in alive)
    assert all(events_of(keeper, cid) == [] for cid in alive)
    assert {cid for cid, outcome in outcomes if outcome == "expired"} <= set(lost), outcomes
    assert leases(keeper) == {}
    for proc in chaos.workers + chaos.clis:
        assert "Traceback" not in proc.log(), f"{proc.log_path.stem}:\n{proc.log()[-4000:]}"
    print(
        f"seed {seed}: {len(chaos.steps)} steps, {len(chaos.workers)} workers, {len(chaos.clis)} refresh --all, "
        f"{kills} SIGKILLs, {len(chaos.terms)} SIGTERMs, on-demand {Counter(o for _, o in outcomes)}, "
        f"lost {len(lost)}, x_reuse {reuse}, runs {Counter(run.status.value for run in history)}\n"
        + "\n".join(chaos.steps)
    )


def _schedule(
    rng: random.Random, chaos: Chaos, keeper: Keeper, sim: SimulatorControl, ids: list[int]
) -> tuple[list[int], list[Future[tuple[int, str]]]]:
    """CHAOS_S seconds of random steps; the runs requested and the forced refreshes submitted."""
    requested: list[int] = []
    calls: list[Future[tuple[int, str]]] = []
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="on-demand")
    began = time.monotonic()

    def step(name: str) -> None:
        chaos.steps.append(f"{time.monotonic() - began:5.1f}s {name}")

    def request_run() -> None:
        requested.append(keeper.store.runs.request(trigger="api", now=keeper.clock()).id)

    chaos.start_worker()
    request_run()
    step("start worker, request run")
    try:
        while time.monotonic() - began < CHAOS_S:
            time.sleep(rng.uniform(0.3, 1.2))
            workers, clis = chaos.alive(chaos.workers), chaos.alive(chaos.clis)
            actions = {
                "start worker": 3.0 if len(workers) < MAX_WORKERS else 0.0,
                "request run": 2.0,
                "refresh --all": 1.0 if not clis else 0.0,
                "token calls": 3.0,
                "latency": 0.5,
                "sigkill": 1.5 if workers or clis else 0.0,
                "sigterm": 1.0 if chaos.stoppable() else 0.0,
            }
            action = rng.choices(list(actions), weights=list(actions.values()))[0]
            if action == "start worker":
                chaos.start_worker()
                step(action)
            elif action == "request run":
                request_run()
                step(f"{action} {requested[-1]}")
            elif action == "refresh --all":
                step(f"{action} (pid {chaos.start_cli_refresh().pid})")
            elif action == "token calls":
                chosen = rng.sample(ids, rng.randint(1, 3))
                calls.extend(pool.submit(forced_refresh, keeper, cid) for cid in chosen)
                step(f"forced refresh of {chosen}")
            elif action == "latency":
                sim.configure(token_latency_ms=rng.randint(200, 500))
                step("latency")
            elif action == "sigkill":
                candidates = workers + clis
                # Mostly a process in the middle of a refresh: the crash that loses an X-Series pair.
                busy = [p for p in candidates if held_by(keeper, p)]
                victim = rng.choice(busy if busy and rng.random() < 0.7 else candidates)
                chaos.kill(victim)
                step(f"sigkill {victim.log_path.stem}{' (holding a lease)' if victim in busy else ''}")
            else:
                victim = rng.choice(chaos.stoppable())
                chaos.term(victim)
                step(f"sigterm {victim.log_path.stem}")
        step("settle")
        if not chaos.alive(chaos.workers):
            chaos.start_worker()  # someone takes over what the dead left (their leases run out)
        for call in calls:
            call.result(timeout=SETTLE_TIMEOUT_S)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return requested, calls


def _wait_for_the_stopped(chaos: Chaos, keeper: Keeper) -> None:
    """Every SIGTERMed worker exits 0 (refreshes in flight saved); every ``refresh --all`` ends (or was killed)."""
    for stopped in (term for term in chaos.terms if term not in chaos.killed):
        try:
            code = stopped.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{stopped.log_path.stem} did not stop within {STOP_TIMEOUT_S} s of SIGTERM", pytrace=False)
        assert code == 0, f"{stopped.log_path.stem} exited {code} after SIGTERM:\n{stopped.log()[-3000:]}"
    for cli in chaos.clis:
        try:
            code = cli.process.wait(CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            runs = "\n".join(map(str, keeper.store.runs.list(limit=10)))
            pytest.fail(f"{cli.log_path.stem} did not end within {CLI_TIMEOUT_S} s:\n{runs}", pytrace=False)
        assert code in (0, -signal.SIGKILL), f"{cli.log_path.stem} exited {code}:\n{cli.log()[-3000:]}"

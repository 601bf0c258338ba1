"""Fenced leases, one clock and one spacing across real processes (issue 8; DESIGN invariants 1, 5 and 7).

Three situations a single process never meets:

* a replica whose clock runs 10 minutes ahead (libfaketime) works on the same run as an honest one: with
  leases timed by the database's clock it frees no live lease, so no refresh token is presented twice;
* two replicas with ``REFRESH_DELAY_MS=500`` share a run: the simulator receives no two refresh requests
  closer than 450 ms, because the spacing is one slot table for the whole deployment;
* a seeded random schedule of workers starting, runs requested, ``refresh --all`` processes, forced on-demand
  refreshes from this process, SIGKILLs and SIGTERMs, on SQLite and on PostgreSQL: afterwards the simulator
  saw at most one replayed refresh token per SIGKILL (the grace-window recovery of a pair lost in the crash),
  nothing expired, every run is recorded and closed, and every connection still refreshes.

Workers are the installed console script (``lightkeeper worker``), as in ``test_replicas.py``, whose fixtures
and helpers this module reuses.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from lightkeeper import Keeper, RunStatus
from lightkeeper.errors import ProviderUnavailable
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import JOB_NAME, RunRecord
from lightkeeper.views import ConnectionView
from tests.helpers import make_settings
from tests.replicas.test_replicas import (
    HEARTBEAT_S,
    STOP_TIMEOUT_S,
    StartWorkers,
    WorkerProcess,
    account_refreshes,
    leases,
    lightkeeper_executable,
    statuses,
    versions,
    wait_for_counts,
    wait_for_run,
)
from tests.seeding import seed_connections

pytestmark = pytest.mark.postgres

SKEW = "+10m"
SKEW_S = 600
FAKETIME_LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
MIN_GAP_S = 0.45  # REFRESH_DELAY_MS=500, less scheduling jitter between slot and send

# The shortest lease the settings accept for these timeouts: 2 x HTTP_TIMEOUT_S + REFRESH_MAX_RETRY_AFTER_S.
SHORT_LEASES = {"HTTP_TIMEOUT_S": "3", "REFRESH_MAX_RETRY_AFTER_S": "0", "REFRESH_LEASE_S": "10"}


def faketime_library() -> str:
    """libfaketime's preload library (``.ci/run`` installs it); never skipped: the test needs it."""
    if os.path.exists(FAKETIME_LIBRARY):
        return FAKETIME_LIBRARY
    listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        if line.endswith("/libfaketime.so.1") and os.path.exists(line):
            return line
    pytest.fail("libfaketime is not installed (apt-get install faketime libfaketime; .ci/run does)", pytrace=False)


def skewed_env() -> dict[str, str]:
    """A process clock 10 minutes ahead; its monotonic clock left alone (leases are tracked on it locally)."""
    return {"LD_PRELOAD": faketime_library(), "FAKETIME": SKEW, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def pause_schedule(keeper: Keeper) -> None:
    """No cron tick may start a run of its own during the test (a skewed replica would see one 10 min early)."""
    keeper.store.jobs.ensure(JOB_NAME, schedule="0 */6 * * *", now=keeper.clock())
    keeper.store.jobs.update(JOB_NAME, now=keeper.clock(), active=False)


def log_stamps(worker: WorkerProcess) -> list[datetime]:
    return [stamp for stamp, _ in worker.refreshes()]


# -- 1. a replica whose clock runs 10 minutes ahead ----------------------------------------------------------


def test_a_replica_whose_clock_runs_ten_minutes_ahead_frees_no_live_lease(
    keeper: Keeper,
    sim: SimulatorControl,
    start_workers: StartWorkers,
    worker_env: dict[str, str],
) -> None:
    skew = skewed_env()
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
    sim.configure(token_latency_ms=1500)
    pause_schedule(keeper)
    count = 16
    ids = seed_connections(keeper, sim, count, user_prefix="skew")
    before = versions(keeper)
    settings = {"HTTP_TIMEOUT_S": "5", "REFRESH_MAX_RETRY_AFTER_S": "0", "REFRESH_LEASE_S": "30"}
    [honest] = start_workers(1, **settings)
    [skewed] = start_workers(1, **settings, **skew)
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=60, workers=[honest, skewed])
    run = wait_for_counts(keeper, requested.id, count)

    stats = sim.stats()
    assert stats["reuse"] == 0, f"a refresh token was presented twice: {stats}"
    assert (stats["invalid_grant"], stats["refreshes_in_grace"]) == (0, 0), stats
    assert (run.total, run.refreshed, run.expired, run.errors, run.skipped) == (count, count, 0, 0, 0), run
    assert sorted(account_refreshes(sim).values()) == [1] * count
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert statuses(keeper) == {"connected": count}
    assert leases(keeper) == {}

    done = honest.refreshed_ids() + skewed.refreshed_ids()
    assert sorted(done) == sorted(ids), "every connection refreshed by exactly one replica"
    assert honest.refreshed_ids() and skewed.refreshed_ids(), (
        f"both replicas must work on the run: honest {honest.refreshed_ids()}, skewed {skewed.refreshed_ids()}"
    )
    # The worker itself ran on the skewed clock: its log lines are stamped 10 minutes after the honest one's.
    ahead = (min(log_stamps(skewed)) - min(log_stamps(honest))).total_seconds()
    assert ahead >= SKEW_S - 60, f"the skewed worker's log is only {ahead:.0f} s ahead"
    print(f"skewed replica: split honest {len(honest.refreshed_ids())} / skewed {len(skewed.refreshed_ids())}")


# -- 2. one spacing for every process ------------------------------------------------------------------------


def test_refresh_delay_spaces_the_requests_of_all_processes_together(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    sim.configure(token_latency_ms=100)
    pause_schedule(keeper)
    count = 8
    seed_connections(keeper, sim, count, user_prefix="spacing")
    workers = start_workers(2, REFRESH_DELAY_MS="500", REFRESH_CONCURRENCY="2")
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=40, workers=workers)
    run = wait_for_counts(keeper, requested.id, count)
    assert (run.refreshed, run.errors, run.expired) == (count, 0, 0), run

    times = sim.refresh_times()
    assert len(times) == count, f"{len(times)} refresh requests for {count} connections"
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= MIN_GAP_S, f"refresh requests {min(gaps) * 1000:.0f} ms apart at the simulator: {gaps}"
    split = [len(worker.refreshed_ids()) for worker in workers]
    assert all(split), f"both processes must send refreshes for the spacing to be shared: {split}"
    assert sim.reuse() == 0
    assert sorted(account_refreshes(sim).values()) == [1] * count
    print(f"global spacing: split {split}, gaps {gaps}")


# -- 3. a random interleaving of everything, on both databases -----------------------------------------------

CHAOS_S = 20.0
CHAOS_CONNECTIONS = 12
SETTLE_TIMEOUT_S = 60.0
FINAL_TIMEOUT_S = 40.0
CLI_TIMEOUT_S = 30.0
MAX_WORKERS = 3
_STARTED = re.compile(r"worker \S+ started")


@dataclass
class Chaos:
    """The processes of one random schedule and what was done to them."""

    tmp_path: Path
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    clis: list[WorkerProcess] = field(default_factory=list)
    killed: list[WorkerProcess] = field(default_factory=list)
    terms: list[WorkerProcess] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str], **env: str) -> WorkerProcess:
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log_file, (self.tmp_path / f"{name}.out").open("wb") as out_file:
            process = subprocess.Popen(
                [lightkeeper_executable(), *args],
                cwd=self.tmp_path,
                env=self.env | env,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=log_file,
            )
        return WorkerProcess(process, log_path)

    def start_worker(self, **env: str) -> WorkerProcess:
        worker = self._spawn(f"worker-{len(self.workers) + 1}", ["worker"], **env)
        self.workers.append(worker)
        return worker

    def start_cli_refresh(self, **env: str) -> WorkerProcess:
        cli = self._spawn(f"cli-{len(self.clis) + 1}", ["refresh", "--all", "--json"], **env)
        self.clis.append(cli)
        return cli

    def alive(self, group: list[WorkerProcess]) -> list[WorkerProcess]:
        return [p for p in group if p.process.poll() is None]

    def stoppable(self) -> list[WorkerProcess]:
        """Live workers that handle SIGTERM (started: the handler is in place) and were not asked yet."""
        return [w for w in self.alive(self.workers) if w not in self.terms and _STARTED.search(w.log())]

    def kill(self, victim: WorkerProcess) -> None:
        if victim.process.poll() is None:
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(STOP_TIMEOUT_S)
            self.killed.append(victim)

    def term(self, victim: WorkerProcess) -> None:
        if victim.process.poll() is None:
            victim.process.send_signal(signal.SIGTERM)
            self.terms.append(victim)

    def stop_all(self) -> None:
        for proc in self.workers + self.clis:
            proc.stop(signal.SIGTERM)
        for proc in self.workers + self.clis:
            try:
                proc.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} (pid {p.pid})\n{p.log()[-3000:]}" for p in self.workers + self.clis)


@pytest.fixture(params=["sqlite", "postgresql"])
def chaos_database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_database_url"))


@pytest.fixture
def chaos(
    tmp_path: Path,
    worker_env: dict[str, str],
    chaos_database_url: str,
) -> Iterator[Chaos]:
    env = (
        worker_env
        | SHORT_LEASES
        | {
            "DATABASE_URL": chaos_database_url,
            # One refresh in flight per process: a SIGKILL can lose at most one pair Lightspeed already rotated.
            "REFRESH_CONCURRENCY": "1",
            "REFRESH_DELAY_MS": "0",
        }
    )
    fleet = Chaos(tmp_path, env)
    yield fleet
    fleet.stop_all()


@pytest.fixture
def chaos_keeper(chaos_database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[Keeper]:
    """This process's Keeper on the chaos database: seeds, reads, and makes forced on-demand refreshes."""
    settings = make_settings(
        chaos_database_url,
        simulator_server.url,
        RUN_HEARTBEAT_S=str(HEARTBEAT_S),
        TOKEN_WAIT_S="15",  # longer than a lease a killed worker left behind
        **SHORT_LEASES,
    )
    with Keeper(settings) as opened:
        yield opened


def held_by(keeper: Keeper, proc: WorkerProcess) -> bool:
    return any(owner is not None and f":{proc.pid}:" in owner for owner in leases(keeper).values())


def forced_refresh(keeper: Keeper, connection_id: int) -> str:
    """A caller whose access token Lightspeed just refused: it must get another one, refreshed once."""
    record = keeper.store.connections.get(connection_id)
    assert record is not None
    current = keeper.vault.access_token(record)
    try:
        grant = keeper.tokens.fresh_token(connection_id, rejected=current)
    except ProviderUnavailable:
        return "busy"  # another holder did not finish within TOKEN_WAIT_S: allowed, never a wrong token
    assert grant.access_token != current, f"connection {connection_id}: the rejected token was handed out again"
    return "fresh"


def test_a_random_schedule_of_replicas_runs_token_calls_and_kills(
    chaos: Chaos,
    chaos_keeper: Keeper,
    sim: SimulatorControl,
    chaos_database_url: str,
) -> None:
    seed = int(os.environ.get("LIGHTKEEPER_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed {seed} (rerun with LIGHTKEEPER_CHAOS_SEED={seed})")
    try:
        _chaos(seed, chaos, chaos_keeper, sim)
    except BaseException as exc:
        exc.add_note(f"chaos seed {seed}: rerun with LIGHTKEEPER_CHAOS_SEED={seed}\nsteps: {chaos.steps}")
        raise


def _chaos(seed: int, chaos: Chaos, keeper: Keeper, sim: SimulatorControl) -> None:
    rng = random.Random(seed)
    sim.configure(token_latency_ms=rng.randint(200, 500))
    pause_schedule(keeper)
    ids = seed_connections(keeper, sim, CHAOS_CONNECTIONS, user_prefix="chaos")
    before = versions(keeper)
    requested: list[int] = []
    calls: list[Future[str]] = []
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="on-demand")

    def step(name: str) -> None:
        chaos.steps.append(f"{time.monotonic() - began:5.1f}s {name}")

    def request_run() -> None:
        requested.append(keeper.store.runs.request(trigger="api", now=keeper.clock()).id)

    began = time.monotonic()
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
                # Mostly a process in the middle of a refresh: the crash the grace window exists for.
                busy = [p for p in candidates if held_by(keeper, p)]
                victim = rng.choice(busy if busy and rng.random() < 0.7 else candidates)
                chaos.kill(victim)
                step(f"sigkill {victim.log_path.stem}{' (holding a lease)' if victim in busy else ''}")
            else:
                victim = rng.choice(chaos.stoppable())
                chaos.term(victim)
                step(f"sigterm {victim.log_path.stem}")

        # Let the survivors finish: at least one worker takes over what the dead left (their leases run out).
        step("settle")
        if not chaos.alive(chaos.workers):
            chaos.start_worker()
        outcomes = Counter(call.result(timeout=SETTLE_TIMEOUT_S) for call in calls)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

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
            stuck = f"{cli.log_path.stem} (refresh --all) did not end within {CLI_TIMEOUT_S} s"
            pytest.fail(f"{stuck}:\n{runs}", pytrace=False)
        assert code in (0, -signal.SIGKILL), f"{cli.log_path.stem} exited {code}:\n{cli.log()[-3000:]}"

    history = settled_runs(keeper, chaos)
    by_id = {run.id: run for run in history}
    assert set(requested) <= set(by_id), f"requested runs missing from the history: {set(requested) - set(by_id)}"
    for run in history:
        assert run.status in (RunStatus.COMPLETED, RunStatus.INTERRUPTED, RunStatus.SKIPPED), run
        assert run.refreshed + run.expired + run.errors + run.skipped == run.total, run
        assert run.total <= CHAOS_CONNECTIONS, f"a connection counted twice in one run: {run}"
        assert (run.expired, run.errors) == (0, 0), run
        if run.status is RunStatus.COMPLETED:
            # A completed run handled every connection, each counted once, whoever died on the way.
            assert run.total == CHAOS_CONNECTIONS, f"completed run counted {run.total} of {CHAOS_CONNECTIONS}: {run}"

    stats = sim.stats()
    assert stats["invalid_grant"] == 0, stats
    kills = len(chaos.killed)
    assert stats["reuse"] <= kills, f"{stats['reuse']} refresh tokens presented twice with {kills} SIGKILLs"
    assert statuses(keeper) == {"connected": CHAOS_CONNECTIONS}, [
        ConnectionView.model_validate(r).document() for r in keeper.connections()
    ]
    for proc in chaos.workers + chaos.clis:
        assert "Traceback" not in proc.log(), f"{proc.log_path.stem}:\n{proc.log()[-4000:]}"

    # Every connection still refreshes: the stored refresh token is the one Lightspeed will take.
    final = chaos.start_cli_refresh(REFRESH_CONCURRENCY="4", LOG_LEVEL="DEBUG")
    try:
        final.process.wait(FINAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        state = f"runs {keeper.store.runs.list(limit=5)}\nleases {leases(keeper)}\n{chaos.logs()}"
        pytest.fail(f"the final refresh --all did not end within {FINAL_TIMEOUT_S} s:\n{state}", pytrace=False)
    assert final.process.returncode == 0, final.log()
    result = json.loads(final.log_path.with_suffix(".out").read_text())
    assert (result["status"], result["refreshed"], result["expired"], result["errors"]) == (
        "completed",
        CHAOS_CONNECTIONS,
        0,
        0,
    ), result
    assert all(version > before[cid] for cid, version in versions(keeper).items())
    assert statuses(keeper) == {"connected": CHAOS_CONNECTIONS}
    assert leases(keeper) == {}
    end = sim.stats()
    assert end["invalid_grant"] == 0 and end["reuse"] == stats["reuse"], end
    print(
        f"seed {seed}: {len(chaos.steps)} steps, {len(chaos.workers)} workers, {len(chaos.clis)} refresh --all, "
        f"{kills} SIGKILLs, {len(chaos.terms)} SIGTERMs, on-demand {dict(outcomes)}, reuse {stats['reuse']}, "
        f"runs {Counter(run.status.value for run in history)}\n" + "\n".join(chaos.steps)
    )


def settled_runs(keeper: Keeper, chaos: Chaos) -> list[RunRecord]:
    """The history once no run is queued or running (stale ones are marked ``interrupted`` as it is read)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        history = keeper.run_history(limit=500)
        open_runs = [run for run in history if run.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
        if not open_runs:
            return history
        if time.monotonic() > deadline:
            pytest.fail(f"runs still open after {SETTLE_TIMEOUT_S} s: {open_runs}\n{chaos.logs()}", pytrace=False)
        if not chaos.alive(chaos.workers):
            chaos.start_worker()  # a survivor was SIGTERMed meanwhile: someone must pick the work up
        time.sleep(0.2)

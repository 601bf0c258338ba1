"""Several real ``lightkeeper worker`` processes on one PostgreSQL: shared runs, one run per tick, crashes.

Each test starts its workers as subprocesses (the installed console script) against a PostgreSQL database of
its own and the session's simulator, and reads what happened from three sides: the run record, the
connection rows, and the simulator's counters (how often each account was really refreshed). Every worker is
stopped at teardown, SIGKILL as the last resort.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import JOB_NAME, RunRecord
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.store.schema import runs as runs_table
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.helpers import TEST_KEY, make_settings
from tests.integration.conftest import pg_clones, pg_database_url, pg_template  # noqa: F401 (fixtures)
from tests.seeding import seed_connections

pytestmark = pytest.mark.postgres

HEARTBEAT_S = 0.5
STALE_S = 3 * HEARTBEAT_S + 5  # lightkeeper.refresh.stale_after_s(HEARTBEAT_S)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

_STARTED = re.compile(r"worker (\S+) started")
_REFRESHED = re.compile(r"^(\S+ \S+) INFO \S+: connection (\d+) refreshed", re.MULTILINE)


@dataclass
class WorkerProcess:
    """One ``lightkeeper worker`` subprocess; its stderr (the log) goes to a file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    owner: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def refreshes(self) -> list[tuple[datetime, int]]:
        """(log time, connection id) of every ``connection N refreshed`` line, in order."""
        return [
            (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"), int(cid))
            for stamp, cid in _REFRESHED.findall(self.log())
        ]

    def refreshed_ids(self) -> list[int]:
        return [cid for _, cid in self.refreshes()]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)


StartWorkers = Callable[..., list[WorkerProcess]]


def lightkeeper_executable() -> str:
    found = shutil.which("lightkeeper", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail(f"no `lightkeeper` console script next to {sys.executable}: `pip install -e .`", pytrace=False)
    return found


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


@pytest.fixture
def worker_env(tmp_path: Path, pg_database_url: str, simulator_server: SimulatorServer) -> dict[str, str]:  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DATABASE_URL": pg_database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_server.url,
        "LIGHTSPEED_API_URL": simulator_server.url,
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:1/oauth/callback",
        "TOKEN_ENCRYPTION_KEY": TEST_KEY,
        "REFRESH_DELAY_MS": "0",
        "WORKER_POLL_S": "0.2",
        "RUN_HEARTBEAT_S": str(HEARTBEAT_S),
        "REFRESH_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def start_workers(tmp_path: Path, worker_env: dict[str, str]) -> Iterator[StartWorkers]:
    """``start_workers(n, **env)``: n workers started side by side, returned once each has logged its start."""
    executable = lightkeeper_executable()
    started: list[WorkerProcess] = []

    def start(count: int, **env: str) -> list[WorkerProcess]:
        batch: list[WorkerProcess] = []
        for _ in range(count):
            log_path = tmp_path / f"worker-{len(started) + 1}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    [executable, "worker"],
                    cwd=tmp_path,
                    env=worker_env | env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
            worker = WorkerProcess(process, log_path)
            started.append(worker)
            batch.append(worker)
        for worker in batch:
            wait_for(partial(_ready, worker), timeout=START_TIMEOUT_S, what=f"worker {worker.pid} to start")
        return batch

    yield start
    for worker in started:
        worker.stop(signal.SIGTERM)
    for worker in started:
        try:
            worker.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _ready(worker: WorkerProcess) -> bool:
    if worker.process.poll() is not None:
        pytest.fail(f"worker {worker.pid} exited {worker.process.returncode}:\n{worker.log()}", pytrace=False)
    if found := _STARTED.search(worker.log()):
        worker.owner = found.group(1)
        return True
    return False


@pytest.fixture
def keeper(
    pg_database_url: str,  # noqa: F811
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
) -> Iterator[Keeper]:
    """The library in this process, on the workers' database: for seeding and reading, never for refreshing."""
    with Keeper(make_settings(pg_database_url, simulator_server.url, RUN_HEARTBEAT_S=str(HEARTBEAT_S))) as opened:
        yield opened


# -- helpers ------------------------------------------------------------------------------------------------


def wait_for_run(
    keeper: Keeper, run_id: int, status: RunStatus, *, timeout: float, workers: list[WorkerProcess]
) -> RunRecord:
    """Poll the run until it has ``status``; on timeout, fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    while True:
        run = keeper.store.runs.get(run_id)
        assert run is not None
        if run.status is status:
            return run
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING) or time.monotonic() > deadline:
            logs = "\n".join(f"--- worker {w.pid} ({w.owner})\n{w.log()[-4000:]}" for w in workers)
            pytest.fail(f"run {run_id} is {run.status.value}, expected {status.value}: {run}\n{logs}", pytrace=False)
        time.sleep(0.05)


def wait_for_counts(keeper: Keeper, run_id: int, total: int, *, timeout: float = 2.0) -> RunRecord:
    """The run once its counts add up to ``total`` (or as it is after ``timeout``).

    The participant that closes a shared run may do so a moment before another participant's last count
    lands (counts are added after a connection's lease is released): see the report on this suite.
    """
    deadline = time.monotonic() + timeout
    while True:
        run = keeper.store.runs.get(run_id)
        assert run is not None
        if run.total >= total or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def versions(keeper: Keeper) -> dict[int, int]:
    """token_version of every connection."""
    c = connections_table.c
    with keeper.store.engine.connect() as conn:
        return {row.id: row.token_version for row in conn.execute(select(c.id, c.token_version))}


def leases(keeper: Keeper) -> dict[int, str]:
    """Connections whose lease is set, and by whom."""
    c = connections_table.c
    query = select(c.id, c.acquired_by).where(c.acquired_by.is_not(None) | c.acquired_until.is_not(None))
    with keeper.store.engine.connect() as conn:
        return {row.id: row.acquired_by for row in conn.execute(query)}


def account_refreshes(sim: SimulatorControl) -> dict[str, int]:
    return {account: counters["refreshes"] for account, counters in sim.stats()["per_account"].items()}


def connection_accounts(keeper: Keeper) -> dict[int, str]:
    return {record.id: record.account_id for record in keeper.connections()}


def statuses(keeper: Keeper) -> Counter[str]:
    return Counter(record.status.value for record in keeper.connections())


# -- tests --------------------------------------------------------------------------------------------------


def test_three_workers_share_a_run_and_refresh_each_connection_once(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    sim.configure(token_latency_ms=100)
    ids = seed_connections(keeper, sim, 60, user_prefix="share")
    before = versions(keeper)
    workers = start_workers(3)

    began = time.monotonic()
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=60, workers=workers)
    elapsed = time.monotonic() - began
    run = wait_for_counts(keeper, requested.id, 60)

    assert (run.total, run.refreshed, run.expired, run.errors, run.skipped) == (60, 60, 0, 0, 0)
    stats = sim.stats()
    assert stats["invalid_grant"] == 0
    assert stats["refreshes_in_grace"] == 0
    assert sorted(account_refreshes(sim).values()) == [1] * 60  # every account exactly once
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert statuses(keeper) == {"connected": 60}
    assert leases(keeper) == {}

    per_worker = [w.refreshed_ids() for w in workers]
    done = [cid for refreshed in per_worker for cid in refreshed]
    assert sorted(done) == sorted(ids), "every connection refreshed by exactly one worker"
    sharing = [len(refreshed) for refreshed in per_worker]
    assert sum(1 for n in sharing if n > 0) >= 2, f"the work was not shared: {sharing}"
    # One worker needs >= 60 x 0.1 s / 2 = 3 s; shared by three, about 1 s (not asserted: timing on CI).
    print(f"3 workers, 60 connections at 100 ms: {elapsed:.2f} s, split {sharing}")


def test_a_tick_starts_exactly_one_run_across_replicas(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    sim.configure(token_latency_ms=20)
    seed_connections(keeper, sim, 20, user_prefix="tick")
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    # A yearly cron whose latest fire time is exactly ``tick``: no other tick can fall due during the test.
    cron = f"{tick.minute} {tick.hour} {tick.day} {tick.month} *"
    keeper.store.jobs.ensure(JOB_NAME, schedule=cron, now=now)
    keeper.store.jobs.update(JOB_NAME, now=tick - timedelta(minutes=1), schedule=cron)

    workers = start_workers(3)  # all three see the due tick on their first pass
    r = runs_table.c

    def tick_runs() -> list[RunRecord]:
        with keeper.store.engine.connect() as conn:
            rows = conn.execute(select(runs_table).where(r.job_name == JOB_NAME, r.scheduled_for == tick)).all()
        return [RunRecord.from_row(row) for row in rows]

    wait_for(lambda: bool(tick_runs()), timeout=10, what="the tick's run")
    [run] = tick_runs()
    assert run.trigger == "schedule"
    wait_for_run(keeper, run.id, RunStatus.COMPLETED, timeout=30, workers=workers)
    time.sleep(4 * 0.2)  # a few more polls of every worker: still one run for the tick, and no other run
    with keeper.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs_table)).scalar_one() == 1
    [run] = tick_runs()
    assert (run.status, run.refreshed) == (RunStatus.COMPLETED, 20)
    assert sorted(account_refreshes(sim).values()) == [1] * 20
    assert sim.stats()["invalid_grant"] == 0


def test_a_killed_replica_loses_nothing_the_survivor_takes_over(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    sim.configure(token_latency_ms=500)
    seed_connections(keeper, sim, 40, user_prefix="kill")
    before = versions(keeper)
    victim, survivor = workers = start_workers(
        2, REFRESH_LEASE_S="10", HTTP_TIMEOUT_S="4", REFRESH_MAX_RETRY_AFTER_S="2"
    )
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())

    def victim_mid_batch() -> bool:
        return bool(victim.refreshed_ids()) and victim.owner in leases(keeper).values()

    wait_for(victim_mid_batch, timeout=20, what="the victim to have refreshed some and to hold leases")
    # Kill it in the middle of its next Lightspeed calls, not right after a save: a kill in the few ms between
    # a save and its count still loses that count (reported; the fix belongs in the store).
    time.sleep(0.25)
    victim.stop(signal.SIGKILL)
    killed = time.monotonic()
    victim.process.wait(5)
    held = {cid for cid, owner in leases(keeper).items() if owner == victim.owner}
    assert held, "the victim held leases when it died"

    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=45, workers=workers)
    took = time.monotonic() - killed
    run = wait_for_counts(keeper, requested.id, 40)

    assert statuses(keeper) == {"connected": 40}
    assert leases(keeper) == {}
    assert all(version > before[cid] for cid, version in versions(keeper).items()), "every connection refreshed"
    assert run.errors == 0
    assert run.refreshed + run.errors == 40, f"counts lost with the killed worker: {run}"
    stats = sim.stats()
    assert stats["invalid_grant"] == 0
    # A refresh the victim had in flight may be repeated by the survivor (its answer died with the victim):
    # the simulator's grace window keeps that safe; nothing else is refreshed twice.
    refreshes = account_refreshes(sim)
    assert min(refreshes.values()) >= 1
    accounts = connection_accounts(keeper)
    assert {accounts[cid] for cid in held} >= {a for a, n in refreshes.items() if n > 1}
    assert held <= set(survivor.refreshed_ids()) | set(victim.refreshed_ids())
    print(f"takeover: completed {took:.1f} s after the kill; victim held {sorted(held)}; {stats}")


def test_a_run_whose_only_replica_died_is_shown_interrupted(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers, worker_env: dict[str, str], tmp_path: Path
) -> None:
    sim.configure(token_latency_ms=500)
    seed_connections(keeper, sim, 20, user_prefix="alone")
    [worker] = start_workers(1)
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for(lambda: bool(worker.refreshed_ids()), timeout=20, what="the worker to refresh something")
    worker.stop(signal.SIGKILL)
    killed = time.monotonic()
    worker.process.wait(5)

    def shown() -> dict[str, object]:
        result = subprocess.run(
            [lightkeeper_executable(), "runs", "--json"],
            cwd=tmp_path,
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        [entry] = [run for run in json.loads(result.stdout) if run["run_id"] == requested.id]
        return dict(entry)

    assert shown()["status"] == "running"  # its heartbeat is still fresh: not written off too early
    time.sleep(max(0.0, killed + STALE_S + 0.5 - time.monotonic()))
    deadline = time.monotonic() + 10
    while (entry := shown())["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert entry["status"] == "interrupted", entry
    assert entry["finished_at"] is not None
    stored = keeper.store.runs.get(requested.id)
    assert stored is not None and stored.status is RunStatus.INTERRUPTED


def test_sigterm_finishes_in_flight_refreshes_and_hands_back_the_rest(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    sim.configure(token_latency_ms=500)
    count = 12
    seed_connections(keeper, sim, count, user_prefix="term")
    before = versions(keeper)
    accounts = connection_accounts(keeper)
    [worker] = start_workers(1)
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())

    def mid_batch() -> bool:
        return len(worker.refreshed_ids()) >= 2 and worker.owner in leases(keeper).values()

    wait_for(mid_batch, timeout=20, what="the worker to be in the middle of a batch")
    worker.stop(signal.SIGTERM)
    stopping = time.monotonic()
    try:
        code = worker.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within {STOP_TIMEOUT_S} s of SIGTERM:\n{worker.log()}", pytrace=False)
    stopped_in = time.monotonic() - stopping
    assert code == 0, worker.log()

    assert leases(keeper) == {}, "leases released or handed back"
    after = versions(keeper)
    refreshes = account_refreshes(sim)
    for cid, version in after.items():
        # In-flight refreshes finished and were saved; unstarted ones were left alone: what Lightspeed did
        # and what the database holds agree for every connection.
        assert version - before[cid] == refreshes[accounts[cid]], f"connection {cid}"
        assert version - before[cid] in (0, 1)
    untouched = [cid for cid in after if after[cid] == before[cid]]
    assert untouched, "the worker stopped before the end of the run"
    assert statuses(keeper) == {"connected": count}
    run = keeper.store.runs.get(requested.id)
    assert run is not None and run.status is RunStatus.RUNNING  # left open for the other replicas
    assert run.refreshed == count - len(untouched)

    [successor] = start_workers(1)
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=30, workers=[worker, successor])
    run = wait_for_counts(keeper, requested.id, count)
    assert (run.refreshed, run.errors, run.expired) == (count, 0, 0)
    assert sorted(successor.refreshed_ids()) == sorted(untouched)
    assert sorted(account_refreshes(sim).values()) == [1] * count
    assert versions(keeper) == {cid: version + 1 for cid, version in before.items()}
    assert statuses(keeper) == {"connected": count}
    stats = sim.stats()
    assert (stats["invalid_grant"], stats["refreshes_in_grace"]) == (0, 0)
    print(f"SIGTERM: exited in {stopped_in:.2f} s; {len(untouched)} handed back")


def test_refresh_delay_spaces_each_replicas_requests(
    keeper: Keeper, sim: SimulatorControl, start_workers: StartWorkers
) -> None:
    delay_s = 0.1
    seed_connections(keeper, sim, 20, user_prefix="pace")
    workers = start_workers(2, REFRESH_DELAY_MS=str(int(delay_s * 1000)))
    requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
    wait_for_run(keeper, requested.id, RunStatus.COMPLETED, timeout=30, workers=workers)
    run = wait_for_counts(keeper, requested.id, 20)
    assert run.refreshed == 20
    assert run.started_at is not None and run.finished_at is not None
    took = (run.finished_at - run.started_at).total_seconds()
    most = max(len(w.refreshes()) for w in workers)
    # Whatever the split, the busier replica sent >= 10 requests, each >= delay_s after the one before.
    assert took >= (most - 1) * delay_s * 0.9, f"{took:.2f} s for {most} refreshes on one replica"
    window, allowed = 0.5, int(0.5 / delay_s) + 2  # saves are logged a few ms after their paced sends: jitter
    for worker in workers:
        stamps = [stamp for stamp, _ in worker.refreshes()]
        busiest = max((sum(1 for t in stamps if s <= t < s + timedelta(seconds=window)) for s in stamps), default=0)
        assert busiest <= allowed, f"worker {worker.pid}: {busiest} refreshes within {window} s: {stamps}"
    print(f"pacing: {took:.2f} s, split {[len(w.refreshes()) for w in workers]}")

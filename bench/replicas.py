"""How a refresh run scales with replicas: 1, 2, 4 ``lightkeeper worker`` processes on one PostgreSQL.

For each replica count: a fresh database, N seeded connections, the in-process simulator answering every
refresh after ``--latency-ms``, R workers started and listening, then one run requested; timed from the
request to ``completed``. The simulator says how often each account was really refreshed (a double refresh
would show as more than N) and whether any refresh was refused (``invalid_grant``). CPU seconds of the
workers and of this process (the simulator) and how busy the host was tell whether the machine, not the
design, set the pace.

    python -m bench replicas [--connections 2000] [--latency-ms 150] [--replicas 1,2,4] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from lightkeeper import Keeper, RunStatus, load_settings
from lightkeeper.config import REQUIRE_ALL
from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer
from lightkeeper.store import RunRecord, make_engine, upgrade

from .seeding import seed_connections

ADMIN_URL = os.environ.get("LIGHTKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CLIENT_ID = "lightkeeper-bench"
CLIENT_SECRET = secrets.token_hex(16)
TARGET_SPEEDUP = 3.0  # the target: 4 replicas at least 3x faster than 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_REFRESHED = re.compile(r"connection \d+ refreshed")
_TICKS = os.sysconf("SC_CLK_TCK")

console = Console(stderr=True)


@dataclass
class Options:
    connections: int = 2000
    latency_ms: int = 150
    replicas: list[int] = field(default_factory=lambda: [1, 2, 4])
    concurrency: int = 4
    poll_s: float = 0.2


@dataclass
class Measurement:
    replicas: int
    connections: int
    status: str
    run_s: float  # finished_at - created_at, as recorded
    wall_s: float  # request to "completed" seen by this process
    counted: int  # the run's total
    refreshed: int
    errors: int
    refreshes: int  # what the simulator saw
    invalid_grant: int
    in_grace: int
    reuse: int  # refresh tokens the simulator saw presented twice (must be 0)
    split: list[int]  # refreshes per worker, from their logs
    late_counts: int  # counts that landed after the run was already closed (a replica closed it too early)
    worker_cpu_s: float
    bench_cpu_s: float  # this process: mostly the simulator
    pg_cpu_s: float  # the database's server processes for this database
    host_busy: float  # share of all CPUs busy during the run
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def rate(self) -> float:
        return self.connections / self.run_s if self.run_s > 0 else 0.0

    @property
    def correct(self) -> bool:
        return (
            self.status == RunStatus.COMPLETED.value
            and self.refreshes == self.connections
            and self.refreshed == self.connections
            and self.invalid_grant == 0
            and self.reuse == 0
        )


# -- PostgreSQL -----------------------------------------------------------------------------------------------


def _url(database: str) -> str:
    return make_url(ADMIN_URL).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database migrated to head, dropped afterwards; yields its URL."""
    name = f"lk_bench_{secrets.token_hex(5)}"
    admin = _url(make_url(ADMIN_URL).database or "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        engine = make_engine(_url(name))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield _url(name)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def backend_pids(database_url: str) -> list[int]:
    """PostgreSQL server processes serving the database (the workers' pooled connections, ours, the LISTENs)."""
    query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [int(row[0]) for row in conn.execute(query).fetchall()]


def listening_workers(database_url: str) -> int:
    """Workers whose LISTEN connection is up: each worker opens one before it starts looking for work."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


# -- CPU accounting -------------------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return (0, 0)
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle, sum(values))


# -- workers --------------------------------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def refreshed(self) -> int:
        return len(_REFRESHED.findall(self.log_path.read_text(errors="replace")))


def start_workers(count: int, env: dict[str, str], workdir: Path) -> list[Worker]:
    executable = shutil.which("lightkeeper", path=os.path.dirname(sys.executable)) or "lightkeeper"
    workers = []
    for number in range(count):
        log_path = workdir / f"worker-{number + 1}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [executable, "worker"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        workers.append(Worker(process, log_path))
    return workers


def stop_workers(workers: Sequence[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def wait_ready(workers: Sequence[Worker], database_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while listening_workers(database_url) < len(workers):
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"a worker exited {worker.process.returncode}:\n{worker.log_path.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers were not listening after {READY_TIMEOUT_S} s")
        time.sleep(0.05)
    time.sleep(0.5)  # each has finished its first pass over the (empty) work list


def worker_env(options: Options, database_url: str, simulator_url: str, key: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_url,
        "LIGHTSPEED_API_URL": simulator_url,
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:1/oauth/callback",
        "TOKEN_ENCRYPTION_KEY": key,
        "REFRESH_DELAY_MS": "0",
        "WORKER_POLL_S": str(options.poll_s),
        "REFRESH_CONCURRENCY": str(options.concurrency),
        "LOG_LEVEL": "INFO",
    } | ({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})  # to bench a variant tree


# -- one measurement ------------------------------------------------------------------------------------------


def wait_for_end(keeper: Keeper, run_id: int, timeout: float) -> RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        run = keeper.store.runs.get(run_id)
        if run is None:
            raise RuntimeError(f"run {run_id} vanished")
        if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING) or time.monotonic() > deadline:
            return run
        time.sleep(0.1)  # run_s comes from the record; polling faster only costs the simulator's CPU


def settle_counts(keeper: Keeper, run: RunRecord, expected: int, timeout: float = 3.0) -> RunRecord:
    """The closing replica can close the run a moment before another one's last counts land."""
    deadline = time.monotonic() + timeout
    while run.total < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        run = keeper.store.runs.get(run.id) or run
    return run


def measure(options: Options, replicas: int, server: SimulatorServer, control: SimulatorControl) -> Measurement:
    n = options.connections
    control.reset()
    control.configure(token_latency_ms=options.latency_ms, api_latency_ms=0)
    key = base64.b64encode(os.urandom(32)).decode()
    with fresh_database() as database_url, tempfile.TemporaryDirectory(prefix="lk-bench-") as tmp:
        env = worker_env(options, database_url, server.url, key)
        with Keeper(load_settings(env=env, require=REQUIRE_ALL)) as keeper:
            console.print(f"[dim]{replicas} replica(s): seeding {n} connections…[/]")
            seed_connections(keeper, control, n)
            workers = start_workers(replicas, env, Path(tmp))
            try:
                wait_ready(workers, database_url)
                console.print(f"[dim]{replicas} replica(s): listening; requesting the run…[/]")
                cpu_before = sum(process_cpu_s(w.process.pid) for w in workers)
                pg_before = {pid: process_cpu_s(pid) for pid in backend_pids(database_url)}
                bench_before, host_before = time.process_time(), host_cpu()
                started = time.monotonic()
                requested = keeper.store.runs.request(trigger="api", now=keeper.clock())
                ideal = n * options.latency_ms / 1000 / (options.concurrency * replicas)
                run = wait_for_end(keeper, requested.id, timeout=max(120.0, 5 * ideal))
                wall = time.monotonic() - started
                cpu_after = sum(process_cpu_s(w.process.pid) for w in workers)
                pg_cpu = sum(process_cpu_s(pid) - pg_before.get(pid, 0.0) for pid in backend_pids(database_url))
                bench_after, host_after = time.process_time(), host_cpu()
                closed_with = run.total
                run = settle_counts(keeper, run, n)
                split = [w.refreshed() for w in workers]
            finally:
                stop_workers(workers)
        stats = control.stats()
    busy, total = host_after[0] - host_before[0], host_after[1] - host_before[1]
    run_s = (run.finished_at - run.created_at).total_seconds() if run.finished_at else wall
    return Measurement(
        replicas=replicas,
        connections=n,
        status=run.status.value,
        run_s=run_s,
        wall_s=wall,
        counted=run.total,
        refreshed=run.refreshed,
        errors=run.errors,
        refreshes=int(stats["refreshes"]),
        invalid_grant=int(stats["invalid_grant"]),
        in_grace=int(stats["refreshes_in_grace"]),
        reuse=int(stats["reuse"]),
        split=split,
        late_counts=run.total - closed_with,
        worker_cpu_s=cpu_after - cpu_before,
        bench_cpu_s=bench_after - bench_before,
        pg_cpu_s=pg_cpu,
        host_busy=busy / total if total else 0.0,
    )


# -- report ---------------------------------------------------------------------------------------------------


def report(options: Options, results: list[Measurement]) -> Table:
    base = next((m for m in results if m.replicas == 1), results[0] if results else None)
    title = (
        f"Refresh run over {options.connections} connections, Lightspeed latency {options.latency_ms} ms, "
        f"REFRESH_CONCURRENCY={options.concurrency}, "
        f"REFRESH_DELAY_MS=0, PostgreSQL, {os.cpu_count()} CPU cores"
    )
    table = Table(title=title, title_justify="left")
    for name in ("replicas", "status", "run s", "wall s", "conn/s", "speed-up", "ideal s"):
        table.add_column(name, justify="right")
    for name in ("sim refreshes", "reuse", "invalid_grant", "in grace", "split"):
        table.add_column(name, justify="right")
    for name in ("worker CPU s", "sim CPU s", "pg CPU s", "host busy"):
        table.add_column(name, justify="right")
    for m in results:
        speedup = base.run_s / m.run_s if base and m.run_s else 0.0
        ideal = m.connections * options.latency_ms / 1000 / (options.concurrency * m.replicas)
        style = "" if m.correct else "red"
        table.add_row(
            str(m.replicas),
            m.status,
            f"{m.run_s:.2f}",
            f"{m.wall_s:.2f}",
            f"{m.rate:.0f}",
            f"{speedup:.2f}x",
            f"{ideal:.1f}",
            str(m.refreshes),
            str(m.reuse),
            str(m.invalid_grant),
            str(m.in_grace),
            "/".join(map(str, m.split)),
            f"{m.worker_cpu_s:.1f}",
            f"{m.bench_cpu_s:.1f}",
            f"{m.pg_cpu_s:.1f}",
            f"{m.host_busy:.0%}",
            style=style,
        )
    return table


def verdict(results: list[Measurement]) -> list[str]:
    lines = []
    for m in results:
        if not m.correct:
            lines.append(
                f"FAIL {m.replicas} replica(s): status {m.status}, {m.refreshed} refreshed, simulator saw "
                f"{m.refreshes} refreshes for {m.connections} connections, {m.invalid_grant} invalid_grant, "
                f"{m.reuse} reuse"
            )
        if m.late_counts:
            lines.append(
                f"note {m.replicas} replica(s): the run was closed with {m.late_counts} outcome(s) not yet counted "
                "(another replica's last counts landed just after)"
            )
    by_count = {m.replicas: m for m in results}
    if 1 in by_count and 4 in by_count:
        speedup = by_count[1].run_s / by_count[4].run_s
        met = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
        lines.append(f"target {met}: 4 replicas are {speedup:.2f}x faster than 1 (target >= {TARGET_SPEEDUP:.0f}x)")
    return lines


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="connections in the run (default 2000)")
    parser.add_argument("--latency-ms", type=int, default=150, help="simulator token latency (default 150)")
    parser.add_argument("--replicas", default="1,2,4", help="replica counts to measure (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=4, help="REFRESH_CONCURRENCY per replica (default 4)")
    parser.add_argument("--poll-s", type=float, default=0.2, help="WORKER_POLL_S (default 0.2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 connections")
    args = parser.parse_args(argv)
    try:
        replicas = [int(part) for part in args.replicas.split(",") if part.strip()]
    except ValueError:
        parser.error("--replicas takes a comma-separated list of numbers, e.g. 1,2,4")
    if not replicas or min(replicas) < 1:
        parser.error("--replicas needs numbers >= 1")
    if args.connections < 1 or args.latency_ms < 0 or args.concurrency < 1:
        parser.error("--connections and --concurrency must be >= 1, --latency-ms >= 0")
    return Options(
        connections=200 if args.quick else args.connections,
        latency_ms=args.latency_ms,
        replicas=replicas,
        concurrency=args.concurrency,
        poll_s=args.poll_s,
    )


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    results: list[Measurement] = []
    config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with SimulatorServer(config) as server, SimulatorControl(server.url, timeout=60) as control:
        for replicas in options.replicas:
            results.append(measure(options, replicas, server, control))
            m = results[-1]
            console.print(f"[dim]{replicas} replica(s): {m.status} in {m.run_s:.2f} s[/]")
    out = Console() if sys.stdout.isatty() else Console(width=220)  # a table piped to a file keeps one line a row
    out.print(report(options, results))
    lines = verdict(results)
    for line in lines:
        out.print(line, markup=False)
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


__all__ = ["Measurement", "Options", "main", "measure"]

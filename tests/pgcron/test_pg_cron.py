"""pg_cron, the guide's way: ``refresh_lightspeed_tokens()``, the ``cron.job`` hand-over and the guide's SQL.

Runs against a real PostgreSQL that preloads pg_cron (see conftest). User-facing commands run as the installed
``lightkeeper`` command in subprocesses; the guide's SQL runs through psycopg exactly as a user would paste it.
Time-dependent scheduling is driven with an injected clock; only ``test_pg_cron_fires_the_job_for_real`` waits
for a real pg_cron tick.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from psycopg.rows import dict_row

from lightkeeper import Keeper
from lightkeeper.scheduler import Worker
from lightkeeper.scheduler.trigger import next_tick
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import JOB_NAME, NOTIFY_CHANNEL, RunRecord, RunStatus, pgcron
from tests.acceptance.conftest import (
    Lightkeeper,
    describe,
    wait_for,
)
from tests.conftest import FakeClock
from tests.helpers import connect, make_settings

NOTICE = re.compile(r"Token refresh triggered with request ID: (\d+)")
DEFAULT_SCHEDULE = "0 */6 * * *"

# -- the SQL of the guide (seed/SETUP_GUIDE.md), copied verbatim (only trailing blanks at line ends dropped) --

# Monitoring
VIEW_SCHEDULED_JOBS = """SELECT jobid, jobname, schedule, active
FROM cron.job
WHERE jobname = 'refresh-lightspeed-tokens-every-6h';"""

VIEW_JOB_HISTORY = """SELECT * FROM cron.job_run_details
WHERE jobid = (
  SELECT jobid FROM cron.job
  WHERE jobname = 'refresh-lightspeed-tokens-every-6h'
)
ORDER BY start_time DESC
LIMIT 10;"""

CHECK_CONNECTION_STATUS = """SELECT
  user_id,
  status,
  account_name,
  token_expires_at,
  last_token_refresh_at,
  last_error
FROM lightspeed_connections
ORDER BY last_token_refresh_at DESC;"""

# Maintenance
TEMPORARILY_DISABLE = """SELECT cron.unschedule('refresh-lightspeed-tokens-every-6h');"""

RE_ENABLE = """SELECT cron.schedule(
  'refresh-lightspeed-tokens-every-6h',
  '0 */6 * * *',
  $$SELECT refresh_lightspeed_tokens();$$
);"""

CHANGE_SCHEDULE = """SELECT cron.unschedule('refresh-lightspeed-tokens-every-6h');
SELECT cron.schedule(
  'refresh-lightspeed-tokens-every-6h',
  '0 */3 * * *',  -- Changed to every 3 hours
  $$SELECT refresh_lightspeed_tokens();$$
);"""

# Troubleshooting (and Setup step 3)
CHECK_JOB_ACTIVE = """SELECT * FROM cron.job WHERE jobname = 'refresh-lightspeed-tokens-every-6h';"""

RECENT_JOB_RUNS = """SELECT * FROM cron.job_run_details
WHERE jobid = (SELECT jobid FROM cron.job WHERE jobname = 'refresh-lightspeed-tokens-every-6h')
ORDER BY start_time DESC LIMIT 5;"""

MANUALLY_TRIGGER = """SELECT refresh_lightspeed_tokens();"""


class KeeperFactory(Protocol):
    def __call__(self, clock: FakeClock | None = None) -> Keeper: ...


# -- running things ------------------------------------------------------------------------------------------------


@pytest.fixture
def keeper_factory(
    pg_cron_url: str, simulator_server: SimulatorServer, sim: SimulatorControl
) -> Iterator[KeeperFactory]:
    """Makes in-process ``Keeper``s on the pg_cron database (optionally with a clock); closes them after."""
    made: list[Keeper] = []

    def make(clock: FakeClock | None = None) -> Keeper:
        settings = make_settings(pg_cron_url, simulator_server.url)
        keeper = Keeper(settings, clock=clock) if clock is not None else Keeper(settings)
        made.append(keeper)
        return keeper

    yield make
    for keeper in made:
        keeper.close()


@contextmanager
def running_worker(keeper: Keeper, *, poll_s: float, url: str) -> Iterator[Worker]:
    """``Worker.run_forever`` on a thread, its LISTEN connection up before we go on; stopped and joined after."""
    worker = Worker(keeper, poll_s=poll_s)
    thread = threading.Thread(target=worker.run_forever, name="test-worker", daemon=True)
    thread.start()
    try:
        wait_for(lambda: listening(url) >= 1, timeout=15, interval=0.05, what=f"the worker to LISTEN {NOTIFY_CHANNEL}")
        yield worker
    finally:
        worker.request_stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop within 30 s"
        wait_for(lambda: listening(url) == 0, timeout=15, interval=0.05, what="the LISTEN connection to close")


def listening(url: str) -> int:
    """How many sessions sit on ``LISTEN lightkeeper_runs`` (the worker's PgListener)."""
    row = rows(
        url,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (f"LISTEN {NOTIFY_CHANNEL}",),
    )[0]
    return int(row["n"])


def rows(url: str, statement: str, params: tuple[object, ...] | None = None) -> list[dict[str, Any]]:
    """Run ``statement`` (several, for the guide's multi-statement snippets) and return the last result's rows."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        found: list[dict[str, Any]] = []
        while True:
            if cursor.description is not None:
                found = cursor.fetchall()
            if not cursor.nextset():
                return found


def with_notices(url: str, statement: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Run ``statement`` as a user would in psql: its rows and the NOTICEs the server raised."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.add_notice_handler(lambda diag: notices.append(f"{diag.severity}: {diag.message_primary}"))
        found = conn.execute(statement).fetchall()
    return found, notices


def trigger_by_sql(url: str) -> int:
    """``SELECT refresh_lightspeed_tokens();`` → the request id, checked against the notice and the return value."""
    found, notices = with_notices(url, MANUALLY_TRIGGER)
    assert len(notices) == 1, notices
    severity, _, message = notices[0].partition(": ")
    assert severity == "NOTICE"
    match = NOTICE.fullmatch(message)
    assert match, f"notice is not 'Token refresh triggered with request ID: N': {message!r}"
    request_id = int(match.group(1))
    assert found == [{"refresh_lightspeed_tokens": request_id}]
    return request_id


def cron_job(url: str) -> list[dict[str, Any]]:
    return rows(url, VIEW_SCHEDULED_JOBS)


def schedule_runs(keeper: Keeper) -> list[RunRecord]:
    return [run for run in keeper.store.runs.list(limit=100) if run.trigger == "schedule"]


def wait_for_run(keeper: Keeper, run_id: int, *, timeout: float) -> RunRecord:
    def done() -> bool:
        run = keeper.store.runs.get(run_id)
        return run is not None and run.status is RunStatus.COMPLETED

    wait_for(done, timeout=timeout, interval=0.05, what=f"run {run_id} to complete")
    run = keeper.store.runs.get(run_id)
    assert run is not None
    return run


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """An expected failure: exit 1 or 2, one sentence on stderr, no traceback."""
    assert result.returncode in (1, 2), describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(result)
    return lines[0]


# -- refresh_lightspeed_tokens() -----------------------------------------------------------------------------------


def test_install_sql_then_select_queues_a_run_with_the_guides_notice(cli: Lightkeeper, pg_cron_url: str) -> None:
    installed = cli("db", "install-sql", check=0)
    assert "refresh_lightspeed_tokens()" in installed.stdout
    cli("db", "install-sql", check=0)  # idempotent (CREATE OR REPLACE)

    first = trigger_by_sql(pg_cron_url)
    second = trigger_by_sql(pg_cron_url)
    assert second > first

    history = {run["run_id"]: run for run in cli.json("runs")}
    for request_id in (first, second):
        run = history[request_id]
        assert run["trigger"] == "sql"
        assert run["status"] == "queued"  # no worker is running: the request waits for one
        assert run["job_name"] == JOB_NAME
        assert run["finished_at"] is None


def test_install_sql_on_sqlite_is_a_clear_error(cli: Lightkeeper, tmp_path: Path) -> None:
    result = cli("db", "install-sql", env_extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'lk.db'}"})
    line = one_line_error(result)
    assert "PostgreSQL" in line
    assert "SQLite" in line


def test_worker_picks_a_sql_request_up_by_notify(keeper_factory: KeeperFactory, pg_cron_url: str) -> None:
    keeper = keeper_factory()
    pgcron.install_function(keeper.store.engine)
    for user in ("user-notify-1", "user-notify-2"):
        connect(keeper, user)

    with running_worker(keeper, poll_s=30.0, url=pg_cron_url):
        time.sleep(0.3)  # let the first poll pass: from here on only a NOTIFY wakes the worker early
        asked = time.monotonic()
        request_id = trigger_by_sql(pg_cron_url)
        run = wait_for_run(keeper, request_id, timeout=10)
        waited = time.monotonic() - asked

    assert waited < 10, "woken by the poll timer, not by NOTIFY"
    assert run.trigger == "sql"
    assert (run.total, run.refreshed, run.expired, run.errors) == (2, 2, 0, 0)
    assert all(c.last_token_refresh_at is not None for c in keeper.connections())


def test_worker_picks_requests_up_by_polling_when_notify_is_missed(
    keeper_factory: KeeperFactory, pg_cron_url: str
) -> None:
    keeper = keeper_factory()
    pgcron.install_function(keeper.store.engine)
    for user in ("user-poll-1", "user-poll-2"):
        connect(keeper, user)

    # A request made while no worker listens: its NOTIFY goes nowhere, the first poll finds it.
    missed = trigger_by_sql(pg_cron_url)
    with running_worker(keeper, poll_s=0.2, url=pg_cron_url):
        assert wait_for_run(keeper, missed, timeout=10).refreshed == 2
        # A request with no NOTIFY at all (a row written by hand): only polling can find it.
        silent = rows(
            pg_cron_url,
            "INSERT INTO lightkeeper_runs (job_name, trigger, status, created_at) "
            "VALUES (%s, 'sql', 'queued', now()) RETURNING id",
            (JOB_NAME,),
        )[0]["id"]
        run = wait_for_run(keeper, int(silent), timeout=10)
    assert run.trigger == "sql"
    assert (run.total, run.refreshed, run.errors) == (2, 2, 0)


# -- schedule use-pg-cron and the guide's SQL ----------------------------------------------------------------------


def test_use_pg_cron_then_every_snippet_of_the_guide_works(
    cli: Lightkeeper, keeper_factory: KeeperFactory, pg_cron_url: str
) -> None:
    keeper = keeper_factory()
    connect(keeper, "user-guide")

    shown = cli.json("schedule", "use-pg-cron")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", DEFAULT_SCHEDULE, True)
    shown = cli.json("schedule", "show")
    assert shown["job_name"] == JOB_NAME
    assert (shown["owner"], shown["schedule"], shown["active"], shown["note"]) == (
        "pg_cron",
        DEFAULT_SCHEDULE,
        True,
        None,
    )
    assert shown["next_run_at"] is not None
    assert "ticked by pg_cron" in cli("schedule", "show", check=0).stdout

    # Monitoring: View Scheduled Jobs
    job = cron_job(pg_cron_url)
    assert len(job) == 1
    assert (job[0]["jobname"], job[0]["schedule"], job[0]["active"]) == (JOB_NAME, DEFAULT_SCHEDULE, True)
    jobid = job[0]["jobid"]
    assert rows(pg_cron_url, CHECK_JOB_ACTIVE)[0]["command"] == "SELECT refresh_lightspeed_tokens();"

    # Monitoring: View Job History (nothing has fired yet, but the query is valid against cron.job_run_details)
    history = rows(pg_cron_url, VIEW_JOB_HISTORY)
    assert all(row["jobid"] == jobid for row in history)

    # Monitoring: Check Connection Status
    status = rows(pg_cron_url, CHECK_CONNECTION_STATUS)
    assert [(row["user_id"], row["status"]) for row in status] == [("user-guide", "connected")]
    assert list(status[0]) == [
        "user_id",
        "status",
        "account_name",
        "token_expires_at",
        "last_token_refresh_at",
        "last_error",
    ]
    assert status[0]["account_name"]
    assert status[0]["last_error"] is None

    # Maintenance: Temporarily Disable
    assert rows(pg_cron_url, TEMPORARILY_DISABLE) == [{"unschedule": True}]
    assert cron_job(pg_cron_url) == []
    shown = cli.json("schedule", "show")
    assert (shown["owner"], shown["active"], shown["next_run_at"]) == ("pg_cron", False, None)
    assert "cron.unschedule" in shown["note"]

    # Maintenance: Re-enable
    assert len(rows(pg_cron_url, RE_ENABLE)) == 1
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [(DEFAULT_SCHEDULE, True)]
    shown = cli.json("schedule", "show")
    assert (shown["owner"], shown["schedule"], shown["active"], shown["note"]) == (
        "pg_cron",
        DEFAULT_SCHEDULE,
        True,
        None,
    )

    # Maintenance: Change Schedule
    assert len(rows(pg_cron_url, CHANGE_SCHEDULE)) == 1
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */3 * * *", True)]
    shown = cli.json("schedule", "show")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */3 * * *", True)

    # Troubleshooting 1 and 2
    (active_job,) = rows(pg_cron_url, CHECK_JOB_ACTIVE)
    assert (active_job["jobname"], active_job["schedule"], active_job["active"]) == (JOB_NAME, "0 */3 * * *", True)
    assert active_job["database"] == "lightkeeper"
    recent = rows(pg_cron_url, RECENT_JOB_RUNS)
    assert len(recent) <= 5

    # Troubleshooting 3 (and Setup step 3): Manually trigger
    request_id = trigger_by_sql(pg_cron_url)
    history_runs = {run["run_id"]: run for run in cli.json("runs")}
    assert (history_runs[request_id]["trigger"], history_runs[request_id]["status"]) == ("sql", "queued")

    # Running use-pg-cron again keeps what the guide's SQL set in cron.job.
    shown = cli.json("schedule", "use-pg-cron")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */3 * * *", True)
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */3 * * *", True)]


def test_while_pg_cron_owns_the_job_embedded_schedulers_do_not_tick(
    cli: Lightkeeper, keeper_factory: KeeperFactory, pg_cron_url: str
) -> None:
    cli.json("schedule", "use-pg-cron")
    observer = keeper_factory()
    job = observer.store.jobs.get(JOB_NAME)
    assert job is not None
    assert job.owner == "pg_cron"

    # A replica whose clock is past the next tick (and several after it): it must leave the job to pg_cron.
    clock = FakeClock(next_tick(DEFAULT_SCHEDULE, job.updated_at) + timedelta(minutes=1))
    worker = Worker(keeper_factory(clock), poll_s=30.0)
    for _ in range(3):
        worker.step()
        clock.advance(hours=6)
    assert schedule_runs(observer) == []

    # The schedule commands edit cron.job while pg_cron owns the job.
    shown = cli.json("schedule", "set", "0 */2 * * *")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */2 * * *", True)
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */2 * * *", True)]

    shown = cli.json("schedule", "pause")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */2 * * *", False)
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */2 * * *", False)]

    shown = cli.json("schedule", "resume")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */2 * * *", True)
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */2 * * *", True)]

    worker.step()
    clock.advance(hours=2)
    worker.step()
    assert schedule_runs(observer) == []

    # After the guide's "Temporarily Disable", changing the schedule does not silently re-enable the job.
    rows(pg_cron_url, TEMPORARILY_DISABLE)
    shown = cli.json("schedule", "set", "0 */4 * * *")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "0 */4 * * *", False)
    assert [(r["schedule"], r["active"]) for r in cron_job(pg_cron_url)] == [("0 */4 * * *", False)]


def test_use_embedded_takes_the_job_back_with_cron_jobs_schedule(
    cli: Lightkeeper, keeper_factory: KeeperFactory, pg_cron_url: str
) -> None:
    cli.json("schedule", "use-pg-cron")
    rows(pg_cron_url, CHANGE_SCHEDULE)  # the user changed the schedule the guide's way, in cron.job

    shown = cli.json("schedule", "use-embedded")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("embedded", "0 */3 * * *", True)
    assert cron_job(pg_cron_url) == []
    assert rows(pg_cron_url, CHECK_JOB_ACTIVE) == []
    shown = cli.json("schedule", "show")
    assert (shown["owner"], shown["schedule"], shown["active"], shown["note"]) == (
        "embedded",
        "0 */3 * * *",
        True,
        None,
    )

    observer = keeper_factory()
    job = observer.store.jobs.get(JOB_NAME)
    assert job is not None
    tick = next_tick("0 */3 * * *", job.updated_at)
    clock = FakeClock(job.updated_at)
    worker = Worker(keeper_factory(clock), poll_s=30.0)
    worker.step()  # before the next tick: nothing (ticks before the hand-over are not replayed)
    assert schedule_runs(observer) == []

    clock.current = tick + timedelta(minutes=1)
    worker.step()
    worker.step()
    Worker(keeper_factory(clock), poll_s=30.0).step()  # another replica at the same moment
    started = [run for run in schedule_runs(observer) if run.status is not RunStatus.SKIPPED]
    assert len(started) == 1
    assert started[0].scheduled_for == tick
    assert started[0].status is RunStatus.COMPLETED


def test_use_embedded_after_the_guides_disable_keeps_the_job_disabled(
    cli: Lightkeeper, keeper_factory: KeeperFactory, pg_cron_url: str
) -> None:
    cli.json("schedule", "use-pg-cron")
    rows(pg_cron_url, TEMPORARILY_DISABLE)

    shown = cli.json("schedule", "use-embedded")
    assert (shown["owner"], shown["active"]) == ("embedded", False)

    observer = keeper_factory()
    job = observer.store.jobs.get(JOB_NAME)
    assert job is not None
    clock = FakeClock(next_tick(job.schedule, job.updated_at) + timedelta(minutes=1))
    Worker(keeper_factory(clock), poll_s=30.0).step()
    assert schedule_runs(observer) == []


def test_use_embedded_refuses_a_pg_cron_only_schedule(cli: Lightkeeper, pg_cron_url: str) -> None:
    cli.json("schedule", "use-pg-cron")
    rows(pg_cron_url, f"SELECT cron.schedule('{JOB_NAME}', '@reboot', $$SELECT refresh_lightspeed_tokens();$$)")

    line = one_line_error(cli("schedule", "use-embedded"))
    assert "@reboot" in line
    assert [r["schedule"] for r in cron_job(pg_cron_url)] == ["@reboot"]  # nothing changed
    shown = cli.json("schedule", "show")
    assert (shown["owner"], shown["schedule"]) == ("pg_cron", "@reboot")


def test_use_pg_cron_without_pg_cron_is_a_clear_error(cli: Lightkeeper, pg_database_url: str) -> None:
    """The machine's PostgreSQL service does not preload pg_cron."""
    env = {"DATABASE_URL": pg_database_url}
    line = one_line_error(cli("schedule", "use-pg-cron", env_extra=env))
    assert "shared_preload_libraries" in line
    shown = cli.json("schedule", "show", env_extra=env)
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("embedded", DEFAULT_SCHEDULE, True)


def test_use_pg_cron_on_sqlite_is_a_clear_error(cli: Lightkeeper, tmp_path: Path) -> None:
    line = one_line_error(cli("schedule", "use-pg-cron", env_extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}))
    assert "PostgreSQL" in line


# -- one real pg_cron firing ---------------------------------------------------------------------------------------


def test_pg_cron_fires_the_job_for_real(cli: Lightkeeper, keeper_factory: KeeperFactory, pg_cron_url: str) -> None:
    """The only test that waits for real time: pg_cron's next minute, at most ~60 s away."""
    keeper = keeper_factory()
    connect(keeper, "user-cron")
    cli.json("schedule", "set", "* * * * *")
    shown = cli.json("schedule", "use-pg-cron")
    assert (shown["owner"], shown["schedule"], shown["active"]) == ("pg_cron", "* * * * *", True)
    (job,) = cron_job(pg_cron_url)

    def fired_run() -> RunRecord | None:
        done = [run for run in keeper.store.runs.list(limit=50) if run.trigger == "sql"]
        return next((run for run in done if run.status is RunStatus.COMPLETED), None)

    with running_worker(keeper, poll_s=1.0, url=pg_cron_url):
        wait_for(lambda: fired_run() is not None, timeout=75, interval=0.5, what="pg_cron to fire the job")
    run = fired_run()
    assert run is not None
    assert (run.job_name, run.refreshed, run.errors) == (JOB_NAME, 1, 0)
    assert schedule_runs(keeper) == []  # pg_cron ticked it, not the embedded scheduler

    def succeeded() -> list[dict[str, Any]]:
        return [row for row in rows(pg_cron_url, VIEW_JOB_HISTORY) if row["status"] == "succeeded"]

    wait_for(lambda: bool(succeeded()), timeout=10, interval=0.2, what="cron.job_run_details to say succeeded")
    detail = succeeded()[0]
    assert detail["jobid"] == job["jobid"]
    assert detail["command"] == "SELECT refresh_lightspeed_tokens();"
    assert isinstance(detail["start_time"], datetime)

"""A throwaway PostgreSQL 15 cluster with pg_cron preloaded, made once per session, and a clean database per test.

pg_cron only runs inside a server that preloads it (``shared_preload_libraries``) and only in the one database
named by ``cron.database_name``, so these tests cannot use the machine's PostgreSQL service: the session fixture
``initdb``s a cluster of its own in a temporary directory, on a free loopback port, as the ``postgres`` user
(``initdb`` and ``pg_ctl`` refuse to run as root). pg_cron is required, never skipped: ``.ci/run`` installs
``postgresql-15-cron``.

Each test gets the database ``lightkeeper`` as a user would have it before ``lightkeeper schedule use-pg-cron``:
migrated to head, pg_cron preloaded but not created (``DROP SCHEMA public CASCADE`` takes the extension, its
``cron.job`` and ``cron.job_run_details`` with it), and nothing scheduled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lightkeeper.store import make_engine, upgrade
from tests.acceptance.conftest import cli, free_port  # noqa: F401 (``cli``: the acceptance fixture, reused)
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name: a PostgreSQL without pg_cron)
    pg_clones,
    pg_database_url,
    pg_template,
)

PG_BIN = Path(os.environ.get("LIGHTKEEPER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_CRON_LIB = Path(os.environ.get("LIGHTKEEPER_TEST_PG_LIB", "/usr/lib/postgresql/15/lib")) / "pg_cron.so"
DATABASE = "lightkeeper"
INSTALL_HINT = ".ci/run installs it (apt-get install postgresql-15-cron, which brings PostgreSQL 15 and pg_cron)"
START_TIMEOUT_S = 60


def _as_postgres(*args: str | Path) -> list[str]:
    """A command run as the ``postgres`` user when we are root (initdb and pg_ctl refuse root)."""
    command = [str(arg) for arg in args]
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _check_tools() -> None:
    missing = [str(path) for path in (PG_BIN / "initdb", PG_BIN / "pg_ctl") if not path.exists()]
    if not PG_CRON_LIB.exists():
        missing.append(str(PG_CRON_LIB))
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser")
    if missing:
        pytest.fail(f"the pg_cron tests need {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
    if result.returncode != 0:
        server_log = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}\n{server_log}",
            pytrace=False,
        )


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _wait_for_pg_cron(admin_url: str) -> None:
    """The server answers and pg_cron is loaded (its settings exist only when it is preloaded)."""
    with _connect(admin_url) as conn:
        row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
    if row is None or row[0] != DATABASE:
        pytest.fail(f"PostgreSQL started without pg_cron preloaded (cron.database_name is {row})", pytrace=False)


@pytest.fixture(scope="session")
def pg_cron_cluster() -> Iterator[str]:
    """URL of the database ``lightkeeper`` in a private cluster that preloads pg_cron; the cluster goes after."""
    _check_tools()
    data = Path(tempfile.mkdtemp(prefix="lk-pgcron-"))
    shutil.chown(data, user="postgres", group="postgres")
    log = data / "server.log"
    started = False
    try:
        _run(_as_postgres(PG_BIN / "initdb", "-D", data, "--auth=trust", "-U", "postgres", "-E", "UTF8"), "initdb")
        port = free_port()
        settings = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{data}'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{DATABASE}'",
            "cron.use_background_workers": "on",
            "max_worker_processes": "20",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "timezone": "'UTC'",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# lightkeeper pg_cron tests\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        # pg_ctl writes the log as postgres: the file must be theirs before the server opens it.
        log.touch()
        shutil.chown(log, user="postgres", group="postgres")
        _run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", log, "-w", "-t", str(START_TIMEOUT_S), "start"),
            "pg_ctl start",
            log,
        )
        started = True
        admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with _connect(admin_url) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        _wait_for_pg_cron(admin_url)
        yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run(
                _as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"),
                capture_output=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        shutil.rmtree(data, ignore_errors=True)


def _reset(url: str) -> None:
    """Drop lightkeeper's objects and pg_cron's (the extension lives in ``public``), then migrate to head."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with _connect(url) as conn:
                # A pg_cron job may still be running SELECT refresh_lightspeed_tokens(): don't wait on it forever.
                conn.execute("SET lock_timeout = '5s'")
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")
            break
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                raise
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_cron_url(pg_cron_cluster: str) -> str:
    """The cluster's ``lightkeeper`` database, migrated, with nothing scheduled and no pg_cron extension yet."""
    _reset(pg_cron_cluster)
    return pg_cron_cluster


@pytest.fixture
def lk_database_url(pg_cron_url: str) -> str:
    """Points the acceptance ``cli`` (and its no-token-leak check) at the pg_cron database."""
    return pg_cron_url

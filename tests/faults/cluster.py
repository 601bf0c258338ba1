"""A throwaway PostgreSQL cluster that a test may stop (``pg_ctl stop -m immediate``) and start again.

The pattern of ``tests/pgcron/conftest.py`` (initdb as ``postgres`` in a temporary directory, a free loopback
port), without pg_cron, and with the stop and start exposed to the test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from lightkeeper.store import make_engine, upgrade
from tests.acceptance.conftest import free_port
from tests.pgcron.conftest import PG_BIN, _as_postgres

TIMEOUT_S = 60


class Cluster:
    """One private PostgreSQL server; ``url`` is its migrated database ``lightkeeper``."""

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="lk-faults-pg-"))
        shutil.chown(self.data, user="postgres", group="postgres")
        self.log = self.data / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/lightkeeper"

    def create(self) -> None:
        self._run(PG_BIN / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8")
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.data}'",
            # fsync off is safe here: an immediate stop kills the server, not the machine. synchronous_commit
            # stays on: off, an immediate stop loses commits already acknowledged (pairs the run had saved).
            "fsync": "off",
            "full_page_writes": "off",
            "timezone": "'UTC'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.log.touch()
        shutil.chown(self.log, user="postgres", group="postgres")
        self.start()
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE lightkeeper")
        engine = make_engine(self.url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def start(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(TIMEOUT_S), "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: the server dies as in a crash; clients see their connections cut."""
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        shutil.rmtree(self.data, ignore_errors=True)

    def _run(self, *command: str | Path) -> None:
        result = subprocess.run(_as_postgres(*command), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if result.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            pytest.fail(f"{command[0]} failed: {result.stderr.strip()}\n{server_log}", pytrace=False)


__all__ = ["Cluster"]

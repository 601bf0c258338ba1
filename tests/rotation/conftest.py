"""Key rotation fixtures: the integration suite's databases (SQLite and PostgreSQL) and Keepers, and the
``lightkeeper`` command as a subprocess."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lightkeeper.simulator import SimulatorServer
from tests.acceptance.conftest import lightkeeper_executable
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    KeeperFactory,
    database_url,
    make_keeper,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)

from .helpers import cli_env

COMMAND_TIMEOUT_S = 90.0

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def run_cli(
    database_url: str,  # noqa: F811 (the shared fixture, by name)
    simulator_server: SimulatorServer,
    cli_home: Path,
) -> RunCli:
    """``run_cli(*args, check=code, **env)``: ``lightkeeper *args`` on this test's database, keys rotating."""

    def run(*args: str, check: int | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [lightkeeper_executable(), *args],
            env=cli_env(database_url, simulator_server.url, cli_home, **env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if check is not None:
            assert result.returncode == check, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    return run


__all__ = ["COMMAND_TIMEOUT_S", "KeeperFactory", "RunCli"]

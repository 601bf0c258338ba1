"""Fixtures of the fault-injection suite: the integration suite's databases (both dialects), a Keeper in this
process with short leases, and every ``lightkeeper`` subprocess a test starts, ended at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lightkeeper import Keeper
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.support import HEARTBEAT_S, SHORT_LEASE, Cli, process_env
from tests.helpers import make_settings
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)

StartCli = Callable[..., Cli]


@pytest.fixture
def keeper(database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[Keeper]:  # noqa: F811
    """The library in this process on the test's database: seeds, reads, and is "the next run"."""
    settings = make_settings(database_url, simulator_server.url, RUN_HEARTBEAT_S=str(HEARTBEAT_S), **SHORT_LEASE)
    with Keeper(settings) as opened:
        yield opened


@pytest.fixture
def start_cli(tmp_path: Path, database_url: str, simulator_server: SimulatorServer) -> Iterator[StartCli]:  # noqa: F811
    """``start_cli(name, *args, **env)``: a ``lightkeeper`` subprocess on the test's database (short leases)."""
    started: list[Cli] = []

    def start(name: str, *args: str, **env: str) -> Cli:
        environment = process_env(tmp_path, database_url, simulator_server.url, **SHORT_LEASE) | env
        cli = Cli.start(tmp_path, name, list(args), environment)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.end()

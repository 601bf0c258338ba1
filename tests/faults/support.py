"""What the fault-injection tests share: short-lease settings, the real CLI in a subprocess, and readings of
the database and the simulator that say whether a token was lost.

A fault test breaks one thing at one moment (a SIGKILL after Lightspeed answered, a database gone, the
simulator restarting, a SIGSTOPped process) and then checks the promises: no token lost (every pair the
simulator issued is either stored or recovered through the grace window), every connection ends in the right
status, and no run is left ``running``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import or_, select

from lightkeeper import Keeper, RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.store.schema import runs as runs_table
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.helpers import TEST_KEY
from tests.replicas.test_replicas import lightkeeper_executable

HEARTBEAT_S = 0.5
STALE_S = 3 * HEARTBEAT_S + 5  # lightkeeper.refresh.stale_after_s(HEARTBEAT_S)
# The shortest lease the settings accept (REFRESH_LEASE_S >= 10, and >= 2 x HTTP_TIMEOUT_S +
# REFRESH_MAX_RETRY_AFTER_S): a dead process's rows are taken over 10 s after it claimed them.
SHORT_LEASE = {"HTTP_TIMEOUT_S": "3", "REFRESH_MAX_RETRY_AFTER_S": "0", "REFRESH_LEASE_S": "10"}
WAIT_S = 30.0


def wait_for(predicate: Callable[[], bool], *, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.02)


def process_env(tmp_path: Path, database_url: str, simulator_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``lightkeeper`` subprocess on ``database_url`` and the simulator."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DATABASE_URL": database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_url,
        "LIGHTSPEED_API_URL": simulator_url,
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:1/oauth/callback",
        "TOKEN_ENCRYPTION_KEY": TEST_KEY,
        "REFRESH_DELAY_MS": "0",
        "RUN_HEARTBEAT_S": str(HEARTBEAT_S),
        "LOG_LEVEL": "INFO",
    } | extra


@dataclass
class Cli:
    """One ``lightkeeper`` subprocess; its stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    out: Path
    log: Path

    @classmethod
    def start(cls, tmp_path: Path, name: str, args: list[str], env: dict[str, str]) -> Cli:
        out, log = tmp_path / f"{name}.out", tmp_path / f"{name}.log"
        with out.open("wb") as out_file, log.open("wb") as log_file:
            process = subprocess.Popen(
                [lightkeeper_executable(), *args],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=log_file,
            )
        return cls(process, out, log)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"lightkeeper did not end within {timeout} s:\n{self.story()}", pytrace=False)

    def story(self) -> str:
        return f"stdout:\n{self.out.read_text(errors='replace')}\nstderr:\n{self.log.read_text(errors='replace')}"

    def end(self) -> None:
        """Teardown: never leave a process behind (SIGCONT first, in case a test stopped it)."""
        if self.process.poll() is None:
            self.process.send_signal(18)  # SIGCONT
            self.process.kill()
            self.process.wait()


def versions(keeper: Keeper) -> dict[int, int]:
    c = connections_table.c
    with keeper.store.engine.connect() as conn:
        return {row.id: row.token_version for row in conn.execute(select(c.id, c.token_version))}


def lease_ran_out(keeper: Keeper, connection_id: int) -> bool:
    """Whether the connection's lease has ended by the database's clock (free or past ``acquired_until``)."""
    from lightkeeper.store import dialect

    c = connections_table.c
    with keeper.store.engine.connect() as conn:
        ended = or_(c.acquired_until.is_(None), c.acquired_until < dialect.now_plus(conn, 0))
        return bool(conn.execute(select(ended).where(c.id == connection_id)).scalar_one())


def statuses(keeper: Keeper) -> Counter[str]:
    return Counter(record.status.value for record in keeper.connections())


def run_statuses(keeper: Keeper) -> Counter[str]:
    with keeper.store.engine.connect() as conn:
        return Counter(row.status for row in conn.execute(select(runs_table.c.status)))


def refreshes_per_account(sim: SimulatorControl) -> dict[str, int]:
    return {account: counters["refreshes"] for account, counters in sim.stats()["per_account"].items()}


def stored_refresh_token(keeper: Keeper, connection_id: int) -> str:
    return keeper.vault.refresh_token(keeper.connection(connection_id))


def newest_refresh_tokens(server: SimulatorServer, account_id: str) -> list[str]:
    """The account's live refresh tokens nothing was issued from yet: the pair a client must hold now.

    (A predecessor in its grace window is live too, but it has a successor, so it is not listed.)
    """
    state = server.state
    with state._lock:
        records = state._records
        return [
            token.token
            for token in records.refresh_tokens.values()
            if str(token.account_id) == account_id and token.child is None and records.refresh_alive(token)
        ]


def unseen_access_token(server: SimulatorServer, account_id: str, seen_refresh: str) -> str:
    """The access token of the pair the simulator issued from ``seen_refresh`` (the pair whose answer was lost)."""
    state = server.state
    with state._lock:
        child = state._records.refresh_tokens[seen_refresh].child
        assert child is not None, "no pair was issued from the stored refresh token"
        issued = state._records.refresh_tokens[child]
        assert str(issued.account_id) == account_id
        return issued.access_token


def no_run_left_running(keeper: Keeper) -> None:
    """After the stale interval, every run has ended: none stays ``running`` because its process died."""
    deadline = time.monotonic() + STALE_S + 5
    while run_statuses(keeper)[RunStatus.RUNNING.value]:
        if time.monotonic() > deadline:
            pytest.fail(f"a run stayed running past the stale interval: {run_statuses(keeper)}", pytrace=False)
        keeper.interrupt_stale_runs()
        time.sleep(0.2)


__all__ = [
    "HEARTBEAT_S",
    "SHORT_LEASE",
    "STALE_S",
    "Cli",
    "lease_ran_out",
    "newest_refresh_tokens",
    "no_run_left_running",
    "process_env",
    "refreshes_per_account",
    "run_statuses",
    "statuses",
    "stored_refresh_token",
    "unseen_access_token",
    "versions",
    "wait_for",
]

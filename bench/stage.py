"""The stage the subprocess benchmarks share: the simulator in this process, databases, and one measured run.

A measured run is ``lightkeeper refresh --all --json`` as a child process (``bench.child``): its CPU and peak
RSS come from the child's own rusage, its speed from the run record's ``started_at``/``finished_at`` (so the
interpreter's start-up is not in it), and the simulator's counters before and after say whether any refresh
token was presented twice (``reuse``, which must stay 0) or refused.
"""

from __future__ import annotations

import gc
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from lightkeeper.crypto import TokenCipher, generate_key
from lightkeeper.simulator import SimulatorConfig, SimulatorServer
from lightkeeper.store import make_engine, upgrade
from lightkeeper.store.schema import runs

from .bulk import bulk_seed
from .child import ChildResult, base_env, file_url, lightkeeper_command, run_child, workdir

CLIENT_ID = "lightkeeper-bench"
CLIENT_SECRET = secrets.token_hex(16)


@dataclass(frozen=True)
class RunResult:
    """One ``refresh --all`` child: what the run record, the child's rusage and the simulator say."""

    connections: int
    status: str
    refreshed: int
    errors: int
    run_s: float  # finished_at - started_at, as recorded: start-up excluded
    child: ChildResult
    sim_refreshes: int
    reuse: int
    invalid_grant: int

    @property
    def rate(self) -> float:
        return self.refreshed / self.run_s if self.run_s > 0 else 0.0

    @property
    def correct(self) -> bool:
        return self.refreshed == self.connections and self.errors == 0 and self.reuse == 0 and self.invalid_grant == 0


@dataclass
class Stage:
    """The simulator, one encryption key, and a directory for SQLite files."""

    server: SimulatorServer
    directory: Path
    key: str

    @property
    def cipher(self) -> TokenCipher:
        return TokenCipher.from_texts(self.key)

    def latency(self, token_ms: int) -> None:
        self.server.state.update_config({"token_latency_ms": token_ms, "api_latency_ms": 0})

    def env(self, database_url: str, **settings: str) -> dict[str, str]:
        """The child's whole environment: lightkeeper's settings and nothing else from ours."""
        return {
            **base_env(),
            "DATABASE_URL": database_url,
            "LIGHTSPEED_OAUTH_URL": self.server.url,
            "LIGHTSPEED_API_URL": self.server.url,
            "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
            "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
            "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:1/oauth/callback",
            "TOKEN_ENCRYPTION_KEY": self.key,
            "LOG_LEVEL": "WARNING",
            **settings,
        }

    def sqlite_url(self) -> str:
        """A new SQLite file in the scratch directory (created by ``seeded``)."""
        return file_url(self.directory, f"bench-{secrets.token_hex(4)}.db")

    def seeded(self, database_url: str, count: int) -> str:
        """Migrate ``database_url`` and seed ``count`` connections into it (bulk); returns the URL."""
        engine = make_engine(database_url)
        try:
            upgrade(engine)
            if count:
                bulk_seed(engine, self.cipher, self.server, count)
        finally:
            engine.dispose()
        # The simulator answers from this process: its accounts (tens of thousands of objects) would be walked by
        # every full garbage collection here, slowing its answers as the table grows. Frozen, they are not: the
        # benchmarks measure lightkeeper, not the simulator's heap.
        gc.collect()
        gc.freeze()
        return database_url

    def counters(self) -> dict[str, int]:
        stats = self.server.state.stats()
        return {name: int(stats[name]) for name in ("refreshes", "reuse", "invalid_grant")}

    def refresh_all(self, database_url: str, connections: int, **settings: str) -> RunResult:
        """One measured ``lightkeeper refresh --all`` over ``connections`` seeded rows."""
        before = self.counters()
        child = run_child([*lightkeeper_command(), "refresh", "--all", "--json"], self.env(database_url, **settings))
        child.check("lightkeeper refresh --all")
        after = self.counters()
        document = json.loads(child.stdout)
        return RunResult(
            connections=connections,
            status=str(document["status"]),
            refreshed=int(document["refreshed"]),
            errors=int(document["errors"]),
            run_s=run_seconds(database_url, int(document["run_id"])),
            child=child,
            sim_refreshes=after["refreshes"] - before["refreshes"],
            reuse=after["reuse"] - before["reuse"],
            invalid_grant=after["invalid_grant"] - before["invalid_grant"],
        )


def lightkeeper_run(stage_: Stage, database_url: str, connections: int, **settings: str) -> RunResult:
    """``stage_.refresh_all``, or ``RuntimeError`` if the run was not entirely right (a wrong run measures nothing)."""
    result = stage_.refresh_all(database_url, connections, **settings)
    if not result.correct:
        raise RuntimeError(
            f"lightkeeper's run was wrong: {result.refreshed}/{connections} refreshed, {result.errors} errors, "
            f"reuse {result.reuse}, invalid_grant {result.invalid_grant}"
        )
    return result


def run_seconds(database_url: str, run_id: int) -> float:
    """``finished_at - started_at`` of a recorded run."""
    engine: Engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(runs.c.started_at, runs.c.finished_at).where(runs.c.id == run_id)).one()
    finally:
        engine.dispose()
    started, finished = row
    return (finished - started).total_seconds() if started and finished else 0.0


@contextmanager
def stage(name: str, **config: Any) -> Iterator[Stage]:
    """A simulator on loopback (accounts for ``CLIENT_ID``) and a scratch directory, for one benchmark."""
    sim_config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **config)
    with workdir(name) as tmp, SimulatorServer(sim_config) as server:
        yield Stage(server=server, directory=Path(tmp), key=generate_key())


__all__ = ["CLIENT_ID", "CLIENT_SECRET", "RunResult", "Stage", "lightkeeper_run", "run_seconds", "stage"]

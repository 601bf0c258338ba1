"""Seed tens of thousands of connections in seconds: simulator accounts in one call, rows in a few statements.

``bench.seeding.seed_connections`` writes each connection as a connect would (one transaction each, ~3-4 ms);
at 50,000 that alone is minutes. Here the simulator (running in this process) issues every first token pair
in one locked call, the rows get their ids up front so each token is encrypted with the real ``TokenCipher``
bound to its row id and column, and the rows go in with executemany in chunks (SQLAlchemy batches them into
multi-row INSERTs on PostgreSQL) inside one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from lightkeeper.crypto import TokenCipher
from lightkeeper.simulator import SimulatorServer
from lightkeeper.store.schema import connections

_CHUNK = 5_000  # rows per executemany: bounds this process's memory while seeding 50,000
_SIM_MAX_SEED = 100_000  # the simulator's limit per seed call
_CATCH_UP_SEQUENCE = (
    "SELECT setval(pg_get_serial_sequence('lightspeed_connections', 'id'), max(id)) FROM lightspeed_connections"
)


def bulk_seed(engine: Engine, cipher: TokenCipher, server: SimulatorServer, count: int, *, prefix: str = "bulk") -> int:
    """``count`` connected connections with live simulator pairs; returns the first new row id."""
    with engine.begin() as conn:
        first_id = int(conn.execute(select(func.coalesce(func.max(connections.c.id), 0))).scalar_one()) + 1
        for start in range(0, count, _CHUNK):
            pairs = _pairs(server, min(_CHUNK, count - start))
            rows = [_row(cipher, first_id + start + n, pair, prefix) for n, pair in enumerate(pairs)]
            conn.execute(connections.insert(), rows)
        if engine.dialect.name == "postgresql":  # ids were given, so the serial sequence must catch up
            conn.execute(text(_CATCH_UP_SEQUENCE))
    return first_id


def _pairs(server: SimulatorServer, count: int) -> Iterator[dict[str, Any]]:
    for start in range(0, count, _SIM_MAX_SEED):
        yield from server.state.seed(min(_SIM_MAX_SEED, count - start))


def _row(cipher: TokenCipher, row_id: int, pair: dict[str, Any], prefix: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": row_id,
        "user_id": f"{prefix}-{row_id}",
        "account_id": str(pair["account_id"]),
        "account_name": pair.get("name"),
        "status": "connected",
        "access_token": cipher.encrypt(pair["access_token"], connection_id=row_id, field="access_token"),
        "refresh_token": cipher.encrypt(pair["refresh_token"], connection_id=row_id, field="refresh_token"),
        "token_version": 1,
        "token_expires_at": now + timedelta(seconds=int(pair["expires_in"])),
        "last_token_refresh_at": now,
        "created_at": now,
        "updated_at": now,
    }


__all__ = ["bulk_seed"]

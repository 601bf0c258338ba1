"""Seed many connections fast: simulator accounts with their first token pairs, stored without the consent dance.

Shared by the benchmarks and the tests (``tests.seeding`` re-exports it). About 3-4 ms a connection on
PostgreSQL (one short transaction each, as a real connect would write it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lightkeeper import Keeper
from lightkeeper.lightspeed import TokenSet
from lightkeeper.simulator import SimulatorControl


def seed_connections(keeper: Keeper, control: SimulatorControl, count: int, *, user_prefix: str = "bench") -> list[int]:
    """``count`` connected connections, one per new simulator account; returns their ids in seeding order."""
    return [
        _store_pair(keeper, pair, user_id=f"{user_prefix}-{number}")
        for number, pair in enumerate(control.seed(count), start=1)
    ]


def _store_pair(keeper: Keeper, pair: dict[str, Any], *, user_id: str) -> int:
    now = keeper.clock()
    expires_at = now + timedelta(seconds=int(pair["expires_in"]))
    tokens = TokenSet(access_token=pair["access_token"], refresh_token=pair["refresh_token"], expires_at=expires_at)
    return keeper.store.connections.upsert_connected(
        user_id=user_id,
        account_id=str(pair["account_id"]),
        account_name=pair.get("name"),
        encrypt=lambda connection_id: keeper.vault.seal_pair(connection_id, tokens),
        expires_at=expires_at,
        now=now,
    )


__all__ = ["seed_connections"]

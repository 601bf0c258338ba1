"""Fixtures for the on-demand client: the integration databases, the acceptance ``cli``, and a clean pacer.

The simulator is reset before every test and hands out the same account ids again, so the process-wide
bucket model of those accounts is forgotten too: each test starts with an empty bucket on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from lightkeeper import Keeper
from lightkeeper.lightspeed.bucket import PROCESS_PACER
from lightkeeper.store.schema import connections as connections_table
from tests.acceptance.conftest import backend, cli, lk_database_url  # noqa: F401 (fixtures reused by name)
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    KeeperFactory,
    database_url,
    make_keeper,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)


@pytest.fixture(autouse=True)
def fresh_pacer() -> Iterator[None]:
    PROCESS_PACER.forget()
    yield
    PROCESS_PACER.forget()


@pytest.fixture
def keeper(make_keeper: KeeperFactory) -> Keeper:  # noqa: F811 (the shared fixture, by name)
    return make_keeper()


def set_row(keeper: Keeper, connection_id: int, **values: object) -> None:
    """Change a connection row directly (test set-up only)."""
    with keeper.store.engine.begin() as conn:
        conn.execute(update(connections_table).where(connections_table.c.id == connection_id).values(**values))

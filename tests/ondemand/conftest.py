"""Fixtures for the on-demand client: the integration databases and the acceptance ``cli``.

The simulator is reset before every test and hands out the same account ids again; each test also gets a new
database, so the shared bucket rows of those accounts start empty too.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from lightkeeper import Keeper
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


@pytest.fixture
def keeper(make_keeper: KeeperFactory) -> Keeper:  # noqa: F811 (the shared fixture, by name)
    return make_keeper()


def set_row(keeper: Keeper, connection_id: int, **values: object) -> None:
    """Change a connection row directly (test set-up only)."""
    with keeper.store.engine.begin() as conn:
        conn.execute(update(connections_table).where(connections_table.c.id == connection_id).values(**values))

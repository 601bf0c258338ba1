"""Alembic environment: migrations always run on a connection handed in by ``store.migrate``."""

from __future__ import annotations

from alembic import context

from lightkeeper.store.dialect import is_sqlite
from lightkeeper.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=is_sqlite(connection),  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()

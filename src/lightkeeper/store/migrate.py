"""Schema migrations (Alembic) and the start-up check that the database is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect

from ..errors import SchemaOutOfDate
from . import dialect

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run `lightkeeper db upgrade`"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema (idempotent)."""
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def ensure_current(engine: Engine, *, auto_create: bool) -> None:
    """Refuse to run on a schema behind the code; create a brand-new embedded database on first use.

    ``auto_create`` is for an empty SQLite file only: a database that has tables is never migrated
    silently, and neither is PostgreSQL.
    """
    current = current_revision(engine)
    if current == head_revision():
        return
    if auto_create and dialect.is_sqlite(engine) and current is None and is_empty(engine):
        upgrade(engine)
        return
    if current is not None and not _known(current):
        # An old replica beside a newer schema would bring back rules the schema was changed to end.
        raise SchemaOutOfDate(
            f"The database schema ({current}) is newer than this lightkeeper (which knows up to {head_revision()}): "
            "upgrade lightkeeper on this machine before starting it."
        )
    if current is None and not is_empty(engine) and not _has_lightkeeper_tables(engine):
        # Someone else's database: creating our tables in it would mix two applications' data.
        raise SchemaOutOfDate(
            "The database has tables but none of lightkeeper's: DATABASE_URL points to another application's "
            "database; give lightkeeper its own (a new SQLite file, or an empty PostgreSQL database)."
        )
    found = current or "no lightkeeper schema"
    raise SchemaOutOfDate(f"The database is not up to date ({found}, code needs {head_revision()}): {UPGRADE_HINT}.")


def _has_lightkeeper_tables(engine: Engine) -> bool:
    return "lightspeed_connections" in inspect(engine).get_table_names()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:  # alembic: "Can't locate revision identified by ..."
        return False


__all__ = ["current_revision", "ensure_current", "head_revision", "upgrade"]

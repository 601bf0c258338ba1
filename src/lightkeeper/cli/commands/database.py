"""``db upgrade`` and ``db current``."""

from __future__ import annotations

import typer

from .. import context
from ..output import out

db = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema."""
    from ...store import Store, current_revision, upgrade

    settings = context.settings(context.NONE)
    store = Store.from_url(settings.database_url)
    try:
        upgrade(store.engine)
        out.print(f"Database at schema {current_revision(store.engine)} ({settings.redacted_database_url})")
    finally:
        store.close()


@db.command("current")
def db_current() -> None:
    """Show the database's schema revision and the one this code needs."""
    from ...store import Store, current_revision, head_revision

    settings = context.settings(context.NONE)
    store = Store.from_url(settings.database_url)
    try:
        current, head = current_revision(store.engine), head_revision()
    finally:
        store.close()
    state = "up to date" if current == head else "behind: run `lightkeeper db upgrade`"
    out.print(f"schema {current or 'none'} (code needs {head}): {state}")


def register(app: typer.Typer) -> None:
    app.add_typer(db, name="db")

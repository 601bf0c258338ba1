"""Settings and ``Keeper`` for CLI commands, loaded lazily so ``--help`` needs no configuration."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from .. import logs
from ..config import REQUIRE_ALL, Settings, load_settings
from ..keeper import Keeper
from ..store import Store, ensure_current, sqlite_path


def settings(require: Collection[str] = REQUIRE_ALL) -> Settings:
    loaded = load_settings(require=require)
    logs.configure(loaded.log_level, loaded.log_format)
    return loaded


@contextmanager
def keeper(require: Collection[str] = REQUIRE_ALL, *, auto_create: bool = True) -> Iterator[Keeper]:
    """A ``Keeper`` on a database whose schema is current (a brand-new SQLite file is created)."""
    with Keeper(settings(require)) as opened:
        opened.ensure_schema(auto_create=auto_create)
        yield opened


@contextmanager
def store(loaded: Settings) -> Iterator[Store]:
    """The database alone, for commands that need neither Lightspeed nor the encryption key."""
    opened = Store.from_url(loaded.database_url)
    try:
        ensure_current(opened.engine, auto_create=sqlite_path(loaded.database_url) is not None)
        yield opened
    finally:
        opened.close()


__all__ = ["keeper", "settings", "store"]

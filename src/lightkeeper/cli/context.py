"""Settings and ``Keeper`` for CLI commands, loaded lazily so ``--help`` needs no configuration."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..keeper import Keeper
    from ..store import Store

#: Same as config.REQUIRE_ALL, without importing config (and pydantic) at start-up.
ALL = frozenset({"LIGHTSPEED_CLIENT_ID", "LIGHTSPEED_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY"})
NONE: frozenset[str] = frozenset()


def settings(require: Collection[str] = ALL, *, daemon: bool = False) -> Settings:
    """Settings from the environment; one-shot commands log warnings only unless LOG_LEVEL=DEBUG."""
    from .. import logs
    from ..config import load_settings

    loaded = load_settings(require=require)
    level = loaded.log_level if daemon or loaded.log_level == "DEBUG" else "WARNING"
    logs.configure(level, loaded.log_format)
    return loaded


@contextmanager
def keeper(require: Collection[str] = ALL, *, auto_create: bool = True, daemon: bool = False) -> Iterator[Keeper]:
    """A ``Keeper`` on a database whose schema is current (a brand-new SQLite file is created)."""
    from ..keeper import Keeper

    with Keeper(settings(require, daemon=daemon)) as opened:
        opened.ensure_schema(auto_create=auto_create)
        yield opened


@contextmanager
def store(loaded: Settings) -> Iterator[Store]:
    """The database alone, for commands that need neither Lightspeed nor the encryption key."""
    opened = open_store(loaded)
    try:
        yield opened
    finally:
        opened.close()


def open_store(loaded: Settings) -> Store:
    """A store whose schema is current (a brand-new SQLite file is created); the caller closes it."""
    from ..store import Store, ensure_current, sqlite_path

    opened = Store.from_url(loaded.database_url)
    try:
        ensure_current(opened.engine, auto_create=sqlite_path(loaded.database_url) is not None)
    except BaseException:
        opened.close()
        raise
    return opened


__all__ = ["ALL", "NONE", "keeper", "open_store", "settings", "store"]

"""Building the SQLAlchemy engine: URL normalisation and SQLite's connection settings.

A SQLite file holds the encrypted tokens, the hashes of live connect links and the run history: only its
owner may read it. It is created with mode 0600, an existing one is tightened to 0600 when opened, and so
are its ``-wal``, ``-shm`` and ``-journal`` files (SQLite gives new ones the database file's mode).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..errors import ConfigError

log = logging.getLogger(__name__)

PRIVATE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def normalise_url(url: str) -> str:
    """Map the URLs users write to the drivers we ship (psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError("DATABASE_URL is not a database URL (try sqlite:///lightkeeper.db)") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"DATABASE_URL must be sqlite:/// or postgresql://, not {parsed.drivername}://")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so threads and processes can share it.

    ``hide_parameters``: a statement's parameters (token ciphertexts, link hashes) never appear in an error's text.
    """
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True)


def soft_engine(engine: Engine) -> Engine:
    """An engine for soft state written on every proxied request (the API buckets), beside ``engine``.

    On PostgreSQL: its own small pool, whose sessions commit without waiting for the WAL to reach the disk
    (``synchronous_commit=off``: a crash may lose the last bookings, which only makes the next requests count
    on a bucket a little emptier than it is, and Lightspeed's headers correct that), and without a ping on
    every check-out (its caller retries once on a dropped connection). Each saves a round trip a request.
    SQLite commits in WAL mode never wait for the disk: there it is ``engine`` itself.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return create_engine(
        engine.url,
        pool_size=4,
        max_overflow=4,
        hide_parameters=True,
        connect_args={"options": "-c synchronous_commit=off"},
    )


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        make_private(path)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    if path is not None:
        # WAL and SHM appear with the first connection; tighten any left by an older version or another umask.
        event.listen(engine, "connect", lambda _conn, _record: _tighten_side_files(path))
    return engine


def make_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing (SQLite then keeps that mode), else tighten it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, PRIVATE))  # umask may only narrow it
    except FileExistsError:
        _tighten(path)
    _tighten_side_files(path)


def _tighten_side_files(path: Path) -> None:
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            _tighten(side)


def _tighten(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~PRIVATE:
            path.chmod(mode & PRIVATE)
    except FileNotFoundError:  # a side file SQLite removed meanwhile
        return
    except PermissionError:  # someone else's file: say so; the database may still be usable
        log.warning("cannot make %s readable by its owner only: it belongs to another user", path)


# A new (empty) file or one of ours; WAL is written into the file's header, so another app's file stays as it is.
_OURS_OR_EMPTY = (
    "SELECT count(*) = 0 OR coalesce(sum(name = 'alembic_version'), 0) > 0 FROM sqlite_master WHERE type = 'table'"
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):  # this connection only
        cursor.execute(f"PRAGMA {pragma}")
    if cursor.execute(_OURS_OR_EMPTY).fetchone()[0]:
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


__all__ = ["make_engine", "make_private", "normalise_url", "soft_engine", "sqlite_path"]

"""All SQL on ``lightkeeper_api_buckets``: each account's API limits, shared by every process of a deployment.

Lightspeed keeps one leaky bucket and one burst window per (account, OAuth client), and every process of a
deployment is that one client (invariant 7). The row holds the state as ``lightspeed.bucket`` models it (or, in
a row named ``window:…``, an X-Series store's fixed window as ``lightspeed.window`` does), an opaque text here;
``change`` is applied to it under the row's lock, with the database's "now", so two processes booking the same
account's limits are serialised and both see the other's bookings.

The statements are built once (``Prepared``): the proxy books a bucket for every request it forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Column, Engine, bindparam, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.types import NullType

from . import dialect
from .prepared import Prepared, transaction
from .schema import api_buckets as t

T = TypeVar("T")

#: ``change(state, now)`` -> (the new state, or None to leave the row as it is; what the caller gets back).
Change = Callable[[str, float], tuple[str | None, T]]


class ApiBucketRepo:
    """The API buckets' rows; ``engine`` is best a ``soft_engine`` (see there)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Locks the row and reads it in one statement: an UPDATE takes PostgreSQL's row lock (and SQLite's write
        # lock) before it reads, so nobody books between our read and our write. The "now" it returns is read
        # once the lock is held (``dialect.epoch``): a wait for the lock does not make the booking stale.
        lock = update(t).where(t.c.name == bindparam("name")).values(state=t.c.state)
        lock = lock.returning(t.c.state, dialect.epoch(engine).label("now"))
        self._lock = Prepared(engine, lock, returns=[t.c.state, Column("now", NullType())])
        self._create = Prepared(
            engine, dialect.insert(engine, t).values(name=bindparam("name"), state="").on_conflict_do_nothing()
        )
        self._write = Prepared(engine, update(t).where(t.c.name == bindparam("name")).values(state=bindparam("state")))

    def close(self) -> None:
        self._engine.dispose()

    def transform(self, name: str, change: Change[T]) -> tuple[T, float]:
        """Apply ``change`` to the row of ``name`` (created empty if missing) under its lock; what ``change``
        gave back, and the database's "now" it was given (epoch seconds)."""
        try:
            return self._transform(name, change)
        except OperationalError:
            # ``soft_engine`` does not ping connections before use: one the server dropped fails here once.
            self._engine.dispose()
            return self._transform(name, change)

    def _transform(self, name: str, change: Change[T]) -> tuple[T, float]:
        with transaction(self._engine) as cursor:
            row = self._lock.first(cursor, {"name": name})
            if row is None:  # the account's first request: make its row, then lock it
                self._create.run(cursor, {"name": name})
                row = self._lock.first(cursor, {"name": name})
                assert row is not None
            now = float(row["now"])
            new, result = change(str(row["state"] or ""), now)
            if new is not None:
                self._write.run(cursor, {"name": name, "state": new})
        return result, now


__all__ = ["ApiBucketRepo", "Change"]

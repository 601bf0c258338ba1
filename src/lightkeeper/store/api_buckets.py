"""All SQL on ``lightkeeper_api_buckets``: each account's API limits, shared by every process of a deployment.

Lightspeed keeps one leaky bucket and one burst window per (account, OAuth client), and every process of a
deployment is that one client (invariant 7). The row holds the state as ``lightspeed.bucket`` models it, an
opaque text here; ``change`` is applied to it under the row's lock, with the database's "now", so two
processes booking the same account's bucket are serialised and both see the other's bookings.

The statements are built once (``Prepared``): the proxy books a bucket for every request it forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Column, Engine, bindparam, select, update
from sqlalchemy.types import NullType

from . import dialect
from .prepared import Prepared, transaction
from .schema import api_buckets as t

T = TypeVar("T")

#: ``change(state, now)`` -> (the new state, or None to leave the row as it is; what the caller gets back).
Change = Callable[[str, float], tuple[str | None, T]]


class ApiBucketRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The insert creates a missing row and, on SQLite, takes the database's write lock before the read:
        # the read then sees every committed booking and nobody books between our read and our write.
        # On PostgreSQL ``FOR UPDATE`` locks the row itself (SQLite ignores it: its lock is the whole file).
        self._ensure = Prepared(
            engine,
            dialect.insert(engine, t).values(name=bindparam("name"), state="").on_conflict_do_nothing(),
        )
        read = select(t.c.state, dialect.epoch(engine).label("now")).where(t.c.name == bindparam("name"))
        self._read = Prepared(engine, read.with_for_update(), returns=[t.c.state, Column("now", NullType())])
        self._write = Prepared(engine, update(t).where(t.c.name == bindparam("name")).values(state=bindparam("state")))

    def transform(self, name: str, change: Change[T]) -> tuple[T, float]:
        """Apply ``change`` to the row of ``name`` (created empty if missing) under its lock; what ``change``
        gave back, and the database's "now" it was given (epoch seconds)."""
        with transaction(self._engine) as cursor:
            self._ensure.run(cursor, {"name": name})
            row = self._read.first(cursor, {"name": name})
            assert row is not None  # the insert above made it
            now = float(row["now"])
            new, result = change(str(row["state"] or ""), now)
            if new is not None:
                self._write.run(cursor, {"name": name, "state": new})
        return result, now


__all__ = ["ApiBucketRepo", "Change"]

"""Every difference between SQLite and PostgreSQL that a query needs, in one place.

Queries ask this module for the database's time, an upsert, a notification; they never branch on the
dialect themselves (APScheduler 4's SQLAlchemy data store is the model).

Timestamps are timezone-aware UTC on both (``UTCDateTime``: SQLite has no time zones, so it stores naive UTC).

Time: leases, heartbeats, staleness and pacing slots are judged by one clock. On PostgreSQL that is the
server's ``statement_timestamp()``, so a replica whose own clock is minutes off cannot free a live lease.
SQLite lives in one file on one machine, whose clock every process shares: there it is the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    Interval,
    Table,
    bindparam,
    func,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression
from sqlalchemy.types import TypeDecorator

from ..clock import utcnow

T = TypeVar("T")

POSTGRESQL = "postgresql"
SQLITE = "sqlite"


def is_postgresql(conn: Connection | Engine) -> bool:
    return conn.dialect.name == POSTGRESQL


def is_sqlite(conn: Connection | Engine) -> bool:
    return conn.dialect.name == SQLITE


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every dialect.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC and
    given their zone back on the way out. Naive values on the way in are a bug and are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == SQLITE else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def no_index(conn: Connection | Engine, column: ColumnElement[T]) -> ColumnElement[T]:
    """``column`` in a condition the database must not answer from an index: SQLite's unary ``+``.

    For a statement whose best plan walks another index in order: a claim walks the primary key from the last
    id and stops at the first row that qualifies. Given ``status = …`` SQLite used the status index instead,
    gathering and sorting every refreshable row above that id for each claim (EXPLAIN: "USE TEMP B-TREE FOR
    ORDER BY"), a cost that grew with the table. PostgreSQL plans this well by itself.
    """
    if is_sqlite(conn):
        return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)
    return column


def now(conn: Connection | Engine) -> ColumnElement[datetime]:
    """The database's "now" as a timestamp, constant within one statement."""
    if is_postgresql(conn):
        return type_coerce(func.statement_timestamp(), DateTime(timezone=True))
    return literal(utcnow(), UTCDateTime)


def now_plus(conn: Connection | Engine, seconds: float) -> ColumnElement[datetime]:
    """The database's "now" plus ``seconds`` (negative: in the past)."""
    if is_postgresql(conn):
        return now(conn) + literal(timedelta(seconds=seconds), Interval)
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime)


def now_param(conn: Connection | Engine) -> ColumnElement[datetime]:
    """The database's "now" for a statement built once and run many times: on PostgreSQL the statement's own
    timestamp; on SQLite the ``db_now`` parameter, which ``time_params`` fills at each execution."""
    if is_postgresql(conn):
        return now(conn)
    return bindparam("db_now", type_=UTCDateTime)


def now_plus_param(conn: Connection | Engine, name: str) -> ColumnElement[datetime]:
    """The database's "now" plus the seconds that ``time_params(conn, name=seconds)`` gives at each execution."""
    if is_postgresql(conn):
        return now(conn) + bindparam(name, type_=Interval)
    return bindparam(name, type_=UTCDateTime)


def time_params(conn: Connection | Engine, **seconds: float) -> dict[str, Any]:
    """The parameters of ``now_param`` and ``now_plus_param`` for one execution."""
    if is_postgresql(conn):
        return {name: timedelta(seconds=value) for name, value in seconds.items()}
    current = utcnow()
    return {"db_now": current} | {name: current + timedelta(seconds=value) for name, value in seconds.items()}


def epoch(conn: Connection | Engine) -> ColumnElement[float]:
    """The database's "now" in seconds since the epoch, read when the row is reached (after any lock wait),
    for pacing slots: a slot computed before waiting for the pacing row would be stale by that wait."""
    if is_postgresql(conn):
        return type_coerce(func.extract("epoch", func.clock_timestamp()), Float)
    return type_coerce((func.julianday("now") - _UNIX_EPOCH_JULIAN_DAY) * 86400.0, Float)


_UNIX_EPOCH_JULIAN_DAY = 2440587.5


def greatest(conn: Connection, first: ColumnElement[Any], second: ColumnElement[Any]) -> ColumnElement[Any]:
    """The larger of two values (SQLite's two-argument ``max`` is its ``greatest``)."""
    return func.greatest(first, second) if is_postgresql(conn) else func.max(first, second)


def insert(conn: Connection | Engine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on either dialect."""
    return postgresql.insert(table) if is_postgresql(conn) else sqlite.insert(table)


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Wake listeners when this transaction commits (PostgreSQL only; on SQLite workers poll)."""
    if is_postgresql(conn):
        conn.execute(select(func.pg_notify(channel, payload)))


__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "UTCDateTime",
    "epoch",
    "greatest",
    "insert",
    "is_postgresql",
    "is_sqlite",
    "no_index",
    "notify",
    "now",
    "now_param",
    "now_plus",
    "now_plus_param",
    "time_params",
]

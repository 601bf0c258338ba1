"""Every difference between SQLite and PostgreSQL that a query needs, in one place.

Queries ask this module for the database's time, an upsert, a notification; they never branch on the
dialect themselves (APScheduler 4's SQLAlchemy data store is the model).

Time: leases, heartbeats, staleness and pacing slots are judged by one clock. On PostgreSQL that is the
server's ``statement_timestamp()``, so a replica whose own clock is minutes off cannot free a live lease.
SQLite lives in one file on one machine, whose clock every process shares: there it is the wall clock.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, Float, Interval, Table, func, literal, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from ..clock import utcnow
from .schema import UTCDateTime

POSTGRESQL = "postgresql"


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == POSTGRESQL


def now(conn: Connection) -> ColumnElement[datetime]:
    """The database's "now" as a timestamp, constant within one statement."""
    if is_postgresql(conn):
        return type_coerce(func.statement_timestamp(), DateTime(timezone=True))
    return literal(utcnow(), UTCDateTime)


def now_plus(conn: Connection, seconds: float) -> ColumnElement[datetime]:
    """The database's "now" plus ``seconds`` (negative: in the past)."""
    if is_postgresql(conn):
        return now(conn) + literal(timedelta(seconds=seconds), Interval)
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime)


def epoch(conn: Connection) -> ColumnElement[float]:
    """The database's "now" in seconds since the epoch, for arithmetic that SQLite's text dates cannot do."""
    if is_postgresql(conn):
        return type_coerce(func.extract("epoch", func.statement_timestamp()), Float)
    return literal(time.time(), Float)


def greatest(conn: Connection, first: ColumnElement[Any], second: ColumnElement[Any]) -> ColumnElement[Any]:
    """The larger of two values (SQLite's two-argument ``max`` is its ``greatest``)."""
    return func.greatest(first, second) if is_postgresql(conn) else func.max(first, second)


def insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on either dialect."""
    return postgresql.insert(table) if is_postgresql(conn) else sqlite.insert(table)


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Wake listeners when this transaction commits (PostgreSQL only; on SQLite workers poll)."""
    if is_postgresql(conn):
        conn.execute(select(func.pg_notify(channel, payload)))


__all__ = ["POSTGRESQL", "epoch", "greatest", "insert", "is_postgresql", "notify", "now", "now_plus"]

"""All SQL on ``lightspeed_connections``: upsert, leases, batch claims and compare-and-swap saves.

A lease (``acquired_by``/``acquired_until``) says who may talk to Lightspeed about a connection right now.
A token save only lands if ``token_version`` is still the one the refresher read: a refresher whose lease
ran out cannot overwrite the tokens a newer refresher saved (invariant 1).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from .records import REFRESHABLE, ConnectionRecord, Status
from .schema import connections as t
from .schema import runs as runs_table

#: Given the new row's id, returns the (access, refresh) ciphertexts bound to that id.
EncryptPair = Callable[[int], tuple[str, str]]


@dataclass(frozen=True)
class Tally:
    """Count an outcome in a run, in the same transaction as the write that makes it true: a worker
    killed right after the write cannot lose the count, and a run never reads finished before it."""

    run_id: int
    outcome: str  # "refreshed" | "expired" | "errors" | "skipped"


_TALLIES = frozenset({"refreshed", "expired", "errors", "skipped"})


@dataclass(frozen=True)
class NewTokens:
    """Ciphertexts and expiry of a token pair about to be saved."""

    access_token: str
    refresh_token: str
    expires_at: datetime


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(t.c.acquired_until.is_(None), t.c.acquired_until < now)


_RELEASE = {"acquired_by": None, "acquired_until": None}
#: Built once: ``fresh_token`` reads a row on every call, and building (and cache-keying) a new statement
#: each time cost about as much as running it on SQLite.
_BY_ID = select(t).where(t.c.id == bindparam("connection_id"))


class ConnectionRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- reading -------------------------------------------------------------------------------------
    def get(self, connection_id: int) -> ConnectionRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(_BY_ID, {"connection_id": connection_id}).first()
        return ConnectionRecord.from_row(row) if row else None

    def list(self, *, user_id: str | None = None, status: str | None = None) -> builtins.list[ConnectionRecord]:
        return [*self.iter(user_id=user_id, status=status)]

    def iter(
        self, *, user_id: str | None = None, status: str | None = None, batch: int = 500
    ) -> Iterator[ConnectionRecord]:
        """Every matching connection, newest refresh first, read in pages so memory stays flat."""
        query = _filtered(select(t), user_id, status).order_by(t.c.last_token_refresh_at.desc().nulls_last(), t.c.id)
        offset = 0
        while rows := self._page(query, offset, batch):
            yield from rows
            offset += batch

    def _page(self, query: Select[Any], offset: int, limit: int) -> builtins.list[ConnectionRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(query.offset(offset).limit(limit)).all()
        return [ConnectionRecord.from_row(row) for row in rows]

    def count(self, *, status: str | None = None) -> int:
        query = _filtered(select(func.count()).select_from(t), None, status)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- connecting ----------------------------------------------------------------------------------
    def upsert_connected(
        self,
        *,
        user_id: str,
        account_id: str,
        account_name: str | None,
        encrypt: EncryptPair,
        expires_at: datetime,
        now: datetime,
    ) -> int:
        """Insert or reconnect (user, account) with a fresh token pair, in one transaction."""
        fresh = {
            "status": Status.CONNECTED.value,
            "last_error": None,
            "consecutive_failures": 0,
            "next_attempt_at": None,
            "token_expires_at": expires_at,
            "last_token_refresh_at": now,
            "updated_at": now,
            **_RELEASE,
        }
        if account_name is not None:
            fresh["account_name"] = account_name
        with self._engine.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(t).values(user_id=user_id, account_id=account_id, created_at=now, **fresh)
            stmt = stmt.on_conflict_do_update(index_elements=[t.c.user_id, t.c.account_id], set_=fresh)
            connection_id = int(conn.execute(stmt.returning(t.c.id)).scalar_one())
            access, refresh = encrypt(connection_id)
            conn.execute(
                update(t)
                .where(t.c.id == connection_id)
                .values(access_token=access, refresh_token=refresh, token_version=t.c.token_version + 1)
            )
        return connection_id

    def set_account_name(self, connection_id: int, name: str, now: datetime) -> None:
        self._update(t.c.id == connection_id, account_name=name, updated_at=now)

    def disconnect(self, connection_id: int, now: datetime) -> bool:
        """Forget the tokens; the row stays so the app can show what happened."""
        return self._update(
            t.c.id == connection_id,
            status=Status.DISCONNECTED.value,
            access_token=None,
            refresh_token=None,
            token_expires_at=None,
            token_version=t.c.token_version + 1,
            updated_at=now,
            **_RELEASE,
        )

    # -- leases --------------------------------------------------------------------------------------
    def acquire(self, connection_id: int, *, owner: str, now: datetime, until: datetime) -> ConnectionRecord | None:
        """Take the lease of one connection, or None if another owner holds a live one."""
        stmt = (
            update(t)
            .where(t.c.id == connection_id, or_(_lease_free(now), t.c.acquired_by == owner))
            .values(acquired_by=owner, acquired_until=until)
            .returning(*t.c)
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).first()
        return ConnectionRecord.from_row(row) if row else None

    def claim_batch(
        self,
        *,
        run_id: int,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        connection_id: int | None = None,
    ) -> builtins.list[ConnectionRecord]:
        """Lease up to ``limit`` refreshable connections this run has not claimed yet.

        One statement, so it is atomic on SQLite too; on PostgreSQL ``SKIP LOCKED`` lets replicas claim
        side by side without waiting on each other's rows.
        """
        candidates = (
            select(t.c.id)
            .where(
                t.c.status.in_([s.value for s in REFRESHABLE]),
                _lease_free(now),
                _not_done_in(run_id),
            )
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if connection_id is not None:
            candidates = candidates.where(t.c.id == connection_id)
        stmt = (
            update(t)
            .where(t.c.id.in_(candidates.scalar_subquery()), _lease_free(now))
            .values(acquired_by=owner, acquired_until=until, last_run_id=run_id)
            .returning(*t.c)
        )
        with self._engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return sorted((ConnectionRecord.from_row(row) for row in rows), key=lambda r: r.id)

    def release(self, connection_id: int, owner: str, *, tally: Tally | None = None) -> None:
        self._update(and_(t.c.id == connection_id, t.c.acquired_by == owner), tally=tally, **_RELEASE)

    def unclaim(self, connection_id: int, owner: str) -> None:
        """Give a claimed connection back untouched (a stopping worker): the run will claim it again."""
        self._update(and_(t.c.id == connection_id, t.c.acquired_by == owner), last_run_id=None, **_RELEASE)

    def count_in_flight(self, run_id: int) -> int:
        """Connections claimed for this run and not yet released: the run is over when this is zero.

        Leases that ran out count too, until another participant takes them over.
        """
        query = select(func.count()).where(t.c.last_run_id == run_id, t.c.acquired_until.is_not(None))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- outcomes (compare-and-swap on token_version) -------------------------------------------------
    def save_tokens(
        self, connection_id: int, *, version: int, tokens: NewTokens, now: datetime, tally: Tally | None = None
    ) -> bool:
        """Commit a refreshed pair if nobody saved another since ``version`` was read."""
        return self._update(
            _at_version(connection_id, version),
            tally=tally,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            token_expires_at=tokens.expires_at,
            last_token_refresh_at=now,
            status=Status.CONNECTED.value,
            last_error=None,
            consecutive_failures=0,
            next_attempt_at=None,
            token_version=version + 1,
            updated_at=now,
            **_RELEASE,
        )

    def mark_expired(
        self, connection_id: int, *, version: int, error: str, now: datetime, tally: Tally | None = None
    ) -> bool:
        """Dead refresh token: the tokens stay (useless but harmless) until the merchant reconnects."""
        return self._update(
            _at_version(connection_id, version),
            tally=tally,
            status=Status.EXPIRED.value,
            last_error=error,
            next_attempt_at=None,
            updated_at=now,
            **_RELEASE,
        )

    def mark_error(
        self,
        connection_id: int,
        *,
        version: int,
        error: str,
        retry_at: datetime,
        now: datetime,
        tally: Tally | None = None,
    ) -> bool:
        """A transient failure: tokens kept, retried no sooner than ``retry_at``."""
        return self._update(
            _at_version(connection_id, version),
            tally=tally,
            status=Status.ERROR.value,
            last_error=error,
            consecutive_failures=t.c.consecutive_failures + 1,
            next_attempt_at=retry_at,
            updated_at=now,
            **_RELEASE,
        )

    def _update(self, where: ColumnElement[bool], *, tally: Tally | None = None, **values: object) -> bool:
        with self._engine.begin() as conn:
            changed = conn.execute(update(t).where(where).values(**values)).rowcount > 0
            if changed and tally is not None:
                _count(conn, tally)
            return changed


def _count(conn: Connection, tally: Tally) -> None:
    assert tally.outcome in _TALLIES, tally.outcome
    column = runs_table.c[tally.outcome]
    conn.execute(
        update(runs_table)
        .where(runs_table.c.id == tally.run_id)
        .values({column: column + 1, runs_table.c.total: runs_table.c.total + 1})
    )


def _not_done_in(run_id: int) -> ColumnElement[bool]:
    """Not yet handled by this run. A claim marks the row with the run and a lease; every outcome releases
    the lease. So a row marked with the run whose lease is still set (and, with ``_lease_free``, ran out)
    was claimed by a participant that died: it is claimed again (invariant 5, nothing lost)."""
    return or_(t.c.last_run_id.is_(None), t.c.last_run_id != run_id, t.c.acquired_until.is_not(None))


def _at_version(connection_id: int, version: int) -> ColumnElement[bool]:
    return and_(t.c.id == connection_id, t.c.token_version == version)


def _filtered(query: Select[Any], user_id: str | None, status: str | None) -> Select[Any]:
    if user_id is not None:
        query = query.where(t.c.user_id == user_id)
    if status is not None:
        query = query.where(t.c.status == status)
    return query


__all__ = ["ConnectionRepo", "EncryptPair", "NewTokens", "Tally"]

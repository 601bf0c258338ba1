"""All SQL on ``lightspeed_connections``: upsert, fenced leases, one-row claims and fenced outcome writes.

A lease (``acquired_by``/``acquired_until``/``lease_token``) says who may talk to Lightspeed about a
connection right now. Each acquisition gets its own token, and ends by the database's clock. An outcome
(save, expired, error, release) lands only under the lease token it was given and the ``token_version`` it
read: a refresher whose lease ran out cannot write over what a newer lease holder did (invariant 1).
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, and_, bindparam, case, func, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from . import dialect
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


@dataclass(frozen=True)
class Lease:
    """One acquisition of a connection's lease: the row as leased, and the fencing token of this acquisition.

    ``expires_at_monotonic`` is when the lease runs out on this process's monotonic clock: the database set
    ``acquired_until`` to its own now plus the lease, and that now came after ``time.monotonic()`` was read
    here, so the local deadline errs early, never late, whatever either wall clock says.
    """

    record: ConnectionRecord
    token: str = field(repr=False)
    expires_at_monotonic: float

    def seconds_left(self) -> float:
        return self.expires_at_monotonic - time.monotonic()


@dataclass(frozen=True)
class _LeaseValues:
    token: str
    started: float
    seconds: float
    columns: dict[str, Any]

    def lease(self, row: Row[Any]) -> Lease:
        return Lease(ConnectionRecord.from_row(row), self.token, self.started + self.seconds)


def _lease_values(conn: Connection, owner: str, lease: timedelta) -> _LeaseValues:
    """What an acquisition writes: a fresh token, and an end by the database's clock."""
    token, seconds = secrets.token_hex(16), lease.total_seconds()
    columns = {"acquired_by": owner, "acquired_until": dialect.now_plus(conn, seconds), "lease_token": token}
    return _LeaseValues(token, time.monotonic(), seconds, columns)


def _lease_free(conn: Connection) -> ColumnElement[bool]:
    return or_(t.c.acquired_until.is_(None), t.c.acquired_until < dialect.now(conn))


def _claimable(conn: Connection, run_id: int) -> ColumnElement[bool]:
    return and_(_left_in(run_id), _lease_free(conn))


def _left_in(run_id: int) -> ColumnElement[bool]:
    """Refreshable and not yet handled by this run (whether or not someone holds it now)."""
    return and_(t.c.status.in_([s.value for s in REFRESHABLE]), _not_done_in(run_id))


def _run_is_running(run_id: int) -> ColumnElement[bool]:
    """A run that failed (``invalid_client``) or was declared interrupted hands out no more claims."""
    running = select(runs_table.c.id).where(runs_table.c.id == run_id, runs_table.c.status == "running")
    return running.exists()


_RELEASE = {"acquired_by": None, "acquired_until": None, "lease_token": None, "claim_run_id": None}
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
            stmt = dialect.insert(conn, t).values(user_id=user_id, account_id=account_id, created_at=now, **fresh)
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

    # -- leases --------------------------------------------------------------------------------------
    def acquire(self, connection_id: int, *, owner: str, lease: timedelta) -> Lease | None:
        """Take the lease of one connection if nobody holds a live one; None otherwise.

        Never "the same owner may enter again": every acquisition gets its own token. A lease taken over
        from a run's expired claim hands the row back to that run (``last_run_id`` cleared), so the run
        claims and counts it again.
        """
        with self._engine.begin() as conn:
            values = _lease_values(conn, owner, lease)
            taken_over = case((t.c.claim_run_id.is_not(None), None), else_=t.c.last_run_id)
            stmt = (
                update(t)
                .where(t.c.id == connection_id, _lease_free(conn))
                .values(last_run_id=taken_over, claim_run_id=None, **values.columns)
                .returning(*t.c)
            )
            row = conn.execute(stmt).first()
        return values.lease(row) if row else None

    def claim_next(
        self, *, run_id: int, owner: str, lease: timedelta, after_id: int = 0, connection_id: int | None = None
    ) -> Lease | None:
        """Lease the next refreshable connection (by id, above ``after_id``) this run has not handled yet.

        One row, right before its refresh: no row waits leased behind others. One statement, so it is
        atomic on SQLite too; on PostgreSQL ``SKIP LOCKED`` lets replicas claim side by side.
        """
        with self._engine.begin() as conn:
            candidates = (
                select(t.c.id)
                .where(t.c.id > after_id, _claimable(conn, run_id), _run_is_running(run_id))
                .order_by(t.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if connection_id is not None:
                candidates = candidates.where(t.c.id == connection_id)
            values = _lease_values(conn, owner, lease)
            stmt = (
                update(t)
                .where(t.c.id == candidates.scalar_subquery(), _lease_free(conn))
                .values(last_run_id=run_id, claim_run_id=run_id, **values.columns)
                .returning(*t.c)
            )
            row = conn.execute(stmt).first()
        return values.lease(row) if row else None

    def has_claimable(self, run_id: int, connection_id: int | None = None) -> bool:
        """Whether ``claim_next`` would find a row now (a cheap look before taking a pacing slot)."""
        with self._engine.connect() as conn:
            query = select(t.c.id).where(_claimable(conn, run_id), _run_is_running(run_id)).limit(1)
            if connection_id is not None:
                query = query.where(t.c.id == connection_id)
            return conn.execute(query).first() is not None

    def lease_live(self, connection_id: int) -> bool:
        """Whether someone holds a live lease on the connection, by the database's clock."""
        with self._engine.connect() as conn:
            query = select(t.c.id).where(t.c.id == connection_id, not_(_lease_free(conn)))
            return conn.execute(query).first() is not None

    def skip_in_backoff(self, run_id: int, now: datetime) -> int:
        """Mark every connection still backing off as handled by this run, counted ``skipped`` in the same
        transaction: an automatic run spends neither a pacing slot nor a lease on them."""
        with self._engine.begin() as conn:
            # An expired lease on such a row ends here too (its holder is gone and can no longer write): the
            # row is handled and counted once, by this statement.
            backing_off = and_(_claimable(conn, run_id), t.c.next_attempt_at > now)
            stmt = update(t).where(backing_off).values(last_run_id=run_id, **_RELEASE)
            skipped = conn.execute(stmt).rowcount
            if skipped:
                _count(conn, Tally(run_id, "skipped"), skipped)
        return int(skipped)

    def release(self, connection_id: int, lease_token: str, *, tally: Tally | None = None) -> bool:
        """End our lease, changing nothing else; False if it was no longer ours."""
        return self._update(_ours(connection_id, lease_token), tally=tally, **_RELEASE)

    def unclaim(self, connection_id: int, lease_token: str) -> None:
        """Give a claimed connection back untouched (a stopping worker): the run will claim it again."""
        self._update(_ours(connection_id, lease_token), last_run_id=None, **_RELEASE)

    def count_in_flight(self, run_id: int, connection_id: int | None = None) -> int:
        """Connections the run still waits for: its own claims not yet released, and connections it has not
        handled that someone else holds a lease on (an on-demand refresh); once freed, the run claims them.

        Leases that ran out count too, until they are taken over.
        """
        held = and_(t.c.acquired_until.is_not(None), or_(t.c.claim_run_id == run_id, _left_in(run_id)))
        query = select(func.count()).where(held)
        if connection_id is not None:  # a run of one connection waits for that one only
            query = query.where(t.c.id == connection_id)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def key_ids(self, *, refreshable_only: bool = False) -> dict[str, int]:
        """How many connections hold tokens under each key id (``lk1:<kid>:…``), for the key checks."""
        kid = func.substr(t.c.refresh_token, 5, 8)
        query = select(kid, func.count()).where(t.c.refresh_token.is_not(None)).group_by(kid)
        if refreshable_only:
            query = query.where(t.c.status.in_([s.value for s in REFRESHABLE]))
        with self._engine.connect() as conn:
            return {str(key): int(count) for key, count in conn.execute(query)}

    # -- outcomes (under our lease token, compare-and-swap on token_version) ---------------------------
    def save_tokens(
        self,
        connection_id: int,
        *,
        lease_token: str,
        version: int,
        tokens: NewTokens,
        now: datetime,
        tally: Tally | None = None,
    ) -> bool:
        """Commit a refreshed pair if our lease still stands and nobody saved another since ``version``."""
        return self._update(
            _fenced(connection_id, lease_token, version),
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
        self,
        connection_id: int,
        *,
        lease_token: str,
        version: int,
        error: str,
        now: datetime,
        tally: Tally | None = None,
    ) -> bool:
        """Dead refresh token: the tokens stay (useless but harmless) until the merchant reconnects."""
        return self._update(
            _fenced(connection_id, lease_token, version),
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
        lease_token: str,
        version: int,
        error: str,
        retry_at: datetime,
        now: datetime,
        tally: Tally | None = None,
    ) -> bool:
        """A failure of this connection alone: tokens kept, retried no sooner than ``retry_at``."""
        return self._update(
            _fenced(connection_id, lease_token, version),
            tally=tally,
            status=Status.ERROR.value,
            last_error=error,
            consecutive_failures=t.c.consecutive_failures + 1,
            next_attempt_at=retry_at,
            updated_at=now,
            **_RELEASE,
        )

    def disconnect(self, connection_id: int, *, lease_token: str, now: datetime) -> bool:
        """Forget the tokens under our lease; the row stays so the app can show what happened."""
        return self._update(
            _ours(connection_id, lease_token),
            status=Status.DISCONNECTED.value,
            access_token=None,
            refresh_token=None,
            token_expires_at=None,
            token_version=t.c.token_version + 1,
            updated_at=now,
            **_RELEASE,
        )

    def _update(self, where: ColumnElement[bool], *, tally: Tally | None = None, **values: object) -> bool:
        with self._engine.begin() as conn:
            changed = conn.execute(update(t).where(where).values(**values)).rowcount > 0
            if changed and tally is not None:
                _count(conn, tally)
            return changed


def _count(conn: Connection, tally: Tally, n: int = 1) -> None:
    assert tally.outcome in _TALLIES, tally.outcome
    column = runs_table.c[tally.outcome]
    conn.execute(
        update(runs_table)
        .where(runs_table.c.id == tally.run_id)
        .values({column: column + n, runs_table.c.total: runs_table.c.total + n})
    )


def _not_done_in(run_id: int) -> ColumnElement[bool]:
    """Not yet handled by this run. A claim marks the row with the run (``last_run_id``) and as the run's claim
    (``claim_run_id``); every outcome ends the claim. So a row still claimed for the run (and, with
    ``_lease_free``, whose lease ran out) belongs to a participant that died: it is claimed again (invariant 5,
    nothing lost). A plain lease (an on-demand refresh) on a handled row is no claim: the row stays handled."""
    return or_(t.c.last_run_id.is_(None), t.c.last_run_id != run_id, t.c.claim_run_id == run_id)


def _ours(connection_id: int, lease_token: str) -> ColumnElement[bool]:
    return and_(t.c.id == connection_id, t.c.lease_token == lease_token)


def _fenced(connection_id: int, lease_token: str, version: int) -> ColumnElement[bool]:
    """Our lease still stands (nobody acquired since), and the tokens are still the ones we read."""
    return and_(_ours(connection_id, lease_token), t.c.token_version == version)


def _filtered(query: Select[Any], user_id: str | None, status: str | None) -> Select[Any]:
    if user_id is not None:
        query = query.where(t.c.user_id == user_id)
    if status is not None:
        query = query.where(t.c.status == status)
    return query


__all__ = ["ConnectionRepo", "EncryptPair", "Lease", "NewTokens", "Tally"]

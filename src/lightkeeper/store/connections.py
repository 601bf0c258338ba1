"""All SQL on ``lightspeed_connections``: upsert, fenced leases, one-row claims and fenced outcome writes.

A lease (``acquired_by``/``acquired_until``/``lease_token``) says who may talk to Lightspeed about a
connection right now. Each acquisition gets its own token, and ends by the database's clock. An outcome
(save, expired, error, release) lands only under the lease token it was given and the ``token_version`` it
read: a refresher whose lease ran out cannot write over what a newer lease holder did (invariant 1).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    case,
    func,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from . import dialect, events
from .events import Event
from .keyscan import kid_of
from .leases import RELEASE as _RELEASE
from .leases import (
    Lease,
    LeaseGrant,
    claim_statement,
    claimable,
    fenced,
    lease_free,
    left_in,
    ours,
    refreshable_and_due,
    run_is_running,
)
from .prepared import Prepared, transaction
from .records import REFRESHABLE, ConnectionRecord, EventType, Status
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
class StatusSummary:
    """Connections per status, and when the least recently refreshed refreshable one was refreshed."""

    counts: dict[str, int]
    oldest_refresh: datetime | None
    #: Connections per (provider, status).
    by_provider: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class NewTokens:
    """Ciphertexts and expiry of a token pair about to be saved."""

    access_token: str
    refresh_token: str
    expires_at: datetime


#: Built once: ``fresh_token`` reads a row on every call, and building (and cache-keying) a new statement
#: each time cost about as much as running it on SQLite.
_BY_ID = select(t).where(t.c.id == bindparam("connection_id"))


class ConnectionRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: The claim statement of each shape (one connection or all, due-based or not), built once.
        self._claims: dict[tuple[bool, bool], Prepared] = {}
        # A refresh's own statements (its claim above, its save and its run's tally) skip SQLAlchemy's
        # per-execution work: see ``prepared``.
        # Every process writes the webhook events of the changes it makes, whether or not it delivers them:
        # the save returns the row's alert, and an alerted row gets its ``connection.recovered`` (rare).
        self._save = Prepared(engine, _SAVE_RETURNING_ALERT, returns=events.EVENT_COLUMNS)
        self._recovered = events.RawRecovery(engine)
        self._tallies = {outcome: Prepared(engine, statement) for outcome, statement in _TALLY.items()}

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

    def count_refreshable(self, due_before: datetime | None = None) -> int:
        """Refreshable connections (``connected``, ``error``), or those last refreshed before ``due_before``."""
        query = select(func.count()).where(refreshable_and_due(due_before))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def status_summary(self) -> StatusSummary:
        """Connections per status and the oldest ``last_token_refresh_at`` of refreshable ones: one grouped
        query, for the metrics gauges."""
        columns = (t.c.provider, t.c.status, func.count(), func.min(t.c.last_token_refresh_at))
        query = select(*columns).group_by(t.c.provider, t.c.status)
        refreshable = {s.value for s in REFRESHABLE}
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        oldest = [row[3] for row in rows if row[1] in refreshable and row[3] is not None]
        counts: dict[str, int] = {}
        for row in rows:
            counts[str(row[1])] = counts.get(str(row[1]), 0) + int(row[2])
        by_provider = {(str(row[0]), str(row[1])): int(row[2]) for row in rows}
        return StatusSummary(counts, min(oldest, default=None), by_provider)

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
        provider: str = "r-series",
        strict_rotation: bool = False,
    ) -> int:
        """Insert or reconnect (user, provider, account) with a fresh token pair, in one transaction."""
        fresh = {
            "status": Status.CONNECTED.value,
            "last_error": None,
            "consecutive_failures": 0,
            "next_attempt_at": None,
            "token_expires_at": expires_at,
            "last_token_refresh_at": now,
            "updated_at": now,
            "error_since": None,
            **_RELEASE,
        }
        if account_name is not None:
            fresh["account_name"] = account_name
        with self._engine.begin() as conn:
            row_id = {"user_id": user_id, "provider": provider, "account_id": account_id}
            stmt = dialect.insert(conn, t).values(**row_id, strict_rotation=strict_rotation, created_at=now, **fresh)
            stmt = stmt.on_conflict_do_update(index_elements=[t.c.user_id, t.c.provider, t.c.account_id], set_=fresh)
            row = conn.execute(stmt.returning(*events.EVENT_COLUMNS)).one()
            connection_id = int(row.id)
            events.record_recovered(conn, row, now)  # a reconnect after an alert
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
        grant = LeaseGrant.new(lease.total_seconds())
        with self._engine.begin() as conn:
            taken_over = case((t.c.claim_run_id.is_not(None), None), else_=t.c.last_run_id)
            stmt = (
                update(t)
                .where(t.c.id == connection_id, lease_free(dialect.now(conn)))
                .values(last_run_id=taken_over, claim_run_id=None, **grant.columns(conn, owner))
                .returning(*t.c)
            )
            row = conn.execute(stmt).first()
        return grant.lease(row._mapping) if row else None

    def claim_next(
        self,
        *,
        run_id: int,
        owner: str,
        lease: timedelta,
        after_id: int = 0,
        connection_id: int | None = None,
        due_before: datetime | None = None,
        provider: str = "r-series",
    ) -> Lease | None:
        """Lease the next refreshable connection of ``provider`` (by id, above ``after_id``) this run has not
        handled yet (one provider at a time: each provider's client has its own pacing).

        One row, right before its refresh: no row waits leased behind others. One statement, so it is
        atomic on SQLite too; on PostgreSQL ``SKIP LOCKED`` lets replicas claim side by side.
        """
        grant = LeaseGrant.new(lease.total_seconds())
        params = {"run_id": run_id, "after_id": after_id, "owner": owner, "lease_token": grant.token}
        params["provider"] = provider
        params |= {"connection_id": connection_id, "due_before": due_before}
        params |= dialect.time_params(self._engine, lease_s=grant.seconds)
        claim = self._claim_statement(one=connection_id is not None, due=due_before is not None)
        with transaction(self._engine) as cursor:
            row = claim.first(cursor, params)
        return grant.lease(row) if row else None

    def _claim_statement(self, *, one: bool, due: bool) -> Prepared:
        key = (one, due)
        if (claim := self._claims.get(key)) is None:
            statement = claim_statement(self._engine, one=one, due=due)
            claim = self._claims.setdefault(key, Prepared(self._engine, statement, returns=t.c))
        return claim

    def has_claimable(
        self,
        run_id: int,
        connection_id: int | None = None,
        *,
        due_before: datetime | None = None,
        provider: str | None = None,
    ) -> bool:
        """Whether ``claim_next`` would find a row now (of ``provider``, or any), a cheap look before taking a
        pacing slot."""
        with self._engine.connect() as conn:
            query = select(t.c.id).where(claimable(dialect.now(conn), run_id, due_before), run_is_running(run_id))
            query = query.limit(1)
            if provider is not None:
                query = query.where(t.c.provider == provider)
            if connection_id is not None:
                query = query.where(t.c.id == connection_id)
            return conn.execute(query).first() is not None

    def lease_live(self, connection_id: int) -> bool:
        """Whether someone holds a live lease on the connection, by the database's clock."""
        with self._engine.connect() as conn:
            query = select(t.c.id).where(t.c.id == connection_id, not_(lease_free(dialect.now(conn))))
            return conn.execute(query).first() is not None

    def skip_in_backoff(self, run_id: int, now: datetime, *, due_before: datetime | None = None) -> int:
        """Mark every connection still backing off as handled by this run, counted ``skipped`` in the same
        transaction: an automatic run spends neither a pacing slot nor a lease on them."""
        with self._engine.begin() as conn:
            # An expired lease on such a row ends here too (its holder is gone and can no longer write): the
            # row is handled and counted once, by this statement.
            backing_off = and_(claimable(dialect.now(conn), run_id, due_before), t.c.next_attempt_at > now)
            stmt = update(t).where(backing_off).values(last_run_id=run_id, **_RELEASE)
            skipped = conn.execute(stmt).rowcount
            if skipped:
                _count(conn, Tally(run_id, "skipped"), skipped)
        return int(skipped)

    def release(self, connection_id: int, lease_token: str, *, tally: Tally | None = None) -> bool:
        """End our lease, changing nothing else; False if it was no longer ours."""
        return self._update(ours(connection_id, lease_token), tally=tally, **_RELEASE)

    def unclaim(self, connection_id: int, lease_token: str) -> None:
        """Give a claimed connection back untouched (a stopping worker): the run will claim it again."""
        self._update(ours(connection_id, lease_token), last_run_id=None, **_RELEASE)

    def count_in_flight(
        self,
        run_id: int,
        connection_id: int | None = None,
        *,
        due_before: datetime | None = None,
        providers: Collection[str] = (),
    ) -> int:
        """Connections the run still waits for: its own claims not yet released, and connections it has not
        handled that someone else holds a lease on (an on-demand refresh); once freed, the run claims them.
        With ``providers``, also the free connections of those providers it has not handled yet.

        Leases that ran out count too, until they are taken over. One statement sees all of these at once:
        a participant that first looked for free rows and then for held ones could miss a row whose on-demand
        holder let go in between, and close the run without it.
        """
        leased = t.c.acquired_until.is_not(None)
        unhandled = left_in(run_id, due_before)
        if providers:
            unhandled = and_(unhandled, or_(leased, t.c.provider.in_(sorted(providers))))
        else:
            unhandled = and_(unhandled, leased)
        query = select(func.count()).where(or_(and_(leased, t.c.claim_run_id == run_id), unhandled))
        if connection_id is not None:  # a run of one connection waits for that one only
            query = query.where(t.c.id == connection_id)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def key_ids(self, *, refreshable_only: bool = False) -> dict[str, int]:
        """How many connections hold tokens under each key id (``lk1:<kid>:…``), for the key checks."""
        kid = kid_of(t.c.refresh_token)
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
        params = {"s_id": connection_id, "s_lease": lease_token, "s_version": version, "s_next": version + 1}
        params |= {"s_access": tokens.access_token, "s_refresh": tokens.refresh_token}
        params |= {"s_expires": tokens.expires_at, "s_now": now}
        with transaction(self._engine) as cursor:
            row = self._save.first(cursor, params)
            if changed := row is not None:  # a refresh after an alert tells the host app the connection recovered
                self._recovered.record(cursor, row, now)
            if changed and tally is not None:
                self._tallies[tally.outcome].run(cursor, {"t_run": tally.run_id, "t_n": 1})
        return changed

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
            fenced(connection_id, lease_token, version),
            tally=tally,
            event=partial(events.record_event, event_type=EventType.EXPIRED, now=now),
            error_since=None,
            alert=events.ALERT_EXPIRED,
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
            fenced(connection_id, lease_token, version),
            tally=tally,
            status=Status.ERROR.value,
            error_since=events.error_since(now),
            last_error=error,
            consecutive_failures=t.c.consecutive_failures + 1,
            next_attempt_at=retry_at,
            updated_at=now,
            **_RELEASE,
        )

    def disconnect(self, connection_id: int, *, lease_token: str, now: datetime) -> bool:
        """Forget the tokens under our lease; the row stays so the app can show what happened."""
        return self._update(
            ours(connection_id, lease_token),
            status=Status.DISCONNECTED.value,
            access_token=None,
            refresh_token=None,
            token_expires_at=None,
            token_version=t.c.token_version + 1,
            updated_at=now,
            **_RELEASE,
        )

    def reencrypt(
        self, connection_id: int, *, lease_token: str, version: int, access_token: str | None, refresh_token: str | None
    ) -> bool:
        """New ciphertexts of the same token pair (a key rotation) under our lease, ending it. ``token_version``
        stays: it counts token pairs, and this is the same pair (nothing refreshed, nothing to report)."""
        fence = fenced(connection_id, lease_token, version)
        return self._update(fence, access_token=access_token, refresh_token=refresh_token, **_RELEASE)

    def _update(
        self, where: ColumnElement[bool], *, tally: Tally | None = None, event: Event | None = None, **values: object
    ) -> bool:
        with self._engine.begin() as conn:
            changed = events.update_with_event(conn, update(t).where(where).values(**values), event)
            if changed and tally is not None:
                _count(conn, tally)
            return changed


def _count(conn: Connection, tally: Tally, n: int = 1) -> None:
    conn.execute(_TALLY[tally.outcome], {"t_run": tally.run_id, "t_n": n})


def _tally_statement(outcome: str) -> Update:
    column, total, n = runs_table.c[outcome], runs_table.c.total, bindparam("t_n", type_=Integer)
    counted = {column: column + n, total: total + n}
    return update(runs_table).where(runs_table.c.id == bindparam("t_run")).values(counted)


def _save_statement() -> Update:
    """``save_tokens``' UPDATE with bind parameters (one per refresh: built once, see ``_BY_ID``)."""
    now = bindparam("s_now", type_=t.c.updated_at.type)
    pair: dict[str, Any] = {"access_token": bindparam("s_access"), "refresh_token": bindparam("s_refresh")}
    fresh = {"status": Status.CONNECTED.value, "last_error": None, "consecutive_failures": 0, "next_attempt_at": None}
    return (
        update(t)
        .where(fenced(bindparam("s_id"), bindparam("s_lease"), bindparam("s_version")))
        .values(**pair, token_expires_at=bindparam("s_expires", type_=t.c.token_expires_at.type))
        .values(token_version=bindparam("s_next"), last_token_refresh_at=now, updated_at=now, error_since=None)
        .values(**fresh, **_RELEASE)
    )


#: Run tallies and saves happen once per refresh: their statements are built once.
_TALLY = {outcome: _tally_statement(outcome) for outcome in _TALLIES}
_SAVE = _save_statement()
_SAVE_RETURNING_ALERT = _SAVE.returning(*events.EVENT_COLUMNS)


def _filtered(query: Select[Any], user_id: str | None, status: str | None) -> Select[Any]:
    if user_id is not None:
        query = query.where(t.c.user_id == user_id)
    if status is not None:
        query = query.where(t.c.status == status)
    return query


__all__ = ["ConnectionRepo", "EncryptPair", "Lease", "NewTokens", "Tally"]

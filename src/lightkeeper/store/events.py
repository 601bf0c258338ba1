"""All SQL on ``lightkeeper_events``, the durable outbox of webhook alerts to the host app.

An event is written by :func:`record_event` inside the transaction of the connection change it reports
(``store/connections.py`` calls it), so a change is never committed without its event nor an event without
its change. Delivery claims one due event at a time under a lease fenced like a connection's: a fresh token
per acquisition, ended by the database's clock, and every outcome written only under that token, so two
processes never send the same attempt. The attempt is counted when it is claimed, so an attempt cut short
by a crash still counts, and its number names it in the ``X-Lightkeeper-Attempt`` header.
"""

from __future__ import annotations

import builtins
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, Row, Update, bindparam, case, delete, func, insert, literal, select, update
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.sql.elements import ColumnElement

from . import dialect
from .dialect import UTCDateTime
from .leases import LeaseGrant, lease_free
from .prepared import Prepared
from .records import EventRecord, EventStatus, EventType, Status
from .schema import connections as c
from .schema import events as t

#: The event document's version: receivers may branch on it if the shape ever changes.
EVENT_VERSION = 1
#: What an event says about its connection (and the connection's alert), read with ``UPDATE … RETURNING``
#: of the change itself.
EVENT_COLUMNS = (
    c.c.id,
    c.c.user_id,
    c.c.provider,
    c.c.account_id,
    c.c.account_name,
    c.c.status,
    c.c.last_error,
    c.c.alert,
)
#: ``lightspeed_connections.alert``: the last alert the host app was sent and not yet recovered from.
ALERT_EXPIRED = "expired"
ALERT_ERROR = "error"
#: At most this many connections are flagged by one error sweep (the next sweep takes the rest).
SWEEP_BATCH = 100
#: At most this many events are given up, and this many deleted, by one tidying round.
TIDY_BATCH = 500
#: ``last_error`` of an event given up while nobody had tried to send it.
GAVE_UP = "not delivered within NOTIFY_GIVE_UP_S: no serve or worker with NOTIFY_WEBHOOK_URL sent it"


@dataclass(frozen=True)
class EventLease:
    """One acquisition of an event's delivery lease (see ``connections.Lease`` for the monotonic deadline)."""

    record: EventRecord
    token: str = field(repr=False)
    expires_at_monotonic: float

    @property
    def attempt(self) -> int:
        """This attempt's number, counted when it was claimed."""
        return self.record.attempts

    def seconds_left(self) -> float:
        return self.expires_at_monotonic - time.monotonic()


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(16)}"


def event_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``, as every view writes a time (``views.rfc3339``)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(event_id: str, event_type: EventType, row: Row[Any], now: datetime) -> str:
    """The exact JSON the receiver gets, from the connection's ``EVENT_COLUMNS``: never a token or a link."""
    document = {
        "id": event_id,
        "type": event_type.value,
        "version": EVENT_VERSION,
        "time": event_time(now),
        "connection_id": row.id,
        "user_id": row.user_id,
        "provider": row.provider,
        "account_id": row.account_id,
        "account_name": row.account_name,
        "status": row.status,
        "last_error": row.last_error,
    }
    return json.dumps(document, separators=(",", ":"))


def event_values(row: Any, event_type: EventType, now: datetime) -> dict[str, Any]:
    """The outbox row of a new event about ``row`` (``EVENT_COLUMNS``, by attribute), due at once."""
    event_id = new_event_id()
    return {
        "id": event_id,
        "type": event_type.value,
        "version": EVENT_VERSION,
        "connection_id": row.id,
        "body": event_body(event_id, event_type, row, now),
        "status": EventStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def record_event(conn: Connection, row: Row[Any], event_type: EventType, now: datetime) -> str:
    """Add an event about ``row`` (``EVENT_COLUMNS``) to the outbox in the caller's transaction, due at once."""
    values = event_values(row, event_type, now)
    conn.execute(insert(t).values(**values))
    return str(values["id"])


def record_recovered(conn: Connection, row: Row[Any], now: datetime) -> str | None:
    """``connection.recovered`` for a row now ``connected``, if the host app was alerted (expired or error)
    and not told since; the common case (no alert) costs no statement."""
    if row.alert is None:
        return None
    conn.execute(update(c).where(c.c.id == row.id).values(alert=None))
    return record_event(conn, row, EventType.RECOVERED, now)


class RawRecovery:
    """``record_recovered`` on a driver cursor, for the save of a refresh (``prepared``): the common case (no
    alert) costs nothing beyond the save's RETURNING; an alerted row gets its flag cleared and its event."""

    def __init__(self, engine: Engine) -> None:
        self._clear = Prepared(engine, update(c).where(c.c.id == bindparam("r_id")).values(alert=None))
        columns = {name: bindparam(f"e_{name}", type_=t.c[name].type) for name in _INSERTED}
        self._insert = Prepared(engine, insert(t).values(columns))

    def record(self, cursor: DBAPICursor, row: Mapping[str, Any], now: datetime) -> str | None:
        if row["alert"] is None:
            return None
        self._clear.run(cursor, {"r_id": row["id"]})
        values = event_values(SimpleNamespace(**row), EventType.RECOVERED, now)
        self._insert.run(cursor, {f"e_{name}": values[name] for name in _INSERTED})
        return str(values["id"])


_INSERTED = ("id", "type", "version", "connection_id", "body", "status", "attempts", "next_attempt_at", "created_at")


#: Adds the outbox event of a connection's change, in its transaction, given the changed row (``EVENT_COLUMNS``).
Event = Callable[[Connection, Row[Any]], object]


def update_with_event(conn: Connection, stmt: Update, event: Event | None) -> bool:
    """Run an UPDATE of ``lightspeed_connections`` and, if it changed a row, add ``event`` for that row (one row:
    the fenced writes change one); whether it changed one."""
    if event is None:
        return conn.execute(stmt).rowcount > 0
    row = conn.execute(stmt.returning(*EVENT_COLUMNS)).first()
    if row is not None:
        event(conn, row)
    return row is not None


def error_since(now: datetime) -> ColumnElement[datetime]:
    """When a connection being marked ``error`` entered it: the first error of a streak, else ``now``.
    ``connection.error`` waits NOTIFY_ERROR_AFTER_S from there."""
    since = literal(now, UTCDateTime)
    return case((c.c.status == Status.ERROR.value, func.coalesce(c.c.error_since, since)), else_=since)


_RELEASE = {"acquired_by": None, "acquired_until": None, "lease_token": None}


class EventsRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- reading -------------------------------------------------------------------------------------
    def get(self, event_id: str) -> EventRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == event_id)).first()
        return EventRecord.from_row(row) if row else None

    def list(self, *, limit: int = 50, status: str | None = None) -> builtins.list[EventRecord]:
        """The newest events first."""
        query = select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(t.c.status == status)
        with self._engine.connect() as conn:
            return [EventRecord.from_row(row) for row in conn.execute(query)]

    def count(self, *, status: str | None = None) -> int:
        query = select(func.count()).select_from(t)
        if status is not None:
            query = query.where(t.c.status == status)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- the error sweep ------------------------------------------------------------------------------
    def sweep_errors(self, *, errored_before: datetime, now: datetime, limit: int = SWEEP_BATCH) -> builtins.list[str]:
        """Alert the host app (``connection.error``) of connections in ``error`` since ``errored_before`` or
        earlier and not alerted yet (at most ``limit``); the new events' ids. One transaction: flag and events
        land together.

        Rows under a live lease are left for the next sweep (their refresh may be about to recover them);
        ``SKIP LOCKED`` lets two processes sweep side by side without waiting on each other."""
        with self._engine.begin() as conn:
            errored = _errored(conn, errored_before)
            ids = _locked_ids(conn, errored, limit, key=c.c.id, ordered=True)
            if not ids:
                return []
            stmt = update(c).where(c.c.id.in_(ids), errored).values(alert=ALERT_ERROR).returning(*EVENT_COLUMNS)
            rows = conn.execute(stmt).all()
            return [record_event(conn, row, EventType.ERROR, now) for row in rows]

    # -- tidying: the outbox does not grow without end ----------------------------------------------------
    def give_up_stale(self, *, created_before: datetime, limit: int = TIDY_BATCH) -> int:
        """Make ``dead`` the ``pending`` events created before ``created_before`` that nobody is sending (at
        most ``limit``): where no process delivers, events would otherwise wait for ever; how many."""
        with self._engine.begin() as conn:
            stale = (t.c.status == EventStatus.PENDING.value) & (t.c.created_at < created_before)
            stale = stale & lease_free(dialect.now(conn), t)
            ids = _locked_ids(conn, stale, limit)
            if not ids:
                return 0
            reason = func.coalesce(t.c.last_error, literal(GAVE_UP))
            dead = {"status": EventStatus.DEAD.value, "next_attempt_at": None, "last_error": reason}
            return conn.execute(update(t).where(t.c.id.in_(ids), stale).values(dead)).rowcount

    def prune(self, *, settled_before: datetime, limit: int = TIDY_BATCH) -> int:
        """Delete ``delivered`` and ``dead`` events settled before ``settled_before`` (at most ``limit``): a
        delivered one when it was delivered, a dead one at its last attempt, or its creation if it had none."""
        with self._engine.begin() as conn:
            settled = func.coalesce(t.c.delivered_at, t.c.last_attempt_at, t.c.created_at)
            old = t.c.status.in_([EventStatus.DELIVERED.value, EventStatus.DEAD.value]) & (settled < settled_before)
            old = old & lease_free(dialect.now(conn), t)
            ids = _locked_ids(conn, old, limit)
            return conn.execute(delete(t).where(t.c.id.in_(ids), old)).rowcount if ids else 0

    # -- delivery leases ------------------------------------------------------------------------------
    def claim_next(self, *, owner: str, lease: timedelta, now: datetime) -> EventLease | None:
        """Lease the oldest due ``pending`` event and count the attempt it is claimed for; None if none is due."""
        with self._engine.begin() as conn:
            due = (
                select(t.c.id)
                .where(
                    t.c.status == EventStatus.PENDING.value,
                    t.c.next_attempt_at <= now,
                    lease_free(dialect.now(conn), t),
                )
                .order_by(t.c.next_attempt_at, t.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            return _take(conn, t.c.id == due.scalar_subquery(), owner, lease, now)

    def acquire(self, event_id: str, *, owner: str, lease: timedelta, now: datetime) -> EventLease | None:
        """Lease one event whatever its status (a manual retry); None if it is unknown or someone holds it."""
        with self._engine.begin() as conn:
            return _take(conn, t.c.id == event_id, owner, lease, now)

    # -- outcomes (under our lease token) -------------------------------------------------------------
    def delivered(self, event_id: str, lease_token: str, *, now: datetime) -> bool:
        return self._update(
            event_id,
            lease_token,
            status=EventStatus.DELIVERED.value,
            delivered_at=now,
            next_attempt_at=None,
            last_error=None,
        )

    def failed(
        self, event_id: str, lease_token: str, *, error: str, status: EventStatus, retry_at: datetime | None
    ) -> bool:
        """An attempt that did not land: tried again at ``retry_at`` (``pending``), or never (``dead``)."""
        return self._update(event_id, lease_token, status=status.value, last_error=error, next_attempt_at=retry_at)

    def unclaim(self, event_id: str, lease_token: str) -> bool:
        """Give an event back unsent (too little lease left to send): the attempt did not happen."""
        return self._update(event_id, lease_token, attempts=t.c.attempts - 1)

    def _update(self, event_id: str, lease_token: str, **values: object) -> bool:
        ours = (t.c.id == event_id) & (t.c.lease_token == lease_token)
        with self._engine.begin() as conn:
            return conn.execute(update(t).where(ours).values(**values, **_RELEASE)).rowcount > 0


def _locked_ids(
    conn: Connection, which: ColumnElement[bool], limit: int, *, key: ColumnElement[Any] = t.c.id, ordered: bool = False
) -> builtins.list[Any]:
    """At most ``limit`` ids (``key``, an event's by default) of rows matching ``which``, locked for this
    transaction (rows another one holds are skipped); lowest first when ``ordered``. Read first and then used as a
    list, so a batch of ``limit`` changes at most ``limit`` rows: a ``LIMIT … FOR UPDATE SKIP LOCKED`` inside
    ``IN (…)`` may be evaluated more than once by PostgreSQL (a join's rescan, a recheck of a row changed
    meanwhile), each time locking other rows, and so touch more rows than the limit."""
    query = select(key).where(which).limit(limit).with_for_update(skip_locked=True)
    return list(conn.execute(query.order_by(key) if ordered else query).scalars())


def _errored(conn: Connection, errored_before: datetime) -> ColumnElement[bool]:
    return (
        (c.c.status == Status.ERROR.value)
        & c.c.alert.is_(None)
        & (c.c.error_since <= errored_before)
        & lease_free(dialect.now(conn))
    )


def _take(
    conn: Connection, which: ColumnElement[bool], owner: str, lease: timedelta, now: datetime
) -> EventLease | None:
    grant = LeaseGrant.new(lease.total_seconds())
    stmt = (
        update(t)
        .where(which, lease_free(dialect.now(conn), t))
        .values(**grant.columns(conn, owner), attempts=t.c.attempts + 1, last_attempt_at=now)
        .returning(*t.c)
    )
    row = conn.execute(stmt).first()
    return EventLease(EventRecord.from_row(row), grant.token, grant.expires_at_monotonic) if row else None


__all__ = [
    "ALERT_ERROR",
    "ALERT_EXPIRED",
    "EVENT_COLUMNS",
    "EVENT_VERSION",
    "GAVE_UP",
    "TIDY_BATCH",
    "Event",
    "EventLease",
    "EventsRepo",
    "RawRecovery",
    "error_since",
    "event_body",
    "event_time",
    "event_values",
    "new_event_id",
    "record_event",
    "record_recovered",
    "update_with_event",
]

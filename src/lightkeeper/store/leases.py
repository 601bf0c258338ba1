"""Leases on ``lightspeed_connections``: the ``Lease`` a holder gets, fencing tokens, and the SQL conditions
that say who may claim, hold and write a row. ``connections.py`` runs the statements; this module builds them.

A run's claim statement is the hot path of a refresh run: one per connection. It is built once per
repository and dialect with bind parameters (``claim_statement``), because building and cache-keying a new
statement cost more CPU than running it on SQLite.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Integer, Table, Update, and_, bindparam, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from . import dialect
from .records import REFRESHABLE, ConnectionRecord, RunStatus
from .schema import connections as t
from .schema import runs as runs_table

#: What ends a lease (and a run's claim) without touching anything else.
RELEASE: dict[str, Any] = {"acquired_by": None, "acquired_until": None, "lease_token": None, "claim_run_id": None}


class _Fences:
    """Fencing tokens: a random prefix per process and a counter. Unique across processes (96 random bits) and
    never repeated within one, without a system call per lease. A fence is not a secret: a guess gains nothing.

    A process that forks after import (gunicorn ``--preload``, multiprocessing's fork) would hand parent and
    child the same prefix and counter, and so the same tokens: the child draws a new prefix at the fork.
    """

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix, self.counter = secrets.token_hex(12), itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_FENCES = _Fences()
if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_FENCES.renew)


def new_lease_token() -> str:
    return _FENCES.next()


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
class LeaseGrant:
    """An acquisition about to be written: its token, and its end on the monotonic clock (read first)."""

    token: str
    started: float
    seconds: float

    @classmethod
    def new(cls, seconds: float) -> LeaseGrant:
        return cls(new_lease_token(), time.monotonic(), seconds)

    @property
    def expires_at_monotonic(self) -> float:
        return self.started + self.seconds

    def columns(self, conn: Connection, owner: str) -> dict[str, Any]:
        """What an acquisition writes (on any leased table): our token, and an end by the database's clock."""
        until = dialect.now_plus(conn, self.seconds)
        return {"acquired_by": owner, "acquired_until": until, "lease_token": self.token}

    def lease(self, values: Mapping[Any, Any]) -> Lease:
        """The ``Lease`` of the row as written (by column name)."""
        return Lease(ConnectionRecord.from_mapping(values), self.token, self.expires_at_monotonic)


# -- conditions ---------------------------------------------------------------------------------------------
def lease_free(now: ColumnElement[datetime], table: Table = t) -> ColumnElement[bool]:
    """Nobody holds a live lease on the row (of ``table``: connections, or the webhook outbox), by the
    database's ``now`` (``dialect.now`` or ``dialect.now_param``)."""
    return or_(table.c.acquired_until.is_(None), table.c.acquired_until < now)


def claimable(
    now: ColumnElement[datetime], run_id: Any, due_before: Any | None, status: ColumnElement[str] = t.c.status
) -> ColumnElement[bool]:
    return and_(left_in(run_id, due_before, status), lease_free(now))


def left_in(run_id: Any, due_before: Any | None, status: ColumnElement[str] = t.c.status) -> ColumnElement[bool]:
    """Refreshable, due, and not yet handled by this run (whether or not someone holds it now)."""
    return and_(refreshable_and_due(due_before, status, run_id=run_id), not_done_in(run_id))


def refreshable_and_due(
    due_before: Any | None, status: ColumnElement[str] = t.c.status, *, run_id: Any | None = None
) -> ColumnElement[bool]:
    """A connection a refresh would work on (``connected`` or ``error``) and that is due.

    A connection of ordinary rotation is due when last refreshed before ``due_before`` (any, for None): a
    due-based run counts the others as skipped when it starts; the index on ``last_token_refresh_at`` finds
    these. One of strict rotation is due by the cutoffs of the run ``run_id`` (``strict_due``); without a run
    (counting), by ``due_before`` as the others."""
    # Equalities, not IN: an IN list is expanded on every execution, even of a statement built once.
    refreshable = or_(*(status == value.value for value in REFRESHABLE))
    by_age = _refreshed_before(due_before)
    if run_id is None:
        return refreshable if by_age is None else and_(refreshable, by_age)
    ordinary = not_(t.c.strict_rotation) if by_age is None else and_(not_(t.c.strict_rotation), by_age)
    return and_(refreshable, or_(ordinary, and_(t.c.strict_rotation, strict_due(run_id))))


def _refreshed_before(cutoff: Any | None) -> ColumnElement[bool] | None:
    if cutoff is None:
        return None
    return or_(t.c.last_token_refresh_at.is_(None), t.c.last_token_refresh_at < cutoff)


def strict_due(run_id: Any) -> ColumnElement[bool]:
    """A connection of strict rotation is due in run ``run_id`` when the run has no cutoffs (a run of one
    connection), its access token expires before the run's ``expiring_before``, or it was last refreshed before
    the run's ``idle_before``. Every refresh of such a connection risks its chain (a lost answer cannot be
    recovered), so it is refreshed only when it must be; ``REFRESH_DUE_AFTER`` does not apply."""
    expiring = select(runs_table.c.expiring_before).where(runs_table.c.id == run_id).scalar_subquery()
    idle = select(runs_table.c.idle_before).where(runs_table.c.id == run_id).scalar_subquery()
    return or_(
        expiring.is_(None),
        t.c.token_expires_at.is_(None),
        t.c.token_expires_at < expiring,
        t.c.last_token_refresh_at.is_(None),
        t.c.last_token_refresh_at < idle,
    )


def not_done_in(run_id: Any) -> ColumnElement[bool]:
    """Not yet handled by this run. A claim marks the row with the run (``last_run_id``) and as the run's claim
    (``claim_run_id``); every outcome ends the claim. So a row still claimed for the run (and, with
    ``lease_free``, whose lease ran out) belongs to a participant that died: it is claimed again (invariant 5,
    nothing lost). A plain lease (an on-demand refresh) on a handled row is no claim: the row stays handled."""
    return or_(t.c.last_run_id.is_(None), t.c.last_run_id != run_id, t.c.claim_run_id == run_id)


def run_is_running(run_id: Any) -> ColumnElement[bool]:
    """A run that failed (``invalid_client``) or was declared interrupted hands out no more claims."""
    running = select(runs_table.c.id).where(runs_table.c.id == run_id, runs_table.c.status == RunStatus.RUNNING)
    return running.exists()


def ours(connection_id: Any, lease_token: Any) -> ColumnElement[bool]:
    return and_(t.c.id == connection_id, t.c.lease_token == lease_token)


def fenced(connection_id: Any, lease_token: Any, version: Any) -> ColumnElement[bool]:
    """Our lease still stands (nobody acquired since), and the tokens are still the ones we read."""
    return and_(ours(connection_id, lease_token), t.c.token_version == version)


# -- the claim statement ------------------------------------------------------------------------------------
def claim_statement(conn: Connection | Engine, *, one: bool, due: bool) -> Update:
    """Lease the next connection of one provider a run may claim, as one statement with bind parameters:
    ``run_id``, ``provider``, ``after_id``, ``owner``, ``lease_token``, ``connection_id`` (with ``one``),
    ``due_before`` (with ``due``), and the lease's end from ``dialect.time_params(conn, lease_s=…)``."""
    run_id = bindparam("run_id", type_=Integer)
    now = dialect.now_param(conn)
    due_before = bindparam("due_before", type_=t.c.last_token_refresh_at.type) if due else None
    candidates = (
        select(t.c.id)
        .where(t.c.id > bindparam("after_id", type_=Integer))
        .where(t.c.provider == bindparam("provider"))
        .where(claimable(now, run_id, due_before, status=dialect.no_index(conn, t.c.status)))
        .where(run_is_running(run_id))
        .order_by(t.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if one:
        candidates = candidates.where(t.c.id == bindparam("connection_id", type_=Integer))
    lease = {
        "acquired_by": bindparam("owner"),
        "acquired_until": dialect.now_plus_param(conn, "lease_s"),
        "lease_token": bindparam("lease_token"),
    }
    return (
        update(t)
        .where(t.c.id == candidates.scalar_subquery(), lease_free(now))
        .values(last_run_id=run_id, claim_run_id=run_id, **lease)
        .returning(*t.c)
    )


__all__ = [
    "RELEASE",
    "Lease",
    "LeaseGrant",
    "claim_statement",
    "claimable",
    "fenced",
    "lease_free",
    "left_in",
    "new_lease_token",
    "not_done_in",
    "ours",
    "refreshable_and_due",
    "run_is_running",
    "strict_due",
]

"""All SQL on ``lightkeeper_runs``: the job history of the seed guide (``cron.job_run_details``)."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, insert, literal, not_, or_, select, update
from sqlalchemy.exc import IntegrityError

from . import dialect
from .leases import refreshable_and_due, strict_due
from .records import AUTOMATIC_TRIGGERS, DailyOutcomes, RunRecord, RunStatus, StrictCutoffs, Trigger
from .schema import connections as connections_table
from .schema import runs as t

#: The name of the refresh job, kept from the seed guide.
JOB_NAME = "refresh-lightspeed-tokens-every-6h"
#: PostgreSQL NOTIFY channel: a new run or request wakes every worker at once (polling is the fallback).
NOTIFY_CHANNEL = "lightkeeper_runs"


class RunRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def start(
        self,
        *,
        trigger: str,
        owner: str,
        now: datetime,
        connection_id: int | None = None,
        job_name: str = JOB_NAME,
        due_before: datetime | None = None,
        strict: StrictCutoffs | None = None,
    ) -> RunRecord:
        """Record a run that starts now; if a full run of the job is already going, that run (to join).

        With ``due_before``, the run refreshes only connections last refreshed before it (see ``_insert``);
        ``strict`` says which connections of strict rotation a full run refreshes (``leases.strict_due``)."""
        values: dict[str, object] = {
            "job_name": job_name,
            "trigger": trigger,
            "status": RunStatus.RUNNING.value,
            "connection_id": connection_id,
            "created_at": now,
            "started_at": now,
            "acquired_by": owner,
            "due_before": due_before,
            **_cutoffs(None if connection_id is not None else strict),
        }
        while True:
            if (run := self._insert(values)) is not None:
                return run
            if (going := self.running_full(job_name)) is not None:
                return going
            # The run we collided with ended in between: try again.

    def _insert(self, values: dict[str, object]) -> RunRecord | None:
        """Insert a run; None if a uniqueness rule (one running run, one run per tick) says no."""
        with self._engine.begin() as conn:
            if values.get("status") == RunStatus.RUNNING.value:
                values = {**values, "heartbeat_at": dialect.now(conn)}  # staleness is judged by the database's clock
            stmt = dialect.insert(conn, t).values(**values).on_conflict_do_nothing().returning(*t.c)
            row = conn.execute(stmt).first()
            if row is not None:
                _count_not_due(conn, row)
                _notify(conn, row.id)
        return self.get(row.id) if row else None

    def running_full(self, job_name: str = JOB_NAME) -> RunRecord | None:
        """The full run of the job in progress, if any."""
        query = select(t).where(
            t.c.job_name == job_name, t.c.status == RunStatus.RUNNING.value, t.c.connection_id.is_(None)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return RunRecord.from_row(row) if row else None

    def request(self, *, trigger: str, now: datetime, connection_id: int | None = None) -> RunRecord:
        """Queue a run for the workers (the API, SQL and pg_cron ask this way)."""
        stmt = (
            insert(t)
            .values(
                job_name=JOB_NAME,
                trigger=trigger,
                status=RunStatus.QUEUED.value,
                connection_id=connection_id,
                created_at=now,
            )
            .returning(*t.c)
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).one()
            _notify(conn, row.id)
        return RunRecord.from_row(row)

    def start_tick(
        self,
        *,
        job_name: str,
        tick: datetime,
        owner: str,
        now: datetime,
        due_before: datetime | None = None,
        strict: StrictCutoffs | None = None,
    ) -> RunRecord | None:
        """The run of one cron tick, or None if another replica recorded this tick first.

        ``(job_name, scheduled_for)`` is unique: whichever replica inserts first owns the tick; no lock
        that could expire is involved. A tick that comes while a run is still going is recorded as
        ``skipped``: the runs are not doubled, and the tick is not replayed later.
        """
        base: dict[str, object] = {
            "job_name": job_name,
            "trigger": Trigger.SCHEDULE.value,
            "scheduled_for": tick,
            "created_at": now,
        }
        running = {"status": RunStatus.RUNNING.value, "started_at": now, "acquired_by": owner, "due_before": due_before}
        running |= _cutoffs(strict)
        if (run := self._insert(base | running)) is not None:
            return run
        going = self.running_full(job_name)
        message = f"run {going.id} was still going" if going else "already recorded"
        skipped = {"status": RunStatus.SKIPPED.value, "finished_at": now, "message": message}
        return self._insert(base | skipped)

    def activate_queued(
        self, *, owner: str, now: datetime, due_before: datetime | None = None, strict: StrictCutoffs | None = None
    ) -> RunRecord | None:
        """Start the oldest queued run (one replica wins it; the others join it as a running run).

        A request that comes while a run is going is closed as ``skipped``: the going run covers it.
        ``due_before`` applies to automatic requests (``sql``: the SQL function, pg_cron) only.
        """
        oldest = (
            select(t.c.id)
            .where(t.c.status == RunStatus.QUEUED.value)
            .order_by(t.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        try:
            with self._engine.begin() as conn:
                stmt = (
                    update(t)
                    .where(t.c.id == oldest.scalar_subquery(), t.c.status == RunStatus.QUEUED.value)
                    .values(
                        status=RunStatus.RUNNING.value,
                        started_at=now,
                        heartbeat_at=dialect.now(conn),
                        acquired_by=owner,
                        due_before=_if_automatic(due_before),
                        **{name: _if_full(value) for name, value in _cutoffs(strict).items()},
                    )
                    .returning(*t.c)
                )
                row = conn.execute(stmt).first()
                if row is not None:
                    _count_not_due(conn, row)
        except IntegrityError:
            self._skip_queued(now)
            return None
        return self.get(row.id) if row else None

    def _skip_queued(self, now: datetime) -> None:
        going = self.running_full()
        message = f"run {going.id} was already going" if going else "another run was going"
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.status == RunStatus.QUEUED.value, t.c.connection_id.is_(None))
                .values(status=RunStatus.SKIPPED.value, started_at=now, finished_at=now, message=message)
            )

    def running(self) -> list[RunRecord]:
        """Runs in progress, oldest first: what a worker helps with."""
        query = select(t).where(t.c.status == RunStatus.RUNNING.value).order_by(t.c.id)
        with self._engine.connect() as conn:
            return [RunRecord.from_row(row) for row in conn.execute(query)]

    def get(self, run_id: int) -> RunRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == run_id)).first()
        return RunRecord.from_row(row) if row else None

    def list(self, *, limit: int = 20) -> list[RunRecord]:
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [RunRecord.from_row(row) for row in conn.execute(query)]

    def daily_outcomes(self, *, first_day: datetime, days: int) -> builtins.list[DailyOutcomes]:
        """Outcome counts of the runs started on each of ``days`` UTC days from midnight ``first_day``, oldest
        first; a day without runs is zeros. One grouped query: a CASE over the day boundaries numbers each
        run's day, which reads alike on both dialects (their date functions differ)."""
        bounds = [first_day + timedelta(days=n) for n in range(days + 1)]
        day = case(*((t.c.started_at < bounds[n + 1], n) for n in range(days))).label("day")
        window = t.c.started_at >= bounds[0], t.c.started_at < bounds[-1]
        runs = select(day, *_OUTCOMES).where(*window).subquery()
        query = select(runs.c.day, *(func.sum(runs.c[c.name]) for c in _OUTCOMES)).group_by(runs.c.day)
        with self._engine.connect() as conn:
            found = {int(row[0]): [int(n or 0) for n in row[1:]] for row in conn.execute(query)}
        return [DailyOutcomes(bounds[n].date(), *found.get(n, [0, 0, 0, 0])) for n in range(days)]

    def heartbeat(self, run_id: int) -> None:
        """The run is alive, by the database's clock (so a replica with a skewed clock cannot age it)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == run_id, t.c.status == RunStatus.RUNNING.value)
                .values(heartbeat_at=dialect.now(conn))
            )

    def join(self, run_id: int) -> None:
        """This process works on the run from now on (``leave`` when it stops)."""
        with self._engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == run_id).values(participants=t.c.participants + 1))

    def leave(self, run_id: int) -> int:
        """This process stops working on the run; how many participants are left."""
        with self._engine.begin() as conn:
            stmt = (
                update(t)
                .where(t.c.id == run_id)
                .values(participants=dialect.greatest(conn, t.c.participants - 1, literal(0)))
                .returning(t.c.participants)
            )
            return int(conn.execute(stmt).scalar() or 0)

    def finish(self, run_id: int, *, status: RunStatus, now: datetime, message: str | None = None) -> RunRecord:
        """Close a run that is still running; a run already closed keeps its first ending."""
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == run_id, t.c.status == RunStatus.RUNNING.value)
                .values(status=status.value, finished_at=now, heartbeat_at=dialect.now(conn), message=message)
            )
            return RunRecord.from_row(conn.execute(select(t).where(t.c.id == run_id)).one())

    def interrupt_stale(self, *, stale_after: timedelta) -> int:
        """Runs whose workers all stopped beating are shown as ``interrupted``, never ``running`` forever.

        Judged by the database's clock: a replica whose own clock runs ahead cannot interrupt a live run.
        """
        with self._engine.begin() as conn:
            stmt = (
                update(t)
                .where(
                    t.c.status == RunStatus.RUNNING.value,
                    t.c.heartbeat_at < dialect.now_plus(conn, -stale_after.total_seconds()),
                )
                .values(
                    status=RunStatus.INTERRUPTED.value,
                    finished_at=t.c.heartbeat_at,
                    message="the worker running it stopped before it finished",
                )
            )
            return conn.execute(stmt).rowcount


def _if_automatic(due_before: datetime | None) -> Any:
    automatic = t.c.trigger.in_([trigger.value for trigger in AUTOMATIC_TRIGGERS])
    return None if due_before is None else case((automatic, literal(due_before, t.c.due_before.type)), else_=None)


def _cutoffs(strict: StrictCutoffs | None) -> dict[str, datetime | None]:
    if strict is None:
        return {"expiring_before": None, "idle_before": None}
    return {"expiring_before": strict.expiring_before, "idle_before": strict.idle_before}


def _if_full(value: datetime | None) -> Any:
    """A strict cutoff for a queued full run; none for a run of one connection (refreshed at once)."""
    if value is None:
        return None
    return case((t.c.connection_id.is_(None), literal(value, t.c.expiring_before.type)), else_=None)


def _count_not_due(conn: Connection, run: Any) -> None:
    """A due-based full run counts the connections that are not due as skipped, once, as it starts: they are
    never claimed, so no row is written for them (a million merchants cost one COUNT, not a million UPDATEs)."""
    if run.status != RunStatus.RUNNING.value or run.connection_id is not None:
        return
    c = connections_table.c
    waiting = []
    if run.due_before is not None:
        waiting.append(and_(not_(c.strict_rotation), c.last_token_refresh_at >= run.due_before))
    if run.expiring_before is not None:
        waiting.append(and_(c.strict_rotation, not_(strict_due(run.id))))
    if not waiting:
        return
    not_due = select(func.count()).where(refreshable_and_due(None), or_(*waiting)).scalar_subquery()
    conn.execute(update(t).where(t.c.id == run.id).values(skipped=t.c.skipped + not_due, total=t.c.total + not_due))


#: The per-connection outcomes a run counts, in ``DailyOutcomes`` order.
_OUTCOMES = (t.c.refreshed, t.c.expired, t.c.errors, t.c.skipped)


def _notify(conn: Connection, run_id: int) -> None:
    """Wake the workers when this transaction commits (PostgreSQL; SQLite workers poll)."""
    dialect.notify(conn, NOTIFY_CHANNEL, str(run_id))


__all__ = ["JOB_NAME", "NOTIFY_CHANNEL", "RunRepo"]

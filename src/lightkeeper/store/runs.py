"""All SQL on ``lightkeeper_runs``: the job history of the seed guide (``cron.job_run_details``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from .records import Counts, RunRecord, RunStatus
from .schema import runs as t

#: The name of the refresh job, kept from the seed guide.
JOB_NAME = "refresh-lightspeed-tokens-every-6h"


class RunRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def start(
        self, *, trigger: str, owner: str, now: datetime, connection_id: int | None = None, job_name: str = JOB_NAME
    ) -> RunRecord:
        """Record a run that starts now."""
        stmt = (
            insert(t)
            .values(
                job_name=job_name,
                trigger=trigger,
                status=RunStatus.RUNNING.value,
                connection_id=connection_id,
                created_at=now,
                started_at=now,
                heartbeat_at=now,
                acquired_by=owner,
            )
            .returning(*t.c)
        )
        with self._engine.begin() as conn:
            return RunRecord.from_row(conn.execute(stmt).one())

    def get(self, run_id: int) -> RunRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == run_id)).first()
        return RunRecord.from_row(row) if row else None

    def list(self, *, limit: int = 20) -> list[RunRecord]:
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [RunRecord.from_row(row) for row in conn.execute(query)]

    def add_counts(self, run_id: int, counts: Counts, now: datetime) -> None:
        """Add a batch's outcomes in one statement, so replicas sharing a run never lose an update."""
        stmt = (
            update(t)
            .where(t.c.id == run_id)
            .values(
                total=t.c.total + counts.total,
                refreshed=t.c.refreshed + counts.refreshed,
                expired=t.c.expired + counts.expired,
                errors=t.c.errors + counts.errors,
                skipped=t.c.skipped + counts.skipped,
                heartbeat_at=now,
            )
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def heartbeat(self, run_id: int, now: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(t).where(t.c.id == run_id, t.c.status == RunStatus.RUNNING.value).values(heartbeat_at=now)
            )

    def finish(self, run_id: int, *, status: RunStatus, now: datetime, message: str | None = None) -> RunRecord:
        """Close a run that is still running; a run already closed keeps its first ending."""
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.id == run_id, t.c.status == RunStatus.RUNNING.value)
                .values(status=status.value, finished_at=now, heartbeat_at=now, message=message)
            )
            return RunRecord.from_row(conn.execute(select(t).where(t.c.id == run_id)).one())

    def interrupt_stale(self, *, now: datetime, stale_after: timedelta) -> int:
        """Runs whose worker stopped beating are shown as ``interrupted``, never ``running`` forever."""
        stmt = (
            update(t)
            .where(t.c.status == RunStatus.RUNNING.value, t.c.heartbeat_at < now - stale_after)
            .values(
                status=RunStatus.INTERRUPTED.value,
                finished_at=t.c.heartbeat_at,
                message="the worker running it stopped before it finished",
            )
        )
        with self._engine.begin() as conn:
            return conn.execute(stmt).rowcount


__all__ = ["JOB_NAME", "RunRepo"]

"""All SQL on ``lightkeeper_jobs``: the seed guide's ``cron.job`` for the embedded schedulers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from . import dialect
from .records import Job
from .schema import jobs as t

EMBEDDED = "embedded"
PG_CRON = "pg_cron"


class JobRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure(self, name: str, *, schedule: str, now: datetime) -> Job:
        """The job, created active with ``schedule`` the first time (``REFRESH_SCHEDULE`` seeds it)."""
        with self._engine.begin() as conn:
            conn.execute(
                dialect.insert(conn, t)
                .values(name=name, schedule=schedule, active=True, owner=EMBEDDED, updated_at=now)
                .on_conflict_do_nothing()
            )
            return Job.from_row(conn.execute(select(t).where(t.c.name == name)).one())

    def get(self, name: str) -> Job | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.name == name)).first()
        return Job.from_row(row) if row else None

    def update(self, name: str, *, now: datetime, **values: object) -> Job:
        """Change schedule, active or owner; ``updated_at`` moves, so ticks before it are not replayed."""
        with self._engine.begin() as conn:
            conn.execute(update(t).where(t.c.name == name).values(updated_at=now, **values))
            return Job.from_row(conn.execute(select(t).where(t.c.name == name)).one())


__all__ = ["EMBEDDED", "PG_CRON", "JobRepo"]

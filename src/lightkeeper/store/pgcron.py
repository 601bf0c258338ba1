"""The seed guide's PostgreSQL side: ``refresh_lightspeed_tokens()`` and the pg_cron job.

``SELECT refresh_lightspeed_tokens();`` queues a run (trigger ``sql``), wakes the workers with NOTIFY and
raises the notice ``Token refresh triggered with request ID: N``, N being the run id ``lightkeeper runs``
shows. Nothing calls HTTP from the database (no pg_net): the workers do the refreshing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from ..errors import StoreError
from . import dialect
from .runs import JOB_NAME, NOTIFY_CHANNEL

COMMAND = "SELECT refresh_lightspeed_tokens();"

FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION refresh_lightspeed_tokens() RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT  -- the schema lightkeeper lives in, whoever calls it (pg_cron included)
AS $fn$
DECLARE
    request_id bigint;
BEGIN
    INSERT INTO lightkeeper_runs (job_name, trigger, status, created_at)
    VALUES ('{JOB_NAME}', 'sql', 'queued', now())
    RETURNING id INTO request_id;
    PERFORM pg_notify('{NOTIFY_CHANNEL}', request_id::text);
    RAISE NOTICE 'Token refresh triggered with request ID: %', request_id;
    RETURN request_id;
END
$fn$;
"""


@dataclass(frozen=True)
class CronJob:
    """A row of ``cron.job``."""

    jobid: int
    schedule: str
    active: bool


def require_postgresql(engine: Engine) -> None:
    if not dialect.is_postgresql(engine):
        raise StoreError("this needs PostgreSQL: DATABASE_URL points to SQLite, which has no pg_cron")


def install_function(engine: Engine) -> None:
    """Create (or replace) ``refresh_lightspeed_tokens()``; idempotent."""
    require_postgresql(engine)
    with engine.begin() as conn:
        conn.execute(text(FUNCTION_SQL))


def enable_pg_cron(engine: Engine) -> None:
    """``CREATE EXTENSION pg_cron``, or one sentence on why it cannot be."""
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_cron"))
    except Exception as exc:
        raise StoreError(
            "pg_cron is not available in this database: install it (e.g. postgresql-15-cron), add it to "
            "shared_preload_libraries, set cron.database_name to this database, restart PostgreSQL"
        ) from exc


def cron_job(engine: Engine) -> CronJob | None:
    """The job as pg_cron holds it, or None if it is not scheduled there."""
    with engine.connect() as conn:
        if not _has_cron_schema(conn):
            return None
        row = conn.execute(
            text("SELECT jobid, schedule, active FROM cron.job WHERE jobname = :name"), {"name": JOB_NAME}
        ).first()
    return CronJob(int(row.jobid), str(row.schedule), bool(row.active)) if row else None


def schedule(engine: Engine, expression: str, *, active: bool) -> CronJob:
    """``cron.schedule`` the guide's way (creates or updates the job by name), then set ``active``."""
    with engine.begin() as conn:
        jobid = conn.execute(
            text("SELECT cron.schedule(:name, :schedule, :command)"),
            {"name": JOB_NAME, "schedule": expression, "command": COMMAND},
        ).scalar_one()
        conn.execute(text("SELECT cron.alter_job(:jobid, active => :active)"), {"jobid": jobid, "active": active})
    return CronJob(int(jobid), expression, active)


def unschedule(engine: Engine) -> None:
    if cron_job(engine) is None:
        return
    with engine.begin() as conn:
        conn.execute(text("SELECT cron.unschedule(:name)"), {"name": JOB_NAME})


def _has_cron_schema(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT to_regclass('cron.job') IS NOT NULL")).scalar_one())


__all__ = [
    "COMMAND",
    "FUNCTION_SQL",
    "CronJob",
    "cron_job",
    "enable_pg_cron",
    "install_function",
    "require_postgresql",
    "schedule",
    "unschedule",
]

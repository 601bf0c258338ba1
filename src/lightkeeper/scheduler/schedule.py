"""The schedule commands (show, set, pause, resume) and the hand-over between embedded and pg_cron.

The job row in ``lightkeeper_jobs`` says who ticks: the embedded schedulers, or pg_cron. While pg_cron
owns the job, ``cron.job`` is the truth (users edit it with the guide's SQL) and embedded schedulers
stay quiet, so runs are never doubled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..config import check_cron
from ..errors import ConfigError
from ..store import EMBEDDED, JOB_NAME, PG_CRON, Job, Store, pgcron
from .trigger import next_tick


@dataclass(frozen=True)
class ScheduleState:
    """The refresh job's schedule as it is now (``views.ScheduleView`` shows it)."""

    job_name: str
    schedule: str
    active: bool
    owner: str
    next_run_at: datetime | None
    note: str | None = None


class ScheduleService:
    """Shows and changes the refresh job's schedule; ``Keeper.schedule`` is the one wired from settings."""

    def __init__(self, store: Store, *, clock: Clock, default_schedule: str) -> None:
        self.store, self.clock, self.default_schedule = store, clock, default_schedule

    def job(self) -> Job:
        return self.store.jobs.ensure(JOB_NAME, schedule=self.default_schedule, now=self.clock())

    def show(self) -> ScheduleState:
        job = self.job()
        if job.owner == PG_CRON:
            return self._pg_cron_view()
        return self._view(job.schedule, job.active, EMBEDDED)

    def set(self, expression: str) -> ScheduleState:
        """Change the cron expression; a bad one is refused with the reason and changes nothing."""
        try:
            expression = check_cron(expression)
        except ValueError as exc:
            raise ConfigError(f"{exc}; the schedule was not changed") from None
        return self._change(schedule=expression)

    def pause(self) -> ScheduleState:
        return self._change(active=False)

    def resume(self) -> ScheduleState:
        return self._change(active=True)

    def use_pg_cron(self) -> ScheduleState:
        """Hand the job to pg_cron: install the SQL function and ``cron.schedule`` it."""
        engine = self.store.engine
        pgcron.require_postgresql(engine)
        pgcron.enable_pg_cron(engine)
        pgcron.install_function(engine)
        job = self.job()
        schedule, active = job.schedule, job.active
        if job.owner == PG_CRON and (cron := pgcron.cron_job(engine)) is not None:
            schedule, active = cron.schedule, cron.active  # cron.job is the truth: keep the guide's SQL edits
        pgcron.schedule(engine, schedule, active=active)
        self.store.jobs.update(JOB_NAME, now=self.clock(), owner=PG_CRON)
        return self.show()

    def use_embedded(self) -> ScheduleState:
        """Take the job back from pg_cron, keeping the schedule and state it had there."""
        job = self.job()
        values: dict[str, object] = {"owner": EMBEDDED}
        if job.owner == PG_CRON:
            cron = pgcron.cron_job(self.store.engine)
            if cron is None:  # the guide's "Temporarily Disable" (cron.unschedule): it stays disabled
                values["active"] = False
            elif not _is_cron(cron.schedule):  # pg_cron also takes "@reboot", "@hourly", "30 seconds"
                raise ConfigError(
                    f"cron.job's schedule '{cron.schedule}' is not a 5-field cron expression the embedded "
                    "scheduler can run: set one with `lightkeeper schedule set CRON` first; nothing was changed"
                )
            else:
                values |= {"schedule": check_cron(cron.schedule), "active": cron.active}
                pgcron.unschedule(self.store.engine)
        self.store.jobs.update(JOB_NAME, now=self.clock(), **values)
        return self.show()

    def _change(self, **values: Any) -> ScheduleState:
        job = self.job()
        if job.owner == PG_CRON:
            cron = pgcron.cron_job(self.store.engine)
            schedule = values.get("schedule", cron.schedule if cron else job.schedule)
            # Not in cron.job: the guide's cron.unschedule disabled it (``show`` says paused); it stays so.
            active = values.get("active", cron.active if cron else False)
            pgcron.schedule(self.store.engine, schedule, active=active)
        self.store.jobs.update(JOB_NAME, now=self.clock(), **values)
        return self.show()

    def _pg_cron_view(self) -> ScheduleState:
        cron = pgcron.cron_job(self.store.engine)
        if cron is None:
            note = "pg_cron owns the job but it is not scheduled in cron.job (cron.unschedule was run)"
            return ScheduleState(JOB_NAME, self.job().schedule, False, PG_CRON, None, note)
        return self._view(cron.schedule, cron.active, PG_CRON)

    def _view(self, schedule: str, active: bool, owner: str) -> ScheduleState:
        upcoming = next_tick(schedule, self.clock()) if active and _is_cron(schedule) else None
        return ScheduleState(JOB_NAME, schedule, active, owner, upcoming)


def _is_cron(expression: str) -> bool:
    try:
        check_cron(expression)
    except ValueError:
        return False  # pg_cron also takes forms like "30 seconds"
    return True


__all__ = ["ScheduleService", "ScheduleState"]

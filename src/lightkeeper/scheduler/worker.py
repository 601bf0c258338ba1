"""The worker loop: tick the schedule, start queued requests, help every run in progress.

Every replica runs the same loop against the same database. A tick is started by exactly one replica
(a unique row per job and tick); every replica then joins the run and claims its own batches, so N
replicas share the work. Stopping (SIGTERM) lets in-flight refreshes finish and hands back the rest.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigError, LightkeeperError
from ..keeper import Keeper
from ..store import JOB_NAME, Job
from .trigger import due_tick
from .wake import PgListener, Wake

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, keeper: Keeper, *, poll_s: float = 5.0, stop: threading.Event | None = None) -> None:
        self.keeper = keeper
        self.poll_s = poll_s
        self.stop = stop or threading.Event()
        self.wake = Wake()
        self._handled_tick: datetime | None = None

    def run_forever(self) -> None:
        """Work until ``stop`` is set; returns after in-flight refreshes are done."""
        if self.keeper.store.dialect == "postgresql":
            PgListener(self.keeper.settings.database_url, self.wake, self.stop).start()
        log.info("worker %s started (poll every %ss)", self.keeper.owner, self.poll_s)
        while not self.stop.is_set():
            self.step()
            self.wake.wait(self.poll_s)
        log.info("worker %s stopped", self.keeper.owner)

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def step(self) -> None:
        """One pass over everything there is to do now."""
        try:
            self.keeper.runs.interrupt_stale()
            self.tick(self.job())
            self.keeper.store.runs.activate_queued(owner=self.keeper.owner, now=self.keeper.clock())
            self.help_running()
        except ConfigError as exc:
            log.error("run failed: %s", exc)  # the run record says so too; keep serving the others
        except LightkeeperError as exc:
            log.error("worker step failed: %s", exc)
        except SQLAlchemyError as exc:  # the database blinked: try again next poll
            log.warning("database error in worker step: %s", str(exc).splitlines()[0])
        except Exception:  # a bug must not silently end the scheduler: log it, try again next poll
            log.exception("unexpected error in worker step")

    def job(self) -> Job:
        settings = self.keeper.settings
        return self.keeper.store.jobs.ensure(JOB_NAME, schedule=settings.refresh_schedule, now=self.keeper.clock())

    def tick(self, job: Job) -> None:
        """Start the due tick's run unless this process or another replica already recorded it."""
        tick = due_tick(job, self.keeper.clock())
        if tick is None or tick == self._handled_tick:
            return
        run = self.keeper.store.runs.start_tick(job_name=job.name, tick=tick, owner=self.keeper.owner,
                                                now=self.keeper.clock())  # fmt: skip
        self._handled_tick = tick
        if run is not None:
            log.info("tick %s: run %s %s", tick.isoformat(), run.id, run.status.value)

    def help_running(self) -> None:
        for run in self.keeper.store.runs.running():
            if self.stop.is_set():
                return
            self.keeper.runs.execute(run, stop=self.stop)


__all__ = ["Worker"]

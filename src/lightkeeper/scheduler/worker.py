"""The worker loop: tick the schedule, start queued requests, help every run in progress.

Every replica runs the same loop against the same database. A tick is started by exactly one replica
(a unique row per job and tick); every replica then joins the run and claims its own batches, so N
replicas share the work. Stopping (SIGTERM) lets in-flight refreshes finish and hands back the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError, LightkeeperError
from ..refresh import ProgressCallback
from ..store import Job, RunRecord
from .liveness import LoopLiveness
from .trigger import due_tick
from .wake import PgListener, Wake

log = logging.getLogger(__name__)


class WorkerKeeper(Protocol):
    """The ``Keeper`` a worker drives: these verbs and no more (``Keeper`` has them).

    A protocol rather than an import: ``Keeper`` wires this package's schedule service, so the scheduler
    importing the keeper back would be a cycle.
    """

    settings: Settings
    clock: Clock
    owner: str

    @property
    def can_listen(self) -> bool: ...
    def interrupt_stale_runs(self) -> int: ...
    def refresh_job(self) -> Job: ...
    def start_scheduled_run(self, job: Job, tick: datetime) -> RunRecord | None: ...
    def start_queued_run(self) -> RunRecord | None: ...
    def running_runs(self) -> list[RunRecord]: ...
    def execute_run(
        self,
        run: RunRecord,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        hand_back: bool = False,
    ) -> RunRecord: ...


class Worker:
    """One replica's scheduler loop over a ``Keeper``; ``poll_s`` defaults to ``WORKER_POLL_S``.

    ``liveness`` says when the loop last iterated (or finished a refresh of a run it helps), on ``monotonic``.
    """

    def __init__(
        self,
        keeper: WorkerKeeper,
        *,
        poll_s: float | None = None,
        stop: threading.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = keeper.settings
        self.keeper = keeper
        self.poll_s = settings.worker_poll_s if poll_s is None else poll_s
        self._database_url = settings.database_url
        self.stop = stop or threading.Event()
        self.wake = Wake()
        self._handled_tick: datetime | None = None
        self.liveness = LoopLiveness(self.poll_s, monotonic=monotonic)

    def run_forever(self) -> None:
        """Work until ``stop`` is set; returns after in-flight refreshes are done."""
        if self.keeper.can_listen:
            PgListener(self._database_url, self.wake, self.stop).start()
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
        self.liveness.beat()
        try:
            self.keeper.interrupt_stale_runs()
            self.tick(self.keeper.refresh_job())
            self.keeper.start_queued_run()
            self.help_running()
        except ConfigError as exc:
            log.error("run failed: %s", exc)  # the run record says so too; keep serving the others
        except LightkeeperError as exc:
            log.error("worker step failed: %s", exc)
        except SQLAlchemyError as exc:  # the database blinked: try again next poll
            log.warning("database error in worker step: %s", str(exc).splitlines()[0])
        except Exception:  # a bug must not silently end the scheduler: log it, try again next poll
            log.exception("unexpected error in worker step")

    def tick(self, job: Job) -> None:
        """Start the due tick's run unless this process or another replica already recorded it."""
        tick = due_tick(job, self.keeper.clock())
        if tick is None or tick == self._handled_tick:
            return
        run = self.keeper.start_scheduled_run(job, tick)
        self._handled_tick = tick
        if run is not None:
            log.info("tick %s: run %s %s", tick.isoformat(), run.id, run.status.value)

    def help_running(self) -> None:
        """Work on every run in progress, wherever it was started, until it is over or we must stop."""
        for run in self.keeper.running_runs():
            if self.stop.is_set():
                return
            # Stopped (SIGTERM), it hands the run back: a successor (a rolling restart) finishes it.
            self.keeper.execute_run(run, stop=self.stop, progress=self._progressed, hand_back=True)

    def _progressed(self, _outcome: object) -> None:
        self.liveness.beat()  # a long run keeps the loop in one step: each refresh done shows it alive


__all__ = ["Worker", "WorkerKeeper"]

"""A refresh run: claim due connections in batches, refresh them concurrently, record the counts.

Memory stays flat whatever the number of connections (one batch at a time), every run leaves a record,
and a run whose process dies is later shown as ``interrupted`` (its heartbeat stops; invariant 5).
Several processes can work on one run: each claims its own batches (``SKIP LOCKED`` + leases).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import timedelta

from ..errors import ConfigError, ConnectionExpired, ConnectionNotFound
from ..store import REFRESHABLE, ConnectionRecord, RunRecord, RunStatus
from .policy import Outcome
from .single import Refresher

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Outcome], None]


def stale_after_s(heartbeat_s: float) -> float:
    """A run silent for three heartbeats (plus slack for a slow database) has lost its worker."""
    return 3 * heartbeat_s + 5


@dataclass
class RunOptions:
    batch_size: int = 50
    concurrency: int = 4
    heartbeat: timedelta = timedelta(seconds=10)
    #: A ``running`` run whose heartbeat is older than this is shown as ``interrupted``.
    stale_after: timedelta = timedelta(seconds=60)
    #: With nothing left to claim while other participants still hold claims, look again this often.
    takeover_poll: timedelta = timedelta(seconds=1)


class RunExecutor:
    """Starts and finishes run records and drives the work of one run in this process."""

    def __init__(self, refresher: Refresher, options: RunOptions | None = None) -> None:
        self.refresher = refresher
        self.options = options or RunOptions()
        self.store = refresher.store

    def run(
        self, *, trigger: str, connection_id: int | None = None, progress: ProgressCallback | None = None
    ) -> RunRecord:
        """Run a refresh from start to end in this process and return its final record."""
        return self.execute(self.begin(trigger=trigger, connection_id=connection_id), progress=progress)

    def begin(self, *, trigger: str, connection_id: int | None = None) -> RunRecord:
        """Record a run starting now (or the full run already going, to join); ``execute`` works on it."""
        if connection_id is not None:
            self._check_refreshable(connection_id)
        self.interrupt_stale()
        now = self.refresher.clock()
        run = self.store.runs.start(trigger=trigger, owner=self.refresher.owner, now=now, connection_id=connection_id)
        log.info("run %s started (%s)", run.id, trigger)
        return run

    def execute(
        self,
        run: RunRecord,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> RunRecord:
        """Work on a run (started here or elsewhere) until it is over, then close it.

        Several processes may execute the same run; each claims its own batches. The run is closed by
        whichever participant sees nothing left to claim and nothing in flight (the first ending wins).
        A participant asked to ``stop`` gives its unstarted claims back and leaves the run open.
        """
        stop = stop or threading.Event()
        try:
            with _Heartbeat(self, run.id):
                finished = self.work(run, progress=progress, stop=stop)
        except ConfigError as exc:
            self._finish(run.id, RunStatus.FAILED, str(exc))
            raise
        except BaseException:
            self._finish(run.id, RunStatus.INTERRUPTED, "stopped before it finished")
            raise
        if not finished:
            return self.store.runs.get(run.id) or run
        return self._finish(run.id, RunStatus.COMPLETED, None)

    def work(self, run: RunRecord, *, progress: ProgressCallback | None, stop: threading.Event) -> bool:
        """Claim and refresh batches until the run is over (True) or this process must stop (False)."""
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="refresh") as pool:
            while not stop.is_set():
                if batch := self._claim(run):
                    self._refresh_batch(pool, run, batch, progress, stop)
                elif not self._others_still_working(run):
                    return True
                else:
                    stop.wait(self.options.takeover_poll.total_seconds())
        return False

    def _others_still_working(self, run: RunRecord) -> bool:
        """Whether to wait: other participants hold claims of this run, and the run is still open.

        Their leases may run out (a participant died): waiting then means taking those claims over.
        """
        current = self.store.runs.get(run.id)
        if current is None or current.status is not RunStatus.RUNNING:
            return False
        return self.store.connections.count_in_flight(run.id) > 0

    def interrupt_stale(self) -> int:
        return self.store.runs.interrupt_stale(now=self.refresher.clock(), stale_after=self.options.stale_after)

    def _check_refreshable(self, connection_id: int) -> None:
        record = self.store.connections.get(connection_id)
        if record is None:
            raise ConnectionNotFound(f"there is no connection {connection_id}")
        if record.status not in REFRESHABLE:
            raise ConnectionExpired(
                f"connection {connection_id} is {record.status.value}: the merchant must reconnect first"
            )

    def _claim(self, run: RunRecord) -> list[ConnectionRecord]:
        now = self.refresher.clock()
        return self.store.connections.claim_batch(
            run_id=run.id,
            owner=self.refresher.owner,
            now=now,
            until=now + self.refresher.lease,
            limit=self.options.batch_size,
            connection_id=run.connection_id,
        )

    def _refresh_batch(
        self,
        pool: ThreadPoolExecutor,
        run: RunRecord,
        batch: list[ConnectionRecord],
        progress: ProgressCallback | None,
        stop: threading.Event,
    ) -> None:
        futures = [pool.submit(self._refresh_one, record, run, stop) for record in batch]
        if (failure := _collect(as_completed(futures), progress)) is not None:
            raise failure

    def _refresh_one(self, record: ConnectionRecord, run: RunRecord, stop: threading.Event) -> Outcome | None:
        if stop.is_set():  # stopping: hand the claim back instead of starting a refresh
            self.store.connections.unclaim(record.id, self.refresher.owner)
            return None
        # The outcome is counted in the run by the very transaction that records it (store.Tally): a
        # participant killed at any moment loses no count, and the run never looks done before its counts.
        return self.refresher.refresh_claimed(record, trigger=run.trigger, run_id=run.id)

    def _finish(self, run_id: int, status: RunStatus, message: str | None) -> RunRecord:
        record = self.store.runs.finish(run_id, status=status, now=self.refresher.clock(), message=message)
        log.info(
            "run %s %s: %s refreshed, %s expired, %s errors, %s skipped",
            run_id,
            record.status.value,
            record.refreshed,
            record.expired,
            record.errors,
            record.skipped,
        )
        return record


def _collect(futures: Iterable[Future[Outcome | None]], progress: ProgressCallback | None) -> BaseException | None:
    """Wait for every refresh of a batch and report its outcome (the run's record already counts it);
    the first failure is returned once all are done, so no claim is left mid-flight."""
    failure = None
    for future in futures:
        try:
            outcome = future.result()
        except BaseException as exc:
            failure = failure or exc
            continue
        if outcome is not None and progress is not None:
            progress(outcome)
    return failure


class _Heartbeat:
    """Beats the run's heartbeat from a side thread while the run works."""

    def __init__(self, executor: RunExecutor, run_id: int) -> None:
        self._executor, self._run_id = executor, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self._executor.options.heartbeat.total_seconds()
        while not self._stop.wait(interval):
            try:
                self._executor.store.runs.heartbeat(self._run_id, self._executor.refresher.clock())
            except Exception:  # a missed beat is harmless; a dead heartbeat thread is not
                log.exception("heartbeat of run %s failed", self._run_id)


__all__ = ["ProgressCallback", "RunExecutor", "RunOptions", "stale_after_s"]

"""A refresh run: its record from start to end, and this process's part in it.

The refreshing itself is ``drain``'s (one due connection claimed at a time, just before its refresh, on one
event loop). Memory stays flat whatever the number of connections, every run leaves a record, and several
processes can work on one run: each claims its own rows (``SKIP LOCKED`` + fenced leases). The last participant
to leave a run closes it; a run whose processes all died is shown ``interrupted`` once its heartbeat is stale
(invariant 5).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import ConfigError, ConnectionExpired, ConnectionNotFound
from ..metrics import Reason, count_refresh, observe_run
from ..store import REFRESHABLE, RunRecord, RunStatus, StrictCutoffs
from .drain import Drain, ProgressCallback
from .policy import AUTOMATIC_TRIGGERS, Outcome
from .single import Refresher

log = logging.getLogger(__name__)


def stale_after_s(heartbeat_s: float) -> float:
    """A run silent for three heartbeats (plus slack for a slow database) has lost its workers."""
    return 3 * heartbeat_s + 5


@dataclass
class RunOptions:
    concurrency: int = 4
    heartbeat: timedelta = timedelta(seconds=10)
    #: A ``running`` run whose heartbeat is older than this (by the database's clock) is ``interrupted``.
    stale_after: timedelta = timedelta(seconds=60)
    #: With nothing left to claim while other participants still hold claims, look again this often.
    takeover_poll: timedelta = timedelta(seconds=1)


class RunExecutor:
    """Starts and finishes run records and drives the work of one run in this process."""

    def __init__(self, refresher: Refresher, options: RunOptions | None = None) -> None:
        self.refresher = refresher
        self.options = options or RunOptions()
        self.parts = refresher.parts  # what it uses beside the refresher itself, explicit
        # Runs this executor began (and so checked the keys for) and has not executed yet.
        self._keys_checked: set[int] = set()
        self._keys_checked_lock = threading.Lock()  # guards the run-id sets below too
        # Per run: providers this process stopped draining because their client was held too long.
        self._held: dict[int, set[str]] = {}

    def run(
        self,
        *,
        trigger: str,
        connection_id: int | None = None,
        progress: ProgressCallback | None = None,
        due_before: datetime | None = None,
        strict: StrictCutoffs | None = None,
        stop: threading.Event | None = None,
    ) -> RunRecord:
        """Run a refresh from start to end in this process and return its final record (``stop``: see
        ``execute``)."""
        begun = self.begin(trigger=trigger, connection_id=connection_id, due_before=due_before, strict=strict)
        return self.execute(begun, progress=progress, stop=stop, hand_back=False)

    def begin(
        self,
        *,
        trigger: str,
        connection_id: int | None = None,
        due_before: datetime | None = None,
        strict: StrictCutoffs | None = None,
    ) -> RunRecord:
        """Record a run starting now (or the full run already going, to join); ``execute`` works on it.

        With ``due_before`` (a full run only), only connections last refreshed before it are refreshed; with
        ``strict``, only the connections of strict rotation that need it (``store.StrictCutoffs``)."""
        if connection_id is not None:
            self._check_refreshable(connection_id)
        self.check_keys()
        self.interrupt_stale()
        now = self.parts.clock()
        if connection_id is not None:
            due_before = None  # one connection asked for by name is refreshed, due or not
        owner = self.parts.owner
        run = self.parts.runs.start(
            trigger=trigger, owner=owner, now=now, connection_id=connection_id, due_before=due_before, strict=strict
        )
        with self._keys_checked_lock:
            self._keys_checked.add(run.id)  # execute need not scan the keys again for this run
        log.info("run %s started (%s)", run.id, trigger)
        return run

    def execute(
        self,
        run: RunRecord,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        hand_back: bool = False,
    ) -> RunRecord:
        """Work on a run (started here or elsewhere) until it is over, then close it.

        The run is closed as completed by whichever participant sees nothing left to claim and nothing in
        flight. A participant that fails unexpectedly, or is asked to ``stop``, leaves the run to the others.
        The last one to leave after a ``stop`` hands the run back (``hand_back``: it stays ``running`` for a
        successor, as in a rolling restart of workers, and is shown ``interrupted`` once its heartbeat is stale
        if none comes) or closes it ``interrupted`` at once. ``invalid_client`` fails the run for everyone.
        """
        stop = stop or threading.Event()
        with self._keys_checked_lock:
            checked = run.id in self._keys_checked
            self._keys_checked.discard(run.id)
        if not checked:  # a run begun elsewhere (a tick, another process): check before joining it
            self._check_keys_to_join(run)
        self.parts.runs.join(run.id)
        try:
            with _Heartbeat(self, run.id):
                finished = self.work(run, progress=progress, stop=stop)
        except ConfigError as exc:
            self._leave(run.id)
            self._finish(run.id, RunStatus.FAILED, str(exc))
            raise
        except BaseException:
            if self._leave(run.id) == 0:
                self._finish(run.id, RunStatus.INTERRUPTED, "stopped before it finished")
            raise
        left = self._leave(run.id)
        if not finished:
            if left == 0 and not hand_back:  # asked to stop, nobody else works on it, and no successor is due
                message = "stopped before it finished: what it did not reach is refreshed by the next run"
                return self._finish(run.id, RunStatus.INTERRUPTED, message)
            return self.parts.runs.get(run.id) or run
        return self._finish(run.id, RunStatus.COMPLETED, self._closing_message(run.id))

    def work(self, run: RunRecord, *, progress: ProgressCallback | None, stop: threading.Event) -> bool:
        """Refresh until the run is over (True) or this process must stop (False)."""
        if run.trigger in AUTOMATIC_TRIGGERS:
            now = self.parts.clock()
            skipped = self.parts.connections.skip_in_backoff(run.id, now, due_before=run.due_before)
            count_refresh(Outcome.SKIPPED.value, Reason.BACKOFF, skipped)
        drains = {
            name: Drain(
                self.refresher, run, concurrency=self.options.concurrency, progress=progress, stop=stop, provider=name
            )
            for name in self.parts.providers
        }
        while not stop.is_set():
            # A provider whose client is held longer than a refresh may wait is left for a later run.
            if (pending := self._next_provider(run, [name for name in drains if not drains[name].held])) is not None:
                drains[pending].go()
                if drains[pending].held:
                    self._note_held(run.id, pending)
            elif not self._others_still_working(run, [name for name in drains if not drains[name].held]):
                return True
            else:
                stop.wait(self.options.takeover_poll.total_seconds())
        return False

    def _next_provider(self, run: RunRecord, providers: Iterable[str]) -> str | None:
        """The first configured provider with a connection left to claim in this run (one at a time: each
        provider's OAuth client has its own pacing); None when none has."""
        connections = self.parts.connections
        for name in providers:
            if connections.has_claimable(run.id, run.connection_id, due_before=run.due_before, provider=name):
                return name
        return None

    def _others_still_working(self, run: RunRecord, providers: Collection[str]) -> bool:
        """Whether to go on: others hold claims of this run or leases on what it has not handled, or a
        connection of ``providers`` was freed since this process last looked, and the run is still open.

        Their leases may run out (a participant died): waiting then means taking those claims over.
        """
        current = self.parts.runs.get(run.id)
        if current is None or current.status is not RunStatus.RUNNING:
            return False
        waiting = self.parts.connections.count_in_flight(
            run.id, run.connection_id, due_before=run.due_before, providers=providers
        )
        return waiting > 0

    def interrupt_stale(self) -> int:
        return self.parts.runs.interrupt_stale(stale_after=self.options.stale_after)

    def check_keys(self) -> None:
        """Refuse to run when no stored ciphertext was made with any configured key (a mistyped key).

        Rows under a key that is merely no longer configured are each their own error, not the run's.
        """
        present = self.parts.connections.key_ids(refreshable_only=True)
        configured = set(self.parts.vault.key_ids)
        if present and not configured & set(present):
            raise ConfigError(
                f"no stored token can be decrypted with the configured keys ({', '.join(sorted(configured))}): "
                f"they were encrypted with key id(s) {', '.join(sorted(present))}; check TOKEN_ENCRYPTION_KEY "
                "and TOKEN_ENCRYPTION_OLD_KEYS. Nothing was changed"
            )

    def _check_keys_to_join(self, run: RunRecord) -> None:
        """``check_keys`` before joining; a run nobody works on fails with the reason (a scheduled tick)."""
        try:
            self.check_keys()
        except ConfigError as exc:
            current = self.parts.runs.get(run.id)
            if current is not None and current.participants == 0:
                self._finish(run.id, RunStatus.FAILED, str(exc))
            raise

    def _note_held(self, run_id: int, provider: str) -> None:
        log.warning(
            "run %s: %s asked to wait longer than a refresh may: the rest is left for the next run", run_id, provider
        )
        with self._keys_checked_lock:
            self._held.setdefault(run_id, set()).add(provider)

    def _closing_message(self, run_id: int) -> str | None:
        """What a completed run's record says: keys that are not configured, providers that asked to wait."""
        with self._keys_checked_lock:
            held = sorted(self._held.pop(run_id, set()))
        notes = [self._unknown_key_message()]
        if held:
            notes.append(
                f"{', '.join(held)} asked to wait (Retry-After) longer than REFRESH_MAX_RETRY_AFTER_S: "
                "connections not reached are left for the next run"
            )
        return "; ".join(note for note in notes if note) or None

    def _unknown_key_message(self) -> str | None:
        configured = set(self.parts.vault.key_ids)
        present = self.parts.connections.key_ids(refreshable_only=True)
        unknown = {kid: n for kid, n in present.items() if kid not in configured}
        if not unknown:
            return None
        parts = [f"{n} under key {kid}" for kid, n in sorted(unknown.items())]
        return (
            f"connections whose key is not configured (marked error; add the key to TOKEN_ENCRYPTION_OLD_KEYS): "
            f"{', '.join(parts)}"
        )

    def _check_refreshable(self, connection_id: int) -> None:
        record = self.parts.connections.get(connection_id)
        if record is None:
            raise ConnectionNotFound(f"there is no connection {connection_id}")
        if record.status not in REFRESHABLE:
            raise ConnectionExpired(
                f"connection {connection_id} is {record.status.value}: the merchant must reconnect first"
            )

    def _leave(self, run_id: int) -> int:
        try:
            return self.parts.runs.leave(run_id)
        except Exception:  # the database is gone: the others (or staleness) will close the run
            log.exception("could not leave run %s", run_id)
            return -1

    def _finish(self, run_id: int, status: RunStatus, message: str | None) -> RunRecord:
        now = self.parts.clock()
        record = self.parts.runs.finish(run_id, status=status, now=now, message=message)
        # Closed by this call (not earlier, by another participant): its ending is ours to report.
        if record.status is status and record.finished_at == now:
            _report_run(record)
        return record


def _report_run(record: RunRecord) -> None:
    """Observe a run's duration and log its one ``run`` event, with the counts it ended with."""
    seconds = _duration_s(record)
    observe_run(seconds)
    if not log.isEnabledFor(logging.INFO):
        return
    fields = {
        "run_id": record.id,
        "trigger": record.trigger,
        "outcome": record.status.value,
        "duration_ms": round(seconds * 1000, 1),
        "refreshed": record.refreshed,
        "expired": record.expired,
        "errors": record.errors,
        "skipped": record.skipped,
    }
    log.info("run %s %s", record.id, record.status.value, extra={"event": "run", "fields": fields})


def _duration_s(record: RunRecord) -> float:
    if record.started_at is None or record.finished_at is None:
        return 0.0
    return max(0.0, (record.finished_at - record.started_at).total_seconds())


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
                self._executor.parts.runs.heartbeat(self._run_id)
            except Exception:  # a missed beat is harmless; a dead heartbeat thread is not
                log.exception("heartbeat of run %s failed", self._run_id)


__all__ = ["ProgressCallback", "RunExecutor", "RunOptions", "stale_after_s"]

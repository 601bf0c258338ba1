"""The work of one run in this process: up to ``concurrency`` refreshes in flight on one event loop.

Each worker (a task) takes a pacing slot, claims the next connection just ahead of it (its lease starts right
before its refresh, so no row waits leased behind others), sends the token request, and writes the outcome.

Why an event loop and not a thread per worker: a refresh is about a millisecond of CPU around a wait of
100-300 ms for Lightspeed. With threads, every wait handed the GIL to another worker: 17 context switches a
refresh at concurrency 4, and 0.4 ms of CPU spent on nothing but the hand-offs. On one loop a refresh costs its
own work and nothing more (``bench cpu``, docs/BENCHMARKS.md).

Database calls never run on the loop, on either database: they go to threads of their own (``DatabaseCalls``),
so a stalled database (another process holding SQLite's write lock) delays the one call that waits for it, not
every worker's slot, and a PostgreSQL a few milliseconds away still serves ``concurrency`` refreshes at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ..lightspeed.oauth import AsyncSender
from ..lightspeed.pacing import Pacer, Stopped
from ..store import Lease, RunRecord
from .locks import ConnectionLock
from .policy import Outcome
from .single import DatabaseCalls, Refresher

T = TypeVar("T")

_new_loop: Callable[[], asyncio.AbstractEventLoop]
try:
    from uvloop import new_event_loop as _new_loop
except ImportError:  # Windows, where uvloop does not exist
    _new_loop = asyncio.new_event_loop

ProgressCallback = Callable[[Outcome], None]

#: How long before its pacing slot a worker claims its connection: a claim takes a few milliseconds (tens
#: under contention), and a request sent late by that much would leave the next one closer than the spacing.
CLAIM_AHEAD_S = 0.1


class Drain:
    """Refreshes a run's connections of one provider until nothing is left to claim, this process must stop, or
    one fails.

    ``go`` runs the loop to its end on the calling thread. The first failure (``invalid_client``, a lost
    database) ends the drain: refreshes in flight finish and are written first, then ``go`` raises it.
    """

    def __init__(
        self,
        refresher: Refresher,
        run: RunRecord,
        *,
        concurrency: int,
        progress: ProgressCallback | None,
        stop: threading.Event,
        provider: str,
    ) -> None:
        self._refresher, self._run, self._concurrency = refresher, run, max(1, concurrency)
        #: One provider's connections at a time: its OAuth client's slots pace them.
        self._provider = provider
        #: Set when the provider's client is held (a ``Retry-After``) longer than a refresh may wait: the drain ends,
        #: and what it did not reach is left for a later run rather than waited for.
        self.held = False
        self._parts = refresher.parts  # what it uses beside the refresher's verbs, explicit
        self._progress, self._stop = progress, stop
        #: Claims go up the id order from here; a worker finding nothing looks once more from the start.
        self._after = 0
        self._after_lock = threading.Lock()
        self._halt = False
        self._failure: BaseException | None = None

    def go(self) -> None:
        self._after = 0
        _run_to_end(self._drain)
        if self._failure is not None:
            raise self._failure

    async def _drain(self) -> None:
        async with self._refresher.sender(self._concurrency) as sender, self._calls() as calls:
            workers = [self._worker(sender, calls) for _ in range(self._concurrency)]
            await asyncio.gather(*workers)

    @asynccontextmanager
    async def _calls(self) -> AsyncIterator[DatabaseCalls]:
        # Never on the loop, not even SQLite's microseconds: another process holding the write lock (a busy
        # timeout of 30 s) froze every worker, and the slots that passed meanwhile then fired at once.
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"refresh-{self._run.id}") as pool:
            yield functools.partial(_on_thread, pool)

    def _stopping(self) -> bool:
        return self._halt or self._stop.is_set()

    async def _worker(self, sender: AsyncSender, calls: DatabaseCalls) -> None:
        try:
            while not self._stopping():
                if not await self._one(sender, calls):
                    return
        except BaseException as exc:  # the first failure ends the drain; refreshes in flight finish first
            self._failure = self._failure or exc
            self._halt = True

    async def _one(self, sender: AsyncSender, calls: DatabaseCalls) -> bool:
        """Claim and refresh one connection; False when there is nothing left to claim."""
        pacer = self._parts.pacer(self._provider)
        slot = await calls(pacer.reserve)  # the slot before the lease: waiting for a slot never eats a lease …
        if await self._held_too_long(pacer, calls):
            return False
        try:
            await pacer.sleep_until_async(slot - CLAIM_AHEAD_S, self._stopping)  # a slot after a hold: seconds
        except Stopped:
            return False
        lease = await calls(self._claim)  # … but the claim is made just ahead of it, so the request leaves on time
        if lease is None:
            return False
        if self._stopping():  # stopping: hand the claim back untouched
            await calls(self._parts.connections.unclaim, lease.record.id, lease.token)
            return False
        await self._refresh(lease, sender, calls, slot)  # the slot is waited for right before the send
        return True

    async def _held_too_long(self, pacer: Pacer, calls: DatabaseCalls) -> bool:
        """Whether a hold on the provider's client (this process's ``Retry-After`` or another's) lasts longer than a
        refresh may wait (``REFRESH_MAX_RETRY_AFTER_S``): then the drain stops instead of sleeping through it."""
        held_until = await calls(pacer.read_hold)
        if held_until - time.monotonic() <= self._parts.max_hold:
            return False
        self.held = True
        return True

    def _claim(self) -> Lease | None:
        lease = self._claim_after(self._after)
        if lease is None and self._after > 0:
            lease = self._claim_after(0)  # rows skipped while locked, handed back, or whose claims ran out
        if lease is not None:
            with self._after_lock:  # claims run on threads with PostgreSQL
                self._after = max(self._after, lease.record.id)
        return lease

    def _claim_after(self, after: int) -> Lease | None:
        parts, run = self._parts, self._run
        return parts.connections.claim_next(
            run_id=run.id,
            owner=parts.owner,
            lease=parts.lease,
            after_id=after,
            connection_id=run.connection_id,
            due_before=run.due_before,
            provider=self._provider,
        )

    async def _refresh(self, lease: Lease, sender: AsyncSender, calls: DatabaseCalls, slot: float) -> None:
        parts = self._parts
        lock = parts.locks.get(lease.record.id)  # an on-demand caller of this process may be at it
        wait_s = max(0.0, lease.seconds_left() - parts.http_timeout)
        if not await _acquire(lock, wait_s):
            await calls(parts.connections.unclaim, lease.record.id, lease.token)
            return
        try:
            # Counted in the run by the very transaction that records it (store.Tally): a participant killed
            # at any moment loses no count, and the run never looks done before its counts are in.
            outcome = await self._refresher.refresh_claimed_async(
                lease, sender, calls, trigger=self._run.trigger, run_id=self._run.id, slot=slot, stopped=self._stopping
            )
        finally:
            lock.release()
        if outcome is not None and self._progress is not None:
            self._progress(outcome)


def _run_to_end(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(main())``; called from a coroutine (a host app's own loop), on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _run(main)
        return
    failure: list[BaseException] = []
    thread = threading.Thread(target=_run_catching, args=(main, failure), name="refresh-loop")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``main()`` to its end on a new loop: uvloop's where it is installed (about 0.1 ms less CPU a refresh)."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())


def _run_catching(main: Callable[[], Coroutine[Any, Any, None]], failure: list[BaseException]) -> None:
    try:
        _run(main)
    except BaseException as exc:
        failure.append(exc)


async def _acquire(lock: ConnectionLock, wait_s: float) -> bool:
    """The connection's lock, waiting up to ``wait_s`` on a thread when this process's on-demand caller has it."""
    if lock.acquire_now():
        return True
    waiting = asyncio.ensure_future(asyncio.to_thread(lock.acquire, wait_s))
    try:
        return await asyncio.shield(waiting)
    except asyncio.CancelledError:  # the thread may still get it: hand it straight back then
        waiting.add_done_callback(functools.partial(_release_if_acquired, lock))
        raise


def _release_if_acquired(lock: ConnectionLock, waiting: asyncio.Future[bool]) -> None:
    if not waiting.cancelled() and waiting.exception() is None and waiting.result():
        lock.release()


async def _on_thread(pool: ThreadPoolExecutor, fn: Callable[..., T], /, *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))


__all__ = ["CLAIM_AHEAD_S", "Drain", "ProgressCallback"]

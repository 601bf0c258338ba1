"""Spacing token requests for the whole deployment: ``REFRESH_DELAY_MS`` and the token endpoint's ``Retry-After``.

Lightspeed rate-limits (and may block) the OAuth client as a whole, so the spacing must hold across every process
of a deployment (invariant 7). Where the slots live is a seam (``Slots``): the wiring hands in the store's
``PacingRepo`` (one row every process sharing the database updates); ``LocalSlots`` keeps them in memory, for one
process and for tests. This package never imports the store: ``PacingRepo`` fits the protocol by its shape.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from lightkeeper.errors import RateLimited

T = TypeVar("T")

REFRESH = "refresh"
#: Slots are spaced this much wider than asked (a share of the interval, at most the cap): see ``spacing_s``.
JITTER_MARGIN_SHARE = 0.1
JITTER_MARGIN_MAX_S = 0.025
#: With ``REFRESH_DELAY_MS=0``, how often a process reads whether another one put a ``Retry-After`` hold on.
HOLD_POLL_S = 0.5
#: How often a sender waiting for its slot looks whether it was asked to stop (Ctrl-C, SIGTERM).
STOP_POLL_S = 0.1


class Stopped(Exception):
    """The sender was asked to stop while it waited for its slot: nothing was sent."""


class Slots(Protocol):
    """Where send slots live: ``store.PacingRepo`` (shared) or ``LocalSlots`` (this process)."""

    def take(self, name: str, interval_s: float) -> float: ...

    def hold(self, name: str, seconds: float) -> None: ...

    def pending(self, name: str) -> float: ...

    def hold_left(self, name: str) -> float: ...


class LocalSlots:
    """Send slots of one process, in memory (the same contract as ``store.PacingRepo``)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._next: dict[str, float] = {}
        self._holds: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, name: str, interval_s: float) -> float:
        with self._lock:
            now = self._monotonic()
            slot = max(now, self._next.get(name, 0.0))
            self._next[name] = slot + interval_s
        return slot - now

    def hold(self, name: str, seconds: float) -> None:
        with self._lock:
            until = self._monotonic() + seconds
            self._next[name] = max(self._next.get(name, 0.0), until)
            self._holds[name] = max(self._holds.get(name, 0.0), until)

    def hold_left(self, name: str) -> float:
        with self._lock:
            return max(0.0, self._holds.get(name, 0.0) - self._monotonic())

    def pending(self, name: str) -> float:
        with self._lock:
            return max(0.0, self._next.get(name, 0.0) - self._monotonic())


class Pacer:
    """Hands out send slots at least ``interval_s`` apart; ``hold`` pauses everyone (``Retry-After``).

    With ``interval_s`` 0 no slot is taken (so replicas speed a run up), but a hold still stops every sender.
    """

    def __init__(
        self,
        interval_s: float,
        slots: Slots | None = None,
        *,
        name: str = REFRESH,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = max(0.0, interval_s)
        self._slots: Slots = slots if slots is not None else LocalSlots()
        self._name = name
        self._sleep = sleep
        self._monotonic = monotonic
        # With no spacing, only a hold can make a sender wait: its end is read at most every HOLD_POLL_S
        # (a hold another process set is seen that much later at worst; this process's own at once).
        self._hold_until, self._hold_read_at = 0.0, float("-inf")
        self._hold_lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot without waiting for it: when it comes, on this process's monotonic clock.

        A caller with work to do before sending (taking a lease) does it just before the slot, then
        ``sleep_until`` the slot: the request leaves on time, and the wait ate almost none of the lease.
        """
        if self.interval_s > 0:
            # The clock is read after ``take`` returns: the wait it answers counts from the moment it got the row,
            # and a take that waited for a locked database would otherwise hand out a slot early by that wait.
            wait = self._slots.take(self._name, self.spacing_s)
            return self._monotonic() + max(0.0, wait)
        return self._hold_end()

    @property
    def spacing_s(self) -> float:
        """The gap between slots: the interval plus a small margin, because a request leaves a few ms after its
        slot (more on a loaded host) and the gap Lightspeed sees must still be at least the interval."""
        return self.interval_s + min(JITTER_MARGIN_SHARE * self.interval_s, JITTER_MARGIN_MAX_S)

    def _hold_end(self) -> float:
        now = self._monotonic()
        with self._hold_lock:
            if now - self._hold_read_at >= HOLD_POLL_S:
                self._hold_until = now + max(0.0, self._slots.pending(self._name))
                self._hold_read_at = now
            return max(now, self._hold_until)

    def sleep_until(self, moment: float) -> None:
        if (delay := moment - self._monotonic()) > 0:
            self._sleep(delay)

    async def sleep_until_async(self, moment: float, stopped: Callable[[], bool] | None = None) -> None:
        """``sleep_until`` on an event loop (a refresh run's workers); with ``stopped``, looked at every
        ``STOP_POLL_S`` (a slot after a hold may be seconds away), ``Stopped`` once it turns true."""
        if stopped is None:
            if (delay := moment - self._monotonic()) > 0:
                await asyncio.sleep(delay)
            return
        while (delay := moment - self._monotonic()) > 0:
            await asyncio.sleep(min(delay, STOP_POLL_S))
            if stopped():
                raise Stopped

    @property
    def margin_s(self) -> float:
        """How late after its slot a request may still leave: beyond it the gap to the next one is too short."""
        return self.spacing_s - self.interval_s

    def held_until(self) -> float:
        """The end of the latest hold this process knows of (its own, or one another process set and it read),
        on this process's monotonic clock."""
        with self._hold_lock:
            return self._hold_until

    def read_hold(self) -> float:
        """Read the shared hold (any process's ``Retry-After``) into this process's view; its end, monotonic."""
        left = self._slots.hold_left(self._name)
        with self._hold_lock:
            if left > 0:  # none on: the view stays as it was (now is no hold)
                self._hold_until = max(self._hold_until, self._monotonic() + left)
            return self._hold_until

    async def on_time(
        self,
        slot: float,
        take: Callable[[], Awaitable[float]],
        read_hold: Callable[[], Awaitable[float]],
        *,
        stopped: Callable[[], bool] | None = None,
    ) -> float:
        """Wait for ``slot``: the last step before a request leaves. A slot that a hold (``Retry-After``, from
        any process: ``read_hold`` reads it right before the send) came to cover after it was handed out, or that
        the caller reached later than ``margin_s`` (a slow claim, a lock, a stalled loop), is exchanged for a new
        one from ``take``; the slot the request leaves on. ``Stopped`` when ``stopped()`` turns true meanwhile
        (a signal): nothing new starts, not even after a hold."""
        while True:
            if stopped is not None and stopped():
                raise Stopped
            if self.held_until() > slot:
                slot = await take()
                continue
            await self.sleep_until_async(slot, stopped)
            if await read_hold() > slot:
                continue  # a hold came while we waited: it binds this slot too
            if self._late(slot):
                slot = await take()  # too late: sent now, it would leave less than the spacing after the next
                continue
            return slot

    def on_time_sync(self, slot: float) -> float:
        """``on_time`` for a caller on a thread of its own (an on-demand refresh): the same rules, the store
        called directly."""
        while True:
            if self.held_until() > slot:
                slot = self.reserve()
                continue
            self.sleep_until(slot)
            if self.read_hold() > slot:
                continue
            if self._late(slot):
                slot = self.reserve()
                continue
            return slot

    def _late(self, slot: float) -> bool:
        return self.interval_s > 0 and self._monotonic() - slot > self.margin_s

    def hold(self, seconds: float) -> None:
        """No slot is handed out for ``seconds`` from now, in any process sharing the slots."""
        self._slots.hold(self._name, seconds)
        with self._hold_lock:
            self._hold_until = max(self._hold_until, self._monotonic() + seconds)


def retry_once_after(
    send: Callable[[], T], *, pacer: Pacer, max_wait: float, may_send: Callable[[], bool] = lambda: True
) -> T:
    """``send()``; on a 429 whose ``Retry-After`` is at most ``max_wait``, hold every sender that long, wait for a
    slot (``on_time_sync``: late or held slots are exchanged), and send once more if ``may_send()`` still allows
    it. Otherwise the 429 is the answer.

    The one place a token request's ``Retry-After`` is handled (the API's per-account bucket has its own, in
    ``api``): one retry, never a loop, because Lightspeed may block a client that keeps refreshing.
    """
    try:
        return send()
    except RateLimited as exc:
        pacer.hold(_hold_s(exc))
        _raise_if_too_long(exc, max_wait)
        pacer.on_time_sync(pacer.reserve())
        if not may_send():
            raise
        return send()


async def retry_once_after_async(
    send: Callable[[], Awaitable[T]],
    *,
    pacer: Pacer,
    max_wait: float,
    may_send: Callable[[], bool],
    offload: Offload,
    stopped: Callable[[], bool] | None = None,
) -> T:
    """``retry_once_after`` on an event loop: ``send()`` makes a new request (a coroutine) each time, and every
    call that reaches the shared slots (a database) goes through ``offload``, never on the loop: a stalled
    database must not freeze the loop's other senders. ``Stopped`` when ``stopped()`` turns true during the wait
    (the 429 was not processed: the connection is handed back unsent)."""
    try:
        return await send()
    except RateLimited as exc:
        await offload(pacer.hold, _hold_s(exc))
        _raise_if_too_long(exc, max_wait)
        slot = await offload(pacer.reserve)
        await pacer.on_time(slot, lambda: offload(pacer.reserve), lambda: offload(pacer.read_hold), stopped=stopped)
        if not may_send():
            raise
        return await send()


class Offload(Protocol):
    """Runs a blocking call off the event loop: ``await offload(fn, *args)`` (a run's ``DatabaseCalls``)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


#: The longest hold a ``Retry-After`` may put on every sender: a date far in the future (a provider's bug, a
#: skewed clock) must not stop a deployment's refreshes for days. Lightspeed's own waits are seconds to minutes.
MAX_HOLD_S = 3600.0


def _hold_s(exc: RateLimited) -> float:
    """How long a 429 holds every sender: its ``Retry-After`` (at most ``MAX_HOLD_S``). The hold binds every
    process even when this request gives up (invariant 7), so nobody else's request goes out before the
    provider's date either. A 429 without one is the answer as it is."""
    if exc.retry_after is None:
        raise exc
    return min(exc.retry_after, MAX_HOLD_S)


def _raise_if_too_long(exc: RateLimited, max_wait: float) -> None:
    if exc.retry_after is not None and exc.retry_after > max_wait:
        raise exc


__all__ = [
    "MAX_HOLD_S",
    "REFRESH",
    "LocalSlots",
    "Offload",
    "Pacer",
    "Slots",
    "Stopped",
    "retry_once_after",
    "retry_once_after_async",
]

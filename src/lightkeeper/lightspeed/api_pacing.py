"""Booking each account's API limits before a request leaves, for every process of a deployment.

``ApiPacer`` applies ``bucket``'s pure model to a state kept in a ``BucketRows``: the store's
``ApiBucketRepo`` (one row per account that every process sharing the database books, under a row lock and by
the database's clock) or ``LocalBucketRows`` (memory, one process: tests and library use without a store).
This package never imports the store: the repo fits the protocol by its shape.

A booking is a moment on the shared clock; the caller sleeps until it on its own monotonic clock and sends
right then. A caller that wakes late (a stalled loop, a slow thread) books again instead of sending: late
requests bunched together could break the burst window that their bookings kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lightkeeper.lightspeed.bucket import Booking, BucketState, Reading, book, hold, observe

T = TypeVar("T")

#: A send this much after its booked moment books again instead of leaving.
LATE_S = 0.05
#: An answer's level this much above the model (a request's worth) is news worth a write to the shared row.
_LEVEL_SURPRISE = 1.0
_BURST_SURPRISE = 2


class BucketRows(Protocol):
    """Where bucket states live: ``store.ApiBucketRepo`` (shared) or ``LocalBucketRows`` (this process)."""

    def transform(self, name: str, change: Callable[[str, float], tuple[str | None, T]]) -> tuple[T, float]: ...


class LocalBucketRows:
    """Bucket states of one process, in memory (the same contract as ``store.ApiBucketRepo``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rows: dict[str, str] = {}
        self._lock = threading.Lock()

    def transform(self, name: str, change: Callable[[str, float], tuple[str | None, T]]) -> tuple[T, float]:
        with self._lock:
            now = self._clock()
            new, result = change(self._rows.get(name, ""), now)
            if new is not None:
                self._rows[name] = new
        return result, now


@dataclass(frozen=True)
class Slot:
    """A booked send: leave at ``moment`` (this process's monotonic clock)."""

    account_id: str
    cost: float
    moment: float
    state: BucketState  # as booked, with this request counted in
    shared_at: float  # ``moment`` on the shared clock


@dataclass(frozen=True)
class Refusal:
    """The request would wait ``wait`` s, longer than the caller allows: nothing was booked."""

    wait: float


class ApiPacer:
    """Books requests into their account's bucket (thread-safe; one per process, or several on one store)."""

    def __init__(
        self,
        rows: BucketRows | None = None,
        *,
        client_id: str = "",
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rows: BucketRows = rows if rows is not None else LocalBucketRows()
        self._client_id = client_id
        self._monotonic, self._sleep = monotonic, sleep

    def name(self, account_id: str) -> str:
        """The bucket's row: Lightspeed keeps one per (account, OAuth client)."""
        return f"{self._client_id}/{account_id}"

    def book(self, account_id: str, cost: float, *, max_wait: float | None = None) -> Slot | Refusal:
        """The moment a request of ``cost`` may leave, counted in; a ``Refusal`` (nothing counted) when it
        would wait longer than ``max_wait``."""
        return self.book_many(account_id, [(cost, max_wait)])[0]

    def book_many(self, account_id: str, requests: Sequence[tuple[float, float | None]]) -> list[Slot | Refusal]:
        """``book`` for several requests of one account, in order, in one transaction: callers that arrive
        together share a write to the shared row (the proxy's group commit)."""

        def change(text: str, now: float) -> tuple[str | None, list[Booking | Refusal]]:
            state = BucketState.loads(text)
            results: list[Booking | Refusal] = []
            for cost, max_wait in requests:
                booking = book(state, now, cost)
                if max_wait is not None and booking.wait > max_wait:
                    results.append(Refusal(booking.wait))
                else:
                    state = booking.state
                    results.append(booking)
            booked = any(isinstance(result, Booking) for result in results)
            return (state.dumps() if booked else None), results

        results, _now = self._rows.transform(self.name(account_id), change)
        # Waits count from when the transaction ended: leaving later than the shared moment is safe.
        ended = self._monotonic()
        return [
            result
            if isinstance(result, Refusal)
            else Slot(account_id, cost, ended + result.wait, result.state, result.send_at)
            for result, (cost, _max_wait) in zip(results, requests, strict=True)
        ]

    def late(self, slot: Slot) -> bool:
        """Whether it is too late to send on ``slot`` (book again instead)."""
        return self._monotonic() - slot.moment > LATE_S

    def reserve(self, account_id: str, cost: float) -> Slot:
        """Book and sleep until the request may leave (sync callers); the slot it leaves on."""
        while True:
            slot = self.book(account_id, cost)
            assert isinstance(slot, Slot)  # no max_wait: never refused
            if (delay := slot.moment - self._monotonic()) > 0:
                self._sleep(delay)
            if not self.late(slot):
                return slot

    def observe(self, account_id: str, headers: Mapping[str, str], slot: Slot | None = None) -> None:
        """Correct the account's bucket by an answer's headers, when they say something new (see ``news``)."""
        reading = self.news(headers, slot)
        if reading is not None:
            self.correct(account_id, reading)

    def news(self, headers: Mapping[str, str], slot: Slot | None = None) -> Reading | None:
        """What an answer's headers say of the limits, if it is news against ``slot``'s state (what the model
        expected when the request was booked); None when there is nothing worth a write to the shared row."""
        reading = Reading.of(headers)
        if reading.empty or (slot is not None and not self._surprising(slot, reading)):
            return None
        return reading

    def correct(self, account_id: str, reading: Reading) -> None:
        """Apply an answer's ``reading`` to the shared state (a write only when it changes it)."""

        def change(text: str, now: float) -> tuple[str | None, None]:
            state = BucketState.loads(text)
            new = observe(state, now, reading)
            return (new.dumps() if new != state else None), None

        self._rows.transform(self.name(account_id), change)

    def _surprising(self, slot: Slot, reading: Reading) -> bool:
        state = slot.state
        if reading.size not in (None, state.size) or reading.drip not in (None, state.drip):
            return True
        if reading.burst_limit not in (None, state.burst_limit):
            return True
        now = slot.shared_at + max(0.0, self._monotonic() - slot.moment)
        if reading.used is not None and reading.used > state.level_at(now) + _LEVEL_SURPRISE:
            return True
        known = sum(1 for sent in state.sends if now - 1.0 < sent <= now)
        return reading.burst_used is not None and reading.burst_used > known + _BURST_SURPRISE

    def hold(self, account_id: str, retry_after: float, cost: float) -> None:
        """A 429 said "retry after": nothing of the account leaves before then, in any process."""

        def change(text: str, now: float) -> tuple[str | None, None]:
            return hold(BucketState.loads(text), now, retry_after, cost).dumps(), None

        self._rows.transform(self.name(account_id), change)

    def full(self, account_id: str) -> None:
        """A 429 that will not be waited out here: the bucket is full, whatever the model thought."""

        def change(text: str, now: float) -> tuple[str | None, None]:
            state = BucketState.loads(text)
            return observe(state, now, Reading(used=state.size)).dumps(), None

        self._rows.transform(self.name(account_id), change)


__all__ = ["LATE_S", "ApiPacer", "BucketRows", "LocalBucketRows", "Refusal", "Slot"]

"""Booking each account's API limits before a request leaves, for every process of a deployment.

``ApiPacer`` applies ``bucket``'s pure model to a state kept in a ``BucketRows``: the store's
``ApiBucketRepo`` (one row per account that every process sharing the database books, under a row lock and by
the database's clock) or ``LocalBucketRows`` (memory, one process: tests and library use without a store).
This package never imports the store: the repo fits the protocol by its shape.

A booking is a moment on the shared clock; the caller sleeps until it on its own monotonic clock and sends
right then. A caller that wakes late (a stalled loop, a slow thread) books again instead of sending: late
requests bunched together could break the burst window that their bookings kept.

``ApiPacing`` is what the proxy and the API clients ask of a model, so their code is one path for every
provider: ``ApiPacer`` (R-Series' leaky bucket and burst window) and ``window_pacing.WindowPacer`` (X-Series'
fixed window) implement it; each ``Provider`` names its own (``api_pacing``).
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol, TypeVar

from lightkeeper.lightspeed import credits
from lightkeeper.lightspeed.bucket import HEADROOM, Booking, BucketState, Reading, book, hold, observe, sends_between
from lightkeeper.lightspeed.credits import Credit

T = TypeVar("T")
S = TypeVar("S", bound="Booked")

#: A send this much after its booked moment books again instead of leaving.
LATE_S = 0.05
#: An answer's level this much above the model (a request's worth) is news worth a write to the shared row.
_LEVEL_SURPRISE = 1.0
_BURST_SURPRISE = 2
#: An answer's request cost other than its booked one (by more than rounding) is news: the row is corrected by
#: the difference, whether or not the answer reports a level.
_COST_SURPRISE = 1e-6


def late_after(state: BucketState) -> float:
    """How late a send may leave after its booked moment: ``LATE_S``, less for a fast drip into a nearly full
    bucket. A late request may arrive after one booked behind it, and the bucket then holds a little more than
    booked: the drip over the lateness must fit in what the booking left free (``state``: as booked, this request
    counted in), and at least in half the headroom. A bucket with room to spare (a huge one, or a quiet account)
    keeps ``LATE_S``: rebooking there would only spin (a wait of a microsecond for a drip of 1e9/s)."""
    if state.drip <= 0:
        return LATE_S
    free = max(HEADROOM / 2, state.size - HEADROOM - state.level)
    return min(LATE_S, free / state.drip)


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
    deadline: float = math.inf  # the latest this process may still send on it (a credit's end)


@dataclass(frozen=True)
class Refusal:
    """The request would wait ``wait`` s, longer than the caller allows: nothing was booked."""

    wait: float


class Booked(Protocol):
    """A booked send: it leaves at ``moment`` (this process's monotonic clock)."""

    @property
    def moment(self) -> float: ...


class ApiPacing(Protocol[S]):
    """A provider's API limits, booked before each request leaves and corrected by each answer, for every
    process of a deployment. ``S`` is the model's own record of a booking (``Slot``, ``WindowSlot``)."""

    def book_many(self, account_id: str, requests: Sequence[tuple[float, float | None]]) -> list[S | Refusal]:
        """Book requests of (cost, longest wait) of one account in order; a ``Refusal`` for one that would wait
        longer (nothing booked for it)."""
        ...

    def book_local(self, account_id: str, cost: float, *, max_wait: float | None = None) -> S | None:
        """A booking without the database, when this process may make one; else None (then ``book_many``)."""
        ...

    def late(self, slot: S) -> bool:
        """Whether it is too late to send on ``slot`` (book again instead)."""
        ...

    def reserve(self, account_id: str, cost: float) -> S:
        """Book and sleep until the request may leave (sync callers)."""
        ...

    def correction(
        self, account_id: str, headers: Mapping[str, str], slot: S | None = None
    ) -> Callable[[], None] | None:
        """What an answer's headers change in the shared state, to run off the event loop; None when they say
        nothing new against ``slot`` (no write)."""
        ...

    def observe(self, account_id: str, headers: Mapping[str, str], slot: S | None = None) -> None:
        """``correction`` applied here and now."""
        ...

    def hold(self, account_id: str, retry_after: float, cost: float) -> None:
        """A 429 said "retry after": nothing of the account leaves before then, in any process."""
        ...

    def full(self, account_id: str) -> None:
        """A 429 that will not be waited out: the account's limit is spent, whatever the model thought."""
        ...


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
        self._credits: dict[str, Credit] = {}
        self._demand = credits.Demand(monotonic)
        self._lock = threading.Lock()
        self._booker, self._booker_pid = "", -1

    @property
    def rows(self) -> BucketRows:
        """Where the account states live (the store's rows, or this process's memory): other models share it."""
        return self._rows

    @property
    def booker(self) -> str:
        """This process among those sharing the rows (a new name after ``fork``: the child is another booker)."""
        if self._booker_pid != os.getpid():
            self._booker, self._booker_pid = secrets.token_hex(6), os.getpid()
        return self._booker

    def name(self, account_id: str) -> str:
        """The bucket's row: Lightspeed keeps one per (account, OAuth client)."""
        return f"{self._client_id}/{account_id}"

    def book(self, account_id: str, cost: float, *, max_wait: float | None = None) -> Slot | Refusal:
        """The moment a request of ``cost`` may leave, counted in; a ``Refusal`` (nothing counted) when it
        would wait longer than ``max_wait``."""
        return self.book_many(account_id, [(cost, max_wait)])[0]

    def book_many(self, account_id: str, requests: Sequence[tuple[float, float | None]]) -> list[Slot | Refusal]:
        """``book`` for several requests of one account, in order: from this process's credit where it holds
        one (``credits``), the others in one transaction on the shared row (the proxy's group commit)."""
        self._demand.note(account_id, len(requests))
        results: list[Slot | Refusal | None] = [self._from_credit(account_id, *request) for request in requests]
        pending = [index for index, result in enumerate(results) if result is None]
        if pending:
            shared = self._book_shared(account_id, [requests[index] for index in pending])
            for index, result in zip(pending, shared, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    def _from_credit(self, account_id: str, cost: float, max_wait: float | None) -> Slot | None:
        with self._lock:
            credit = self._credits.get(account_id)
            taken = credit.book(cost, self._monotonic()) if credit is not None else None
            if credit is None or taken is None:
                return None
            left, booking = taken
            if max_wait is not None and booking.wait > max_wait:
                return None
            self._credits[account_id] = left
        moment = credit.moment(booking.send_at)
        return Slot(account_id, cost, moment, booking.state, booking.send_at, credit.moment(credit.until))

    def _book_shared(self, account_id: str, requests: Sequence[tuple[float, float | None]]) -> list[Slot | Refusal]:
        most = self._demand.credit_size(account_id)

        def change(text: str, now: float) -> tuple[str | None, tuple[list[Booking | Refusal], Credit | None]]:
            state = BucketState.loads(text)
            state = _rebased(state, self._pop_credit(account_id))  # no local booking from it while the row changes
            results: list[Booking | Refusal] = []
            for cost, max_wait in requests:
                booking = book(state, now, cost)
                if max_wait is not None and booking.wait > max_wait:
                    results.append(Refusal(booking.wait))
                else:
                    state = booking.state
                    results.append(booking)
            largest = max(cost for cost, _wait in requests)
            state, credit = credits.take(state, now, most, largest, booker=self.booker)
            changed = credit is not None or any(isinstance(result, Booking) for result in results)
            if changed:
                state = state.booked_by(self.booker, now, credit.id if credit is not None else "")
            return (state.dumps() if changed else None), (results, credit)

        (results, credit), now = self._rows.transform(self.name(account_id), change)
        # Waits count from when the transaction ended: leaving later than the shared moment is safe.
        ended = self._monotonic()
        if credit is not None:
            with self._lock:
                self._credits[account_id] = replace(credit, shared_at=now, monotonic_at=ended)
        return [
            result
            if isinstance(result, Refusal)
            else Slot(account_id, cost, ended + result.wait, result.state, result.send_at)
            for result, (cost, _max_wait) in zip(results, requests, strict=True)
        ]

    def _pop_credit(self, account_id: str) -> Credit | None:
        with self._lock:
            return self._credits.pop(account_id, None)

    def book_local(self, account_id: str, cost: float, *, max_wait: float | None = None) -> Slot | None:
        """A booking from this process's credit, without the database; None when there is none that fits (then
        ``book``). Cheap enough for an event loop."""
        slot = self._from_credit(account_id, cost, max_wait)
        if slot is not None:
            self._demand.note(account_id)
        return slot

    def late(self, slot: Slot) -> bool:
        """Whether it is too late to send on ``slot`` (book again instead)."""
        now = self._monotonic()
        return now - slot.moment > late_after(slot.state) or now > slot.deadline

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
            self.correct(account_id, reading, _booked(slot))

    def correction(
        self, account_id: str, headers: Mapping[str, str], slot: Slot | None = None
    ) -> Callable[[], None] | None:
        """``correct`` with what the headers say, when it is news (see ``news``); None otherwise."""
        reading = self.news(headers, slot)
        return None if reading is None else partial(self.correct, account_id, reading, _booked(slot))

    def news(self, headers: Mapping[str, str], slot: Slot | None = None) -> Reading | None:
        """What an answer's headers say of the limits, if it is news against ``slot``'s state (what the model
        expected when the request was booked); None when there is nothing worth a write to the shared row.
        The request's cost says something only against what ``slot`` booked: without one it is left out."""
        reading = Reading.of(headers)
        if slot is None:
            reading = replace(reading, cost=None)
        if reading.empty or (slot is not None and not self._surprising(slot, reading)):
            return None
        return reading

    def correct(self, account_id: str, reading: Reading, booked: float | None = None) -> None:
        """Apply an answer's ``reading`` to the shared state (a write only when it changes it); ``booked``: what
        the answer's request was booked at, which its cost corrects (``bucket.observe``)."""
        self._rewrite(account_id, lambda state, now: observe(state, now, reading, booked))

    def _rewrite(self, account_id: str, edit: Callable[[BucketState, float], BucketState]) -> None:
        """Change the shared state by ``edit`` (no write when nothing changes). This process's credit ends
        first: Lightspeed said something the model did not expect, so requests book in the row again."""
        mine = self._pop_credit(account_id)

        def change(text: str, now: float) -> tuple[str | None, None]:
            state = _rebased(BucketState.loads(text), mine)
            new = edit(state, now)
            return (new.booked_by(self.booker, now).dumps() if new != state else None), None

        self._rows.transform(self.name(account_id), change)

    def _surprising(self, slot: Slot, reading: Reading) -> bool:
        if reading.cost is not None and abs(reading.cost - slot.cost) > _COST_SURPRISE:
            return True  # booked too low (or too high): every later booking would inherit the error
        state = slot.state
        if reading.size not in (None, state.size) or reading.drip not in (None, state.drip):
            return True
        if reading.burst_limit not in (None, state.burst_limit):
            return True
        now = slot.shared_at + max(0.0, self._monotonic() - slot.moment)
        if reading.used is not None and reading.used > state.level_at(now) + _LEVEL_SURPRISE:
            return True
        known = sends_between(state.sends, now)
        return reading.burst_used is not None and reading.burst_used > known + _BURST_SURPRISE

    def hold(self, account_id: str, retry_after: float, cost: float) -> None:
        """A 429 said "retry after": nothing of the account leaves before then, in any process."""
        self._rewrite(account_id, lambda state, now: hold(state, now, retry_after, cost))

    def full(self, account_id: str) -> None:
        """A 429 that will not be waited out here: the bucket is full, whatever the model thought."""
        self._rewrite(account_id, lambda state, now: observe(state, now, Reading(used=state.size)))


def _booked(slot: Slot | None) -> float | None:
    return slot.cost if slot is not None else None


def _rebased(state: BucketState, mine: Credit | None) -> BucketState:
    """The row's state, or, when nobody wrote it since ``mine`` was reserved in it, the exact bookings made from
    that credit in place of its reservation: what was sent counts from when it was sent, and what was reserved
    but not used is free again."""
    if mine is None or state.credit != mine.id:
        return state
    return replace(mine.state, bookers=state.bookers, credit="")


__all__ = [
    "LATE_S",
    "ApiPacer",
    "ApiPacing",
    "Booked",
    "BucketRows",
    "LocalBucketRows",
    "Refusal",
    "Slot",
    "late_after",
]

"""Booking each store's API window before a request leaves, for every process of a deployment.

``WindowPacer`` applies ``window``'s pure model to a state kept in a ``BucketRows``: the store's
``ApiBucketRepo`` (the same table as R-Series' buckets, a row of its own per (client, store), booked under the
row's lock by the database's clock) or ``LocalBucketRows`` (memory, one process). It is the ``ApiPacing`` of
X-Series, so the proxy and the API clients run the same code for it as for R-Series' ``ApiPacer``.

Every request books in the row: a window of a few hundred requests per five minutes leaves nothing for a
process to gain from reserving ahead, and the proxy's group commit already shares one transaction among the
requests of a store that arrive together. An answer writes the row only when its headers say something the
booking did not expect (another limit, another window end, a higher count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from lightkeeper.lightspeed.api_pacing import BucketRows, LocalBucketRows, Refusal
from lightkeeper.lightspeed.window import WindowBooking, WindowReading, WindowState, book, full, hold, observe


@dataclass(frozen=True)
class WindowSlot:
    """A booked send: leave at ``moment``, and not after ``deadline`` (this process's monotonic clock)."""

    account_id: str
    moment: float
    deadline: float
    shared_at: float  # ``moment`` on the shared clock
    state: WindowState  # as booked, with this request counted in


class WindowPacer:
    """Books requests into their store's window (thread-safe; one per process, or several on one store)."""

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
        """The window's row: X-Series keeps one per (store, OAuth client); beside R-Series' bucket rows, never
        one of them."""
        return f"window:{self._client_id}/{account_id}"

    def book(self, account_id: str, cost: float = 1.0, *, max_wait: float | None = None) -> WindowSlot | Refusal:
        """The moment one request may leave, counted in (every request counts one, whatever ``cost``); a
        ``Refusal`` (nothing counted) when it would wait longer than ``max_wait``."""
        return self.book_many(account_id, [(cost, max_wait)])[0]

    def book_many(self, account_id: str, requests: Sequence[tuple[float, float | None]]) -> list[WindowSlot | Refusal]:
        """``book`` for several requests of one store, in order, in one transaction on its row."""

        def change(text: str, now: float) -> tuple[str | None, list[WindowBooking | Refusal]]:
            state = WindowState.loads(text)
            results: list[WindowBooking | Refusal] = []
            for _cost, max_wait in requests:
                booking = book(state, now)
                if max_wait is not None and booking.wait > max_wait:
                    results.append(Refusal(booking.wait))
                else:
                    state = booking.state
                    results.append(booking)
            changed = any(isinstance(result, WindowBooking) for result in results)
            return (state.dumps() if changed else None), results

        results, now = self._rows.transform(self.name(account_id), change)
        ended = self._monotonic()  # waits count from when the transaction ended: leaving later is safe
        return [
            result
            if isinstance(result, Refusal)
            else WindowSlot(
                account_id, ended + result.wait, ended + (result.deadline - now), result.send_at, result.state
            )
            for result in results
        ]

    def book_local(self, account_id: str, cost: float, *, max_wait: float | None = None) -> WindowSlot | None:
        """Never: every request books in the row (see the module's docstring)."""
        return None

    def late(self, slot: WindowSlot) -> bool:
        """Past its deadline, a request could be counted in a window that did not book it: book again."""
        return self._monotonic() > slot.deadline

    def reserve(self, account_id: str, cost: float = 1.0) -> WindowSlot:
        """Book and sleep until the request may leave (sync callers); the slot it leaves on."""
        while True:
            slot = self.book(account_id, cost)
            assert isinstance(slot, WindowSlot)  # no max_wait: never refused
            if (delay := slot.moment - self._monotonic()) > 0:
                self._sleep(delay)
            if not self.late(slot):
                return slot

    def correction(
        self, account_id: str, headers: Mapping[str, str], slot: WindowSlot | None = None
    ) -> Callable[[], None] | None:
        """``observe`` of the headers to run off the event loop, when they are news against ``slot``."""
        reading = WindowReading.of(headers)
        if reading.empty or (slot is not None and not _surprising(slot, reading)):
            return None
        booked_at = slot.shared_at if slot is not None else None
        return partial(self._rewrite, account_id, lambda state, now: observe(state, now, reading, booked_at))

    def observe(self, account_id: str, headers: Mapping[str, str], slot: WindowSlot | None = None) -> None:
        fix = self.correction(account_id, headers, slot)
        if fix is not None:
            fix()

    def hold(self, account_id: str, retry_after: float, cost: float = 1.0) -> None:
        """A 429 said "retry after": nothing of the store leaves before then, in any process."""
        self._rewrite(account_id, lambda state, now: hold(state, now, retry_after))

    def full(self, account_id: str) -> None:
        self._rewrite(account_id, full)

    def _rewrite(self, account_id: str, edit: Callable[[WindowState, float], WindowState]) -> None:
        def change(text: str, now: float) -> tuple[str | None, None]:
            state = WindowState.loads(text)
            new = edit(state, now)
            return (new.dumps() if new != state else None), None

        self._rows.transform(self.name(account_id), change)


def _surprising(slot: WindowSlot, reading: WindowReading) -> bool:
    """Whether an answer says what the booking did not expect: another limit, a window end the model only
    guessed or had otherwise, or more requests counted than the model had booked when this one was."""
    state = slot.state
    if reading.limit is not None and reading.limit != state.limit:
        return True
    end = reading.end(slot.shared_at)
    if end is not None and (not state.confirmed or abs(end - state.end) > 0.5):
        return True
    limit = reading.limit if reading.limit is not None else state.limit
    return reading.remaining is not None and limit - reading.remaining > state.used


__all__ = ["WindowPacer", "WindowSlot"]

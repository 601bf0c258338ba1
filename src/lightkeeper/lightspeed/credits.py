"""Booking without a database round trip: a process's credit in an account's shared bucket.

Booking each request in the shared row costs a transaction (a few round trips to PostgreSQL) on the request's
path. A process that sends an account several requests a second instead reserves a little ahead: in the same
transaction as a booking it needs anyway, ``bucket.reserve_ahead`` books up to ``most`` requests at ``until``
(``CREDIT_S`` from now), where they are on the safe side for every other process, which can only book after
them. Until then the process books those requests locally, with the same model, from the state as it was
before the reservation: the bucket and the burst window are honoured exactly as if each request had been
booked in the row, and nothing it does there can surprise the others.

A credit ends at ``until``, when its requests or units are spent, and when Lightspeed says something the model
did not expect (a ``Retry-After``, a higher level): what is left of it stays reserved in the row and drains.
When the process books in the row again and the row is still as its credit left it (its ``credit`` id), the
process's own exact bookings replace the reservation: what it sent is counted when it was sent, and a caller
that comes just after a credit ran out does not wait for its end.
"""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from lightkeeper.lightspeed.bucket import Booking, BucketState, book, reserve_ahead

#: How far ahead a credit reaches: other processes book this account after it (they wait at most this long).
CREDIT_S = 0.05
#: Another process that booked the account within this long makes this one book in the row, request by request.
SOLE_USER_S = 1.0
#: The most requests one credit holds.
CREDIT_MAX = 50
#: A local booking keeps this much before the credit's end: its send may leave a little after its moment.
_END_MARGIN_S = 0.01


@dataclass(frozen=True)
class Credit:
    """Requests reserved in the shared row until ``until`` (shared clock), booked here from ``state``."""

    id: str
    until: float
    state: BucketState  # the row as it was before the reservation, plus what this process booked from it since
    sends: int
    units: float
    shared_at: float  # the shared clock's reading when ``monotonic_at`` was this process's monotonic clock
    monotonic_at: float

    def book(self, cost: float, monotonic: float) -> tuple[Credit, Booking] | None:
        """A booking from the credit for a request of ``cost``, and the credit as it would be after it; None when
        it does not fit. Nothing changes until the caller keeps the credit it was given."""
        if self.sends < 1 or self.units < cost:
            return None
        now = self.shared_at + (monotonic - self.monotonic_at)
        booking = book(self.state, now, cost)
        if booking.send_at > self.until - _END_MARGIN_S:
            return None
        left = replace(self, state=booking.state, sends=self.sends - 1, units=self.units - cost)
        return left, booking

    def moment(self, shared: float) -> float:
        """A moment on the shared clock as this process's monotonic clock reads it."""
        return self.monotonic_at + (shared - self.shared_at)


def take(state: BucketState, now: float, most: int, cost: float, *, booker: str) -> tuple[BucketState, Credit | None]:
    """The row's new state and a credit of up to ``most`` requests of ``cost`` for ``booker``: None when none fit
    without waiting, or when another process booked the account in the last ``SOLE_USER_S`` (a credit makes
    the others book after its end: it is only worth it for an account one process calls alone)."""
    if most < 1 or state.others_since(booker, now - SOLE_USER_S):
        return state, None
    until = max(now, state.at) + CREDIT_S  # after the requests booked before it, which may be ahead of now
    reserved, count = reserve_ahead(state, until, most, cost)
    if count < 1:
        return state, None
    return reserved, Credit(secrets.token_hex(4), until, state, count, count * cost, now, 0.0)


class Demand:
    """How many requests this process booked for each account in the last second: a credit's size."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._recent: dict[str, collections.deque[float]] = {}

    def note(self, account_id: str, count: int = 1) -> None:
        recent = self._recent.setdefault(account_id, collections.deque(maxlen=4 * CREDIT_MAX * 10))
        now = self._monotonic()
        recent.extend([now] * count)

    def credit_size(self, account_id: str) -> int:
        """Requests worth reserving for the next ``CREDIT_S``: the last second's rate over that time (0 for an
        account sent less than a few requests a second, which gains nothing from a credit)."""
        recent = self._recent.get(account_id)
        if not recent:
            return 0
        horizon = self._monotonic() - 1.0
        while recent and recent[0] < horizon:
            recent.popleft()
        expected = int(2 * len(recent) * CREDIT_S)  # twice the rate: a credit rarely runs out before its end
        return min(CREDIT_MAX, expected) if expected >= 2 else 0


__all__ = ["CREDIT_MAX", "CREDIT_S", "SOLE_USER_S", "Credit", "Demand", "take"]

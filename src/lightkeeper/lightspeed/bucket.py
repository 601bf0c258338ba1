"""Lightspeed's API limits as a model: the leaky bucket and the burst limiter of one (account, client).

Lightspeed meters each (account, OAuth client) twice (docs/LIGHTSPEED.md):

- a **leaky bucket**: every request adds its cost, the level drains at the drip rate, and a request that
  would overflow gets 429 ``api-leaky-bucket``;
- a **burst limiter**: at most so many requests in any one-second window, else 429 ``api-burst-limiter``.

Every process of a deployment is the same client, so the state lives in one shared place (the store's
``lightkeeper_api_buckets`` row, or memory for one process) and is changed by the pure functions here, each a
function of the state and of "now" on that place's clock:

- ``book``: the moment a request of some cost may leave, and the state with it counted in;
- ``observe``: the state corrected by an answer's headers (size, drip rate, level, burst level, and the
  request's own cost against what it was booked at);
- ``hold``: the state after a 429's ``Retry-After``.

Sizes and rates come from the headers, never assumed: the defaults below only serve until the first answer,
and they are small enough that whatever goes out before it fits any documented bucket.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

#: Until Lightspeed's headers say otherwise (docs/LIGHTSPEED.md: bucket 90, drip 1/s for one register).
DEFAULT_SIZE = 90.0
DEFAULT_DRIP = 1.0
#: Lower than any burst limit seen (``1/20`` in Lightspeed's example); the header corrects it.
DEFAULT_BURST = 10
#: Keep this much of the bucket free: the provider's clock and ours drift, and answers report late.
HEADROOM = 1.0
#: The burst window, and the margin a request keeps from its edge (a send leaves a few ms after its moment).
BURST_WINDOW_S = 1.0
BURST_MARGIN_S = 0.05
#: Sends are counted in slots this wide, each send at its slot's end (later than it was: the safe side). The
#: state then holds at most a window's worth of slots however high the limit and the rate, where a list of
#: every send made booking cost grow with the traffic (0.27 ms a booking at 400 sends a second).
BURST_SLOT_S = 0.01

#: (slot end, sends in the slot), oldest first.
Slots = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class BucketState:
    """One (account, client)'s limits as last known; times are seconds on the shared clock."""

    level: float = 0.0
    at: float = 0.0  # when ``level`` holds: the latest booked send (may be ahead of now)
    size: float = DEFAULT_SIZE
    drip: float = DEFAULT_DRIP
    burst_limit: int = DEFAULT_BURST
    sends: Slots = ()  # the booked sends of the last window, by slot
    hold_until: float = 0.0  # a 429's Retry-After: nothing leaves before
    # The last two processes that booked in the row and when, latest first (``credits`` are only for an
    # account's sole user).
    bookers: tuple[tuple[str, float], ...] = ()
    credit: str = ""  # the credit the last write reserved (``credits``), if it did

    def level_at(self, moment: float) -> float:
        return max(0.0, self.level - max(0.0, moment - self.at) * self.drip)

    def dumps(self) -> str:
        fields = [self.level, self.at, self.size, self.drip, self.burst_limit, self.sends, self.hold_until]
        return json.dumps([*fields, self.bookers, self.credit])

    @classmethod
    def loads(cls, text: str | None) -> BucketState:
        """The state stored as ``dumps`` wrote it; a fresh one for no row or an unreadable one."""
        if not text:
            return cls()
        try:
            level, at, size, drip, burst, sends, hold, bookers, credit = json.loads(text)
            slots = _slots(sends)
            numbers = (float(level), float(at), float(size), float(drip), float(hold))
            limit = max(1, int(burst))
            who = tuple((str(name), float(moment)) for name, moment in bookers[:2])
            credit = str(credit)
        except (ValueError, TypeError, OverflowError):
            slots = None
        ends = [end for end, _count in slots or ()]
        if slots is None or not all(math.isfinite(n) for n in (*numbers, *ends)) or min(numbers[2:4]) <= 0:
            return cls()  # a row from another version, or damaged: start over, the next answer corrects it
        return cls(numbers[0], numbers[1], numbers[2], numbers[3], limit, slots, numbers[4], who, credit)

    def booked_by(self, booker: str, now: float, credit: str = "") -> BucketState:
        """The state as ``booker`` writes it at ``now`` (the other latest booker kept beside it), with the id of
        the credit that write reserved, if any."""
        others = [entry for entry in self.bookers if entry[0] != booker][:1]
        return replace(self, bookers=((booker, now), *others), credit=credit)

    def others_since(self, booker: str, moment: float) -> bool:
        """Whether a process other than ``booker`` booked after ``moment``."""
        return any(name != booker and at > moment for name, at in self.bookers)


@dataclass(frozen=True)
class Booking:
    """When a request may leave (``send_at``, on the shared clock) and the state with it counted in."""

    send_at: float
    wait: float
    state: BucketState


def book(state: BucketState, now: float, cost: float) -> Booking:
    """The earliest moment a request of ``cost`` fits both limits, after every request booked before it."""
    start = max(now, state.at, state.hold_until)
    overflow = state.level_at(start) + cost - (state.size - HEADROOM)
    send_at = start + (max(0.0, overflow) / state.drip if state.drip > 0 else 0.0)
    # Sends that left the window before ``start`` can bind nothing booked from now on: only the rest is kept.
    sends = tuple(slot for slot in state.sends if slot[0] > start - BURST_WINDOW_S - BURST_MARGIN_S)
    if (latest := _nth_latest(sends, max(1, state.burst_limit))) is not None:
        send_at = max(send_at, latest + BURST_WINDOW_S + BURST_MARGIN_S)  # it must have left the window
    booked = replace(state, level=state.level_at(send_at) + cost, at=send_at, sends=_add(sends, send_at))
    return Booking(send_at, send_at - now, booked)


def reserve_ahead(state: BucketState, until: float, most: int, cost: float = 1.0) -> tuple[BucketState, int]:
    """Up to ``most`` requests of ``cost`` booked at ``until`` that fit there without waiting, while the bucket
    and the burst window stay at most half full: the state with them counted in, and how many.

    A process that holds them may send that many (and that many units of cost) at any moment before ``until``: counted
    at ``until``, the latest they can leave, they are on the safe side for everyone booking after them (a send
    made earlier has drained more, and left the burst window sooner). Only a roomy bucket is reserved ahead:
    near its limits every unit must go to a request that is really there, in the order it came.
    """
    count = 0
    while count < most:
        booking = book(state, until, cost)
        roomy = booking.state.level_at(until) <= (state.size - HEADROOM) / 2
        if booking.send_at > until or not roomy or _in_window(booking.state.sends, until) > state.burst_limit / 2:
            break
        state, count = booking.state, count + 1
    return state, count


def _in_window(sends: Slots, moment: float) -> int:
    return sum(count for end, count in sends if end > moment - BURST_WINDOW_S)


@dataclass(frozen=True)
class Reading:
    """What one answer's headers say of the limits (None: not said)."""

    used: float | None = None
    size: float | None = None
    drip: float | None = None
    burst_used: int | None = None
    burst_limit: int | None = None
    cost: float | None = None  # what the request itself cost (``X-LS-API-Request-Cost``)

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Reading:
        used, size = _fraction(headers.get("x-ls-api-bucket-level"))
        burst_used, burst_limit = _fraction(headers.get("x-ls-api-burst-level"))
        return cls(
            used=used,
            size=size if size and size > 0 else None,
            drip=_positive(headers.get("x-ls-api-drip-rate")),
            burst_used=int(burst_used) if burst_used is not None else None,
            burst_limit=int(burst_limit) if burst_limit and burst_limit >= 1 else None,
            cost=_charged(headers),
        )

    @property
    def empty(self) -> bool:
        return self == Reading()


def observe(state: BucketState, now: float, reading: Reading, booked: float | None = None) -> BucketState:
    """``state`` corrected by an answer read at ``now``; ``booked``: what its request was booked at, if it was.

    The level an answer reports leaves out requests still in flight (booked, sent by other workers, not yet
    counted by Lightspeed), so it may only raise the model, never lower it: a higher level means someone else
    spends the bucket (another app of the merchant) or a request cost more than booked. Overestimates drain
    away at the drip rate. The burst level likewise only adds sends the model did not know of.

    The request's own cost is exact news of one entry of the model: it was counted at ``booked``, Lightspeed
    charged ``reading.cost``, so the model moves by the difference (either way), at its latest booking.
    """
    new = replace(
        state,
        size=reading.size or state.size,
        drip=reading.drip or state.drip,
        burst_limit=reading.burst_limit or state.burst_limit,
    )
    if reading.cost is not None and booked is not None and reading.cost != booked:
        # First the model's own record of this request, then the reported level as a floor, never the other
        # way round. The reported level already holds the real cost, so adding the difference to it would
        # count that twice; and the floor alone is not enough: the model stands above the reported level by
        # whatever is in flight, and a cost booked too low hides under that margin, unseen by ``max``, as
        # long as other requests are in flight (each write of a busy account adding to it). Corrected here,
        # the model counts this request once, at its real cost, and ``max`` of two estimates of one total
        # counts nothing twice. (An answer arriving after another whose level already held this cost, and
        # raised the model to it, makes the difference count twice: an overestimate, which drains.)
        at = max(now, new.at)
        new = replace(new, level=max(0.0, new.level_at(at) + reading.cost - booked), at=at)
    if reading.used is not None:
        at = max(now, new.at)
        new = replace(new, level=max(new.level_at(at), reading.used - (at - now) * new.drip), at=at)
    if reading.burst_used is not None and (extra := reading.burst_used - sends_between(new.sends, now)) > 0:
        new = replace(new, sends=_add(new.sends, now, extra))
    return new


def sends_between(sends: Slots, now: float) -> int:
    """How many of the model's sends Lightspeed counts in its window at ``now`` (those of its slot included)."""
    return sum(count for end, count in sends if now - BURST_WINDOW_S < end <= now + BURST_SLOT_S)


def _nth_latest(sends: Slots, n: int) -> float | None:
    """The latest moment the n-th most recent send may have left (its slot's end), or None if there are fewer."""
    total = 0
    for end, count in reversed(sends):
        total += count
        if total >= n:
            return end
    return None


def _slot_end(moment: float) -> float:
    """The end of ``moment``'s slot: never before it (rounding to whole microseconds included)."""
    end = round(math.ceil(moment / BURST_SLOT_S) * BURST_SLOT_S, 6)
    while end < moment:
        end = round(end + BURST_SLOT_S, 6)
    return end


def _add(sends: Slots, moment: float, count: int = 1) -> Slots:
    """``sends`` with ``count`` more at ``moment`` (in its slot), kept in order."""
    end = _slot_end(moment)
    if not sends or sends[-1][0] < end:  # the usual case: a send after every other
        return (*sends, (end, count))
    if sends[-1][0] == end:
        return (*sends[:-1], (end, sends[-1][1] + count))
    slots = dict(sends)
    slots[end] = slots.get(end, 0) + count
    return tuple(sorted(slots.items()))


def _slots(value: object) -> Slots:
    """Stored slots, checked: a list of ``[end, count]`` pairs."""
    if not isinstance(value, list):
        raise TypeError("sends")
    slots: list[tuple[float, int]] = []
    for pair in value:
        end, count = pair  # ValueError/TypeError for anything but a pair
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TypeError("count")
        if slots and float(end) <= slots[-1][0]:
            raise ValueError("slots out of order")  # ``dumps`` writes them in order, one per end
        slots.append((float(end), count))
    return tuple(slots)


def hold(state: BucketState, now: float, retry_after: float, cost: float) -> BucketState:
    """A 429 said "retry after ``retry_after`` s": nothing leaves before then, and then the refused request
    (``cost``) fits and the others drip behind it."""
    until = max(now + max(0.0, retry_after), state.hold_until)
    at = max(state.at, until)
    level = max(state.level_at(at), state.size - HEADROOM - cost)
    return replace(state, level=level, at=at, hold_until=until)


def retry_after_s(wait: float) -> int:
    """A wait as ``Retry-After`` seconds: whole, rounded up, at least 1."""
    return max(1, math.ceil(wait))


def parse_bucket(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """``(used, size)`` from ``X-LS-API-Bucket-Level: 11/90``, or None."""
    used, size = _fraction(headers.get("x-ls-api-bucket-level"))
    return (used, size) if used is not None and size is not None else None


def _fraction(value: str | None) -> tuple[float | None, float | None]:
    used, _, size = (value or "").partition("/")
    try:
        first, second = float(used), float(size)
    except ValueError:
        return None, None
    if not (math.isfinite(first) and math.isfinite(second)) or first < 0:
        return None, None
    return first, second


def _charged(headers: Mapping[str, str]) -> float | None:
    """``X-LS-API-Request-Cost``, unless the answer is a 429 (it names ``X-LS-API-RateLimit-Type``): a refused
    request is charged nothing, whatever it would have cost, and its ``hold`` already fills the model."""
    if headers.get("x-ls-api-ratelimit-type") is not None:
        return None
    return _positive(headers.get("x-ls-api-request-cost"))


def _positive(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


__all__ = [
    "BURST_SLOT_S",
    "DEFAULT_BURST",
    "DEFAULT_DRIP",
    "DEFAULT_SIZE",
    "HEADROOM",
    "Booking",
    "BucketState",
    "Reading",
    "book",
    "hold",
    "observe",
    "parse_bucket",
    "reserve_ahead",
    "retry_after_s",
    "sends_between",
]

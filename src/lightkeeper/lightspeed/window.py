"""A fixed window of requests per (store, OAuth client), as a model: X-Series' API limit. Pure functions.

X-Series counts each (store, app)'s API requests in a window: ``300 x registers + 50`` per 5 minutes
(docs/LIGHTSPEED.md). Answers say where the window stands: ``X-RateLimit-Limit`` (its size),
``X-RateLimit-Remaining`` and, where it is sent, ``X-RateLimit-Reset`` (its end, unix seconds). A request over
the limit gets 429 with ``Retry-After`` as an HTTP date. Every process of a deployment is that one app, so the
state lives in one shared place (a ``lightkeeper_api_buckets`` row, or memory for one process) and is changed
by the functions here, each a function of the state and of "now" on that place's clock:

- ``book``: the moment a request may leave, in the first window with room, and the state with it counted in;
- ``observe``: the state corrected by an answer's headers (the limit; the count and end of the window);
- ``hold``: the state after a 429's ``Retry-After``: nothing leaves before it, and the window is full till then.

Where a window's edges are is known only approximately: ``Reset`` is a whole second (the window may end up to a
second before it), and a request that leaves just before an edge may be counted after it. So requests booked in
the last ``SPILL_S`` of a window are counted again in the next one (``carried``): at an edge the model gives
away a little throughput, never the limit. X-Series starts a window when it counts the first request after the
last one ended, so a window the model opens itself (at that request) is guessed to end ``window_s`` plus
``IN_FLIGHT_S`` later, until an answer's ``Reset`` says when. ``window_s`` is ``DEFAULT_WINDOW_S`` until the
answer to a window's first request teaches it (``Reset`` minus when that request was booked: never shorter
than the real window). ``tests/unit/test_window.py`` replays random traffic against a strict provider of that
kind: the model never goes over.

The defaults are constants, not settings: they are Lightspeed's documented minimum (one register) and serve only
until the first answer, whose headers are the truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

#: X-Series' documented limit for a store with one register (``300 x 1 + 50`` per 300 s): assumed until an
#: answer says otherwise. Any store's real limit is at least this.
DEFAULT_LIMIT = 350
DEFAULT_WINDOW_S = 300.0
#: ``X-RateLimit-Reset`` is whole seconds: the window may end up to this much before it.
RESET_ROUNDING_S = 1.0
#: How long a request may take from leaving here to being counted there.
IN_FLIGHT_S = 1.0
#: Requests booked this close to a window's end may be counted in the next window: they count in both.
SPILL_S = RESET_ROUNDING_S + IN_FLIGHT_S
#: A new window opens this long after the last one's end (our clock and X-Series' may differ a little).
SKEW_S = 0.5
#: A booked request leaves within this long of its moment, else it books again.
LATE_S = 0.25
#: Booked sends are kept in slots this wide, for as long as a window's spill may need them.
SEND_SLOT_S = 0.1
KEEP_S = SPILL_S + 1.0
#: A learned window length stays within these bounds.
MIN_WINDOW_S, MAX_WINDOW_S = 1.0, 3600.0
#: A ``Reset`` below this is seconds from now rather than a unix time (some APIs send it so).
_EPOCH_FROM = 1e9

#: (slot end, sends in the slot), oldest first.
Slots = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class WindowState:
    """One (store, client)'s window as last known; times are seconds on the shared clock."""

    limit: int = DEFAULT_LIMIT
    window_s: float = DEFAULT_WINDOW_S
    start: float = 0.0
    end: float = 0.0  # 0: no window yet
    used: int = 0  # requests counted in the window (those carried from the last one's edge included)
    confirmed: bool = False  # ``end`` is X-Series' word (an answer's Reset), not the model's own guess
    hold_until: float = 0.0  # a 429's Retry-After: nothing leaves before
    sends: Slots = ()  # the window's recent booked sends, for what its edge carries into the next one
    reported: int = 0  # the highest count an answer gave for this window (added to a window booked ahead once)

    def carried(self) -> int:
        """The requests booked within ``SPILL_S`` of the window's end: X-Series may count them in the next one."""
        return sum(count for end, count in self.sends if end > self.end - SPILL_S)

    def dumps(self) -> str:
        fields = [self.limit, self.window_s, self.start, self.end, self.used, self.confirmed, self.hold_until]
        return json.dumps([*fields, self.sends, self.reported])

    @classmethod
    def loads(cls, text: str | None) -> WindowState:
        """The state as ``dumps`` wrote it; a fresh one for no row or an unreadable one."""
        if not text:
            return cls()
        try:
            limit, window_s, start, end, used, confirmed, hold_until, sends, reported = json.loads(text)
            numbers = (float(window_s), float(start), float(end), float(hold_until))
            counts = (int(limit), int(used), int(reported))
            slots = tuple((float(at), int(count)) for at, count in sends)
        except (ValueError, TypeError, OverflowError):
            return cls()  # a row from another version, or damaged: start over, the next answer corrects it
        if not all(math.isfinite(n) for n in (*numbers, *(at for at, _ in slots))) or counts[0] < 1 or min(counts) < 0:
            return cls()
        return cls(
            counts[0], numbers[0], numbers[1], numbers[2], counts[1], bool(confirmed), numbers[3], slots, counts[2]
        )


@dataclass(frozen=True)
class WindowBooking:
    """When a request may leave (``send_at``, shared clock), the latest it still may, and the state after it."""

    send_at: float
    wait: float
    deadline: float
    state: WindowState


def book(state: WindowState, now: float) -> WindowBooking:
    """The earliest moment one more request fits a window, after every request booked before it."""
    at = max(now, state.hold_until, state.start)  # a window booked ahead (the last one was full) starts later
    current = state
    if current.end <= 0 or at >= current.end:  # no window, or it is over: the next opens at this request
        at = max(at, current.end + SKEW_S) if current.end > 0 else at
        current = _opened(current, at)
    while current.used >= current.limit:  # full (or filled by what the last one carried): the one after it
        at = max(at, current.end + SKEW_S)
        current = _opened(current, at)
    edge = current.end - SPILL_S
    # A request booked before the edge must leave before it: later, it could be counted in the next window
    # without being carried there. One booked at the edge is carried, so it may leave until the end.
    deadline = min(at + LATE_S, current.end if at > edge else edge)
    booked = replace(current, used=current.used + 1, sends=_add(_recent(current.sends, now), at))
    return WindowBooking(at, at - now, deadline, booked)


def _opened(state: WindowState, at: float) -> WindowState:
    """A new window from ``at``, holding what the last one's edge carried while that may still count. X-Series'
    window starts when it counts its first request, up to ``IN_FLIGHT_S`` after that request left: the model's
    guess of its end allows for that (an answer's ``Reset`` then says)."""
    live = state.end > 0 and at < state.end + IN_FLIGHT_S + state.window_s
    carried = min(state.carried(), state.limit) if live else 0
    end = at + state.window_s + IN_FLIGHT_S
    return replace(state, start=at, end=end, used=carried, confirmed=False, sends=(), reported=0)


@dataclass(frozen=True)
class WindowReading:
    """What one answer's headers say of the window (None: not said)."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> WindowReading:
        limit = _whole(headers.get("x-ratelimit-limit"))
        return cls(
            limit=limit if limit is not None and limit >= 1 else None,
            remaining=_whole(headers.get("x-ratelimit-remaining")),
            reset=_number(headers.get("x-ratelimit-reset")),
        )

    @property
    def empty(self) -> bool:
        return self == WindowReading()

    def end(self, now: float) -> float | None:
        """The window's end on the shared clock (``Reset`` as a unix time, or as seconds from ``now``)."""
        if self.reset is None:
            return None
        return self.reset if self.reset >= _EPOCH_FROM else now + self.reset


def observe(state: WindowState, now: float, reading: WindowReading, booked_at: float | None = None) -> WindowState:
    """``state`` corrected by an answer read at ``now`` to a request booked at ``booked_at`` (if known).

    The count an answer reports leaves out requests still in flight, so it only ever raises the model's count,
    never lowers it. Its ``Reset`` replaces the model's guess of the window's end; one that names a window
    before the model's current one (an answer that came late) says nothing of the current one."""
    limit = reading.limit if reading.limit is not None else state.limit
    state = replace(state, limit=limit)
    if reading.remaining is None:
        return state
    count = max(0, limit - reading.remaining)
    live = state.end > now
    end = reading.end(now)
    if end is None:  # no Reset (X-Series documents only Limit and Remaining): merge the count where it can
        if live and state.start <= now:
            return replace(state, used=max(state.used, count), reported=max(state.reported, count))
        if live:  # the model books a later window already: this answer is of the one before
            return state
        end = now + state.window_s + IN_FLIGHT_S
        return replace(state, start=now, end=end, used=count, confirmed=False, sends=(), reported=count)
    if end <= now or (live and end <= state.start):
        return state  # the window it names is over, or is one before the model's
    window_s = state.window_s
    if booked_at is not None and reading.remaining == limit - 1:  # the answer to a window's first request
        window_s = min(MAX_WINDOW_S, max(MIN_WINDOW_S, end - booked_at))
    reported = max(state.reported, count)
    if live and state.start > now:
        # The model books a later window already (the last one was full), and X-Series' current one reaches
        # into it: what it counted and what is booked there add up (nothing booked there has left yet), each
        # count once however many answers report it.
        used = state.used + reported - state.reported
        return replace(state, window_s=window_s, end=end, used=used, confirmed=True, reported=reported)
    if live:
        used = max(state.used, count)
        return replace(state, window_s=window_s, end=end, used=used, confirmed=True, reported=reported)
    carried = state.carried() if state.end > 0 and now < state.end + IN_FLIGHT_S + state.window_s else 0
    used = max(count, carried)
    return replace(state, window_s=window_s, start=now, end=end, used=used, confirmed=True, sends=(), reported=count)


def hold(state: WindowState, now: float, retry_after: float) -> WindowState:
    """A 429 said "retry after ``retry_after`` s": nothing leaves before then, and the window is full until then
    (X-Series' ``Retry-After`` is the window's end: it replaces the model's guess, never a confirmed later end)."""
    until = now + max(0.0, retry_after)
    hold_until = max(state.hold_until, until)
    if state.end > now:
        end = max(state.end, until) if state.confirmed else until
        return replace(state, hold_until=hold_until, used=max(state.used, state.limit), end=end)
    return replace(
        state, hold_until=hold_until, start=now, end=until, used=state.limit, confirmed=False, sends=(), reported=0
    )


def full(state: WindowState, now: float) -> WindowState:
    """A 429 that will not be waited out here: the window is full, whatever the model thought."""
    if state.end > now:
        return replace(state, used=max(state.used, state.limit))
    end = now + state.window_s + IN_FLIGHT_S
    return replace(state, start=now, end=end, used=state.limit, confirmed=False, sends=(), reported=0)


def _recent(sends: Slots, now: float) -> Slots:
    """The slots a window's spill may still need: an end moved earlier by an answer stays after ``now``."""
    return tuple(slot for slot in sends if slot[0] > now - KEEP_S)


def _slot_end(moment: float) -> float:
    """The end of ``moment``'s slot: never before it (rounding to whole microseconds included)."""
    end = round(math.ceil(moment / SEND_SLOT_S) * SEND_SLOT_S, 6)
    while end < moment:
        end = round(end + SEND_SLOT_S, 6)
    return end


def _add(sends: Slots, moment: float) -> Slots:
    """``sends`` with one more at ``moment`` (in its slot), kept in order."""
    end = _slot_end(moment)
    if not sends or sends[-1][0] < end:
        return (*sends, (end, 1))
    slots = dict(sends)
    slots[end] = slots.get(end, 0) + 1
    return tuple(sorted(slots.items()))


def _whole(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_WINDOW_S",
    "IN_FLIGHT_S",
    "LATE_S",
    "SKEW_S",
    "SPILL_S",
    "WindowBooking",
    "WindowReading",
    "WindowState",
    "book",
    "full",
    "hold",
    "observe",
]

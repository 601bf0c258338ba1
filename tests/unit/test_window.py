"""``lightspeed.window``: the pure model of X-Series' fixed window, and ``WindowPacer`` over memory rows.

Every model function is a function of a state and of "now", so the tests pass times explicitly (unix times:
``X-RateLimit-Reset`` is one). The property test at the end books random traffic, sends it at the booked
moments (a little late at times) with random latencies, and replays it against a strict provider that counts
requests in a window starting at the first request after the last one ended (as X-Series documents "per 5
minutes", and as the simulator does) and refuses whatever goes over: the model must never go over.
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.lightspeed.api_pacing import LocalBucketRows, Refusal
from lightkeeper.lightspeed.window import (
    DEFAULT_LIMIT,
    DEFAULT_WINDOW_S,
    IN_FLIGHT_S,
    LATE_S,
    SKEW_S,
    SPILL_S,
    WindowReading,
    WindowState,
    book,
    full,
    hold,
    observe,
)
from lightkeeper.lightspeed.window_pacing import WindowPacer, WindowSlot
from tests.unit.test_api_pacing import CountingRows

T0 = 1_780_000_000.0  # a unix time: the shared clock at the start of each test
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def headers(limit: int, remaining: int, reset: float | None = None) -> dict[str, str]:
    found = {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining)}
    if reset is not None:
        found["x-ratelimit-reset"] = str(math.ceil(reset))
    return found


def book_all(state: WindowState, now: float, count: int) -> tuple[list[float], WindowState]:
    moments = []
    for _ in range(count):
        booking = book(state, now)
        assert booking.wait == pytest.approx(booking.send_at - now)
        moments.append(booking.send_at)
        state = booking.state
    return moments, state


# -- before any answer: the documented minimum ------------------------------------------------------------


def test_a_fresh_store_allows_the_documented_350_in_300_s_then_waits_for_the_next_window() -> None:
    assert (DEFAULT_LIMIT, DEFAULT_WINDOW_S) == (350, 300.0)
    moments, state = book_all(WindowState(), T0, 351)
    assert moments[:350] == [T0] * 350  # a window holds its whole limit at once
    # The 351st: the next window, after this one's end. X-Series starts a window when it counts its first request,
    # which may be up to IN_FLIGHT_S after it left: until an answer says, the model's window allows for that.
    assert moments[350] == pytest.approx(T0 + 300 + IN_FLIGHT_S + SKEW_S)
    assert state.used == 1
    assert state.start == pytest.approx(T0 + 300 + IN_FLIGHT_S + SKEW_S)


def test_a_window_that_ended_opens_a_new_one_at_the_next_request() -> None:
    _moments, state = book_all(WindowState(limit=5, window_s=10), T0, 5)
    later = book(state, T0 + 60)
    assert later.wait == 0
    assert (later.state.start, later.state.end, later.state.used) == (T0 + 60, T0 + 70 + IN_FLIGHT_S, 1)


# -- answers ------------------------------------------------------------------------------------------------


def test_the_headers_teach_the_limit_the_count_and_the_end() -> None:
    _moments, state = book_all(WindowState(), T0, 3)
    seen = observe(state, T0 + 0.1, WindowReading.of(headers(650, 640, T0 + 250.4)))
    assert seen.limit == 650
    assert seen.used == 10  # X-Series counted more than we booked (someone else spends it): more, never less
    assert seen.end == T0 + 251  # Reset, whole seconds
    assert seen.confirmed
    assert observe(seen, T0 + 0.2, WindowReading.of(headers(650, 649, T0 + 251))).used == 10  # never lowered


def test_an_answer_of_an_earlier_window_says_nothing_of_the_current_one() -> None:
    state = WindowState(limit=50, window_s=5, start=T0 + 10, end=T0 + 15, used=3, confirmed=True)
    late = observe(state, T0 + 10.2, WindowReading.of(headers(50, 0, T0 + 9)))  # its Reset is before our start
    assert late == state


def test_counts_of_a_window_reaching_into_one_booked_ahead_add_up_once() -> None:
    ahead = WindowState(limit=10, window_s=5, start=T0 + 10, end=T0 + 16, used=4)  # booked ahead: nothing left yet
    first = observe(ahead, T0 + 9, WindowReading(10, 8, T0 + 12))  # X-Series' current window reaches into it
    assert (first.used, first.end) == (4 + 2, T0 + 12)
    again = observe(first, T0 + 9.1, WindowReading(10, 7, T0 + 12))  # the same window: only what is new adds
    assert again.used == 4 + 3
    assert observe(again, T0 + 9.2, WindowReading(10, 8, T0 + 12)).used == 4 + 3


def test_the_first_answer_of_a_window_teaches_its_length() -> None:
    booking = book(WindowState(limit=50), T0)
    assert booking.state.end == T0 + DEFAULT_WINDOW_S + IN_FLIGHT_S  # a guess until an answer says
    seen = observe(booking.state, T0 + 0.2, WindowReading.of(headers(50, 49, T0 + 5.2)), booked_at=booking.send_at)
    assert (seen.end, seen.window_s) == (T0 + 6, 6.0)  # Reset minus the booked moment: never shorter than real
    # the next window the model opens itself lasts that long
    _moments, filled = book_all(seen, T0 + 0.3, 49)
    after = book(filled, T0 + 0.4)
    assert after.send_at == pytest.approx(T0 + 6 + SKEW_S)
    assert after.state.end == pytest.approx(T0 + 12 + SKEW_S + IN_FLIGHT_S)


def test_without_a_reset_the_count_still_binds() -> None:
    _moments, state = book_all(WindowState(limit=100, window_s=60), T0, 2)
    seen = observe(state, T0 + 0.5, WindowReading.of(headers(100, 10)))
    assert (seen.used, seen.end) == (90, state.end)
    idle = observe(WindowState(limit=100, window_s=60), T0, WindowReading.of(headers(100, 0)))
    assert (idle.start, idle.end, idle.used) == (T0, T0 + 60 + IN_FLIGHT_S, 100)  # no window known: one from now


def test_a_reset_in_seconds_is_read_from_now() -> None:
    assert WindowReading.of({"x-ratelimit-reset": "42"}).end(T0) == T0 + 42
    assert WindowReading.of({"x-ratelimit-reset": str(int(T0 + 42))}).end(T0) == T0 + 42


@pytest.mark.parametrize(
    "found",
    [
        {},
        {"x-ratelimit-limit": "0"},
        {"x-ratelimit-limit": "-3", "x-ratelimit-remaining": "x", "x-ratelimit-reset": "nan"},
        {"x-ratelimit-limit": "1.5", "x-ratelimit-remaining": "inf"},
    ],
)
def test_unusable_headers_say_nothing(found: dict[str, str]) -> None:
    assert WindowReading.of(found).empty


# -- the window's edge ---------------------------------------------------------------------------------------


def test_requests_booked_near_a_windows_end_count_again_in_the_next() -> None:
    state = WindowState(limit=10, window_s=20, start=T0, end=T0 + 20, confirmed=True)
    _early, state = book_all(state, T0 + 1, 4)
    _late, state = book_all(state, T0 + 20 - SPILL_S + 0.5, 3)  # they may be counted after the edge
    assert state.carried() == 3
    nxt = book(state, T0 + 25)
    assert nxt.send_at == T0 + 25
    assert nxt.state.used == 3 + 1


def test_a_booking_before_the_edge_must_leave_before_it_one_at_the_edge_before_the_end() -> None:
    state = WindowState(limit=10, window_s=20, start=T0, end=T0 + 20, confirmed=True)
    assert book(state, T0 + 1).deadline == T0 + 1 + LATE_S
    assert book(state, T0 + 20 - SPILL_S - 0.1).deadline == pytest.approx(T0 + 20 - SPILL_S)
    assert book(state, T0 + 19.9).deadline == pytest.approx(T0 + 20)


def test_a_retry_after_holds_every_request_and_fills_the_window() -> None:
    state = WindowState(limit=10, window_s=20, start=T0, end=T0 + 20, used=2, confirmed=True)
    held = hold(state, T0 + 5, 30.0)
    assert held.hold_until == T0 + 35
    assert held.used == 10
    assert book(held, T0 + 6).send_at == pytest.approx(T0 + 35 + SKEW_S)
    idle = hold(WindowState(), T0, 3.0)
    assert book(idle, T0).send_at == pytest.approx(T0 + 3 + SKEW_S)


def test_full_spends_the_window() -> None:
    state = WindowState(limit=10, window_s=20, start=T0, end=T0 + 20, used=2, confirmed=True)
    assert full(state, T0 + 1).used == 10
    spent = full(WindowState(limit=10, window_s=20), T0)
    assert book(spent, T0).send_at == pytest.approx(T0 + 20 + IN_FLIGHT_S + SKEW_S)


def test_the_state_survives_its_row_and_a_damaged_row_starts_over() -> None:
    _moments, state = book_all(WindowState(limit=12, window_s=7.5), T0, 5)
    state = hold(state, T0, 1.0)
    assert WindowState.loads(state.dumps()) == state
    for text in (
        "",
        "[]",
        "nope",
        '[1, 2, 3, 4, 5, 6, 7, [["x", 1]], 0]',
        "[0, 300, 0, 0, 0, false, 0, [], 0]",
        "[1, 300, 0, 0, 0, false, 0, [], -1]",
    ):
        assert WindowState.loads(text) == WindowState()


# -- WindowPacer over memory rows ------------------------------------------------------------------------------


class Clocks:
    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> float:
        return T0 + self.t

    def monotonic(self) -> float:
        return 100.0 + self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_the_pacer_books_refuses_and_holds_per_store() -> None:
    clocks = Clocks()
    rows = LocalBucketRows(clock=clocks.wall)
    pacer = WindowPacer(rows, client_id="app", monotonic=clocks.monotonic, sleep=clocks.sleep)
    assert pacer.name("shop") == "window:app/shop"
    slots = pacer.book_many("shop", [(1.0, None)] * 350 + [(1.0, 10.0)])
    assert all(isinstance(slot, WindowSlot) and slot.moment == 100.0 for slot in slots[:350])
    refused = slots[350]
    assert isinstance(refused, Refusal) and refused.wait == pytest.approx(300 + IN_FLIGHT_S + SKEW_S)
    assert isinstance(pacer.book("other-shop"), WindowSlot)  # another store, another window
    pacer.hold("other-shop", 2.0)
    slot = pacer.reserve("other-shop")
    assert clocks.t == pytest.approx(2.0 + SKEW_S)  # slept through the hold and the skew
    assert not pacer.late(slot)


def test_the_pacer_writes_an_answer_only_when_it_is_news() -> None:
    clocks = Clocks()
    rows = CountingRows(clocks.wall)
    pacer = WindowPacer(rows, client_id="app", monotonic=clocks.monotonic, sleep=clocks.sleep)
    first = pacer.reserve("shop")
    assert rows.writes == 1
    assert pacer.correction("shop", {}, first) is None  # an answer without the headers
    news = pacer.correction("shop", headers(350, 349, T0 + 300), first)  # the first word on the window's end
    assert news is not None
    news()
    assert rows.writes == 2
    second = pacer.reserve("shop")
    assert second.state.confirmed
    assert pacer.correction("shop", headers(350, 348, T0 + 300), second) is None  # as expected: no write
    assert pacer.correction("shop", headers(350, 300, T0 + 300), second) is not None  # counted more than booked
    assert pacer.correction("shop", headers(650, 648, T0 + 300), second) is not None  # another limit


# -- the property: never over the limit, whatever the timing ---------------------------------------------------


def replay(
    limit: int, window: float, demands: list[float], latencies: list[float], lateness: list[float]
) -> tuple[int, int]:
    """Send each demand when the model says (``lateness`` after its moment: a late one books again), counted by a
    strict provider ``latencies`` later, its answer observed as long again after; (violations, requests sent)."""
    state = WindowState(limit=limit)  # the limit is known (the first answer taught it); the window is not
    events: list[tuple[float, int, str, int, float]] = []
    for index, moment in enumerate(demands):
        heapq.heappush(events, (moment, index, "book", index, 0.0))
    start: float | None = None
    count = violations = sent = 0
    sequence = len(demands)
    while events:
        now, _seq, kind, index, booked_at = heapq.heappop(events)
        sequence += 1
        if kind == "book":
            booking = book(state, now)
            state = booking.state
            leaves = booking.send_at + lateness[index]
            lateness[index] = 0.0  # a caller woken late once books again and leaves on time
            if leaves > booking.deadline:
                heapq.heappush(events, (leaves, sequence, "book", index, 0.0))
            else:
                sent += 1
                heapq.heappush(events, (leaves + latencies[index], sequence, "count", index, booking.send_at))
        elif kind == "count":
            if start is None or now >= start + window:
                start, count = now, 0
            if count >= limit:
                violations += 1
                state = hold(state, now + latencies[index], math.ceil(start + window) - now)
                continue
            count += 1
            answer = WindowReading(limit, limit - count, math.ceil(start + window))
            state = observe(state, now + latencies[index], answer, booked_at)
    return violations, sent


@FAST
@given(
    limit=st.integers(min_value=2, max_value=30),
    window=st.integers(min_value=2, max_value=12),
    traffic=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=40, allow_nan=False),
            st.floats(min_value=0, max_value=IN_FLIGHT_S * 0.99, allow_nan=False),
            st.sampled_from([0.0, 0.0, 0.0, 0.01, LATE_S / 2, LATE_S * 2]),
        ),
        min_size=1,
        max_size=160,
    ),
)
def test_booked_traffic_never_goes_over_a_strict_providers_window(
    limit: int, window: int, traffic: list[tuple[float, float, float]]
) -> None:
    demands = sorted(T0 + moment for moment, _latency, _late in traffic)
    latencies = [latency for _moment, latency, _late in traffic]
    lateness = [late for _moment, _latency, late in traffic]
    violations, sent = replay(limit, float(window), demands, latencies, lateness)
    assert violations == 0
    assert sent == len(demands)  # and every request went out in the end

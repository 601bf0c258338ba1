"""``lightspeed.bucket``: the pure model of Lightspeed's leaky bucket and sliding one-second burst window.

Every function here is a function of a state and of "now", so the tests pass times explicitly: no clock, no
sleep. The model counts the burst window's sends in slots of ``BURST_SLOT_S``, each send at its slot's end: a
moment the window spaces may therefore be up to one slot later than the exact one, never earlier. The property
test at the end books random traffic and replays it, exactly at the booked moments, against a strict provider
that refuses whatever overflows either limit.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.lightspeed.bucket import (
    BURST_MARGIN_S,
    BURST_SLOT_S,
    BURST_WINDOW_S,
    DEFAULT_BURST,
    DEFAULT_DRIP,
    DEFAULT_SIZE,
    HEADROOM,
    BucketState,
    Reading,
    book,
    hold,
    observe,
    parse_bucket,
    retry_after_s,
    sends_between,
)

FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
#: A burst limit high enough that only the leaky bucket spaces the requests.
NO_BURST = 10_000
#: The most slots a state may hold after a booking: those ending within the window and its margin before the
#: booking, and the booking's own (plus one for a boundary falling on either side).
MOST_SLOTS = math.ceil((BURST_WINDOW_S + BURST_MARGIN_S) / BURST_SLOT_S) + 2


def bucket(size: float = 90.0, drip: float = 1.0, burst: int = NO_BURST, **fields: object) -> BucketState:
    return BucketState(size=size, drip=drip, burst_limit=burst, **fields)  # type: ignore[arg-type]


def book_all(state: BucketState, now: float, costs: list[float]) -> tuple[list[float], BucketState]:
    """Book ``costs`` one after another, all at ``now``: their send moments and the state after."""
    moments = []
    for cost in costs:
        booking = book(state, now, cost)
        assert booking.wait == pytest.approx(booking.send_at - now)
        moments.append(booking.send_at)
        state = booking.state
    return moments, state


def slotted(moment: float, exact: float) -> bool:
    """``moment`` is ``exact`` or later by the slot rounding alone: at most one slot, never earlier."""
    return exact - 1e-9 <= moment <= exact + BURST_SLOT_S + 1e-9


def counted(state: BucketState) -> int:
    return sum(count for _end, count in state.sends)


def well_formed(state: BucketState) -> bool:
    ends = [end for end, _count in state.sends]
    return all(count >= 1 for _end, count in state.sends) and all(a < b for a, b in itertools.pairwise(ends))


def most_in_one_window(moments: list[float]) -> int:
    """The most sends in any closed window of ``BURST_WINDOW_S`` (every such window starts at some send)."""
    ordered = sorted(moments)
    return max(
        (sum(1 for other in ordered if start <= other <= start + BURST_WINDOW_S) for start in ordered), default=0
    )


# -- book: the leaky bucket ------------------------------------------------------------------------------------


def test_the_first_bucketful_leaves_at_once_then_one_per_drip() -> None:
    moments, _ = book_all(bucket(size=10, drip=2), 100.0, [1.5] * 10)
    assert moments[:6] == [100.0] * 6  # 9 = the size minus the headroom
    assert moments[6:] == pytest.approx([100.75, 101.5, 102.25, 103.0])  # 1.5 over each time, drained at 2/s


@pytest.mark.parametrize(
    ("size", "drip", "cost", "count"),
    [(90, 1, 1.5, 300), (90, 1, 1.0, 200), (20, 4, 2.5, 50), (10, 0.5, 1.0, 30)],
)
def test_a_batch_takes_the_theoretical_minimum(size: float, drip: float, cost: float, count: int) -> None:
    """(n x cost - usable bucket) / drip: the first bucketful at once, then exactly at the drip rate."""
    moments, _ = book_all(bucket(size=size, drip=drip), 0.0, [cost] * count)
    assert moments[-1] == pytest.approx((count * cost - (size - HEADROOM)) / drip)
    waiting = [moment for moment in moments if moment > 0]
    steps = [later - earlier for earlier, later in itertools.pairwise(waiting)]
    assert steps and all(step == pytest.approx(cost / drip) for step in steps)


def test_the_bucket_drains_while_idle() -> None:
    _, state = book_all(bucket(size=10, drip=2), 0.0, [1.5] * 6)
    assert state.level_at(0.0) == pytest.approx(9.0) and state.level_at(4.5) == 0.0 and state.level_at(1.0) == 7.0
    moments, _ = book_all(state, 4.5, [1.5] * 6)  # 9 drained: a whole bucketful again
    assert moments == [4.5] * 6


def test_bookings_are_first_in_first_out() -> None:
    """A cheap request booked after an expensive one never jumps ahead of it, whatever fits the bucket."""
    state = book(bucket(size=10, drip=1), 0.0, 9.0).state
    waiting = book(state, 0.0, 5.0)
    assert waiting.send_at == pytest.approx(5.0)
    cheap = book(waiting.state, 0.0, 0.1)
    assert cheap.send_at >= waiting.send_at
    late_reader = book(waiting.state, -3.0, 0.1)  # a caller whose "now" is older than the latest booking
    assert late_reader.send_at >= waiting.send_at


def test_a_hold_is_respected() -> None:
    booking = book(bucket(hold_until=50.0), 10.0, 1.0)
    assert (booking.send_at, booking.wait) == (50.0, 40.0)
    assert book(booking.state, 10.0, 1.0).send_at == 50.0  # the bucket has room: the next one leaves with it
    assert book(bucket(hold_until=5.0), 10.0, 1.0).send_at == 10.0  # a past hold is nothing


def test_the_booked_state_counts_the_request_in() -> None:
    booking = book(bucket(size=10, drip=1, burst=3), 7.0, 2.5)
    assert (booking.state.level, booking.state.at, booking.state.sends) == (2.5, 7.0, ((7.0, 1),))
    between = book(booking.state, 7.003, 1.0)  # within 7.0's slot: counted at its end, 7.01
    assert between.send_at == 7.003 and between.state.sends == ((7.0, 1), (7.01, 1))
    same_slot = book(between.state, 7.008, 1.0)  # the same slot again: one more in it, no new slot
    assert same_slot.state.sends == ((7.0, 1), (7.01, 2))


def test_the_defaults_serve_until_the_first_answer() -> None:
    state = BucketState()
    assert (state.size, state.drip, state.burst_limit) == (DEFAULT_SIZE, DEFAULT_DRIP, DEFAULT_BURST)
    assert (state.level, state.sends, state.hold_until) == (0.0, (), 0.0)


# -- book: the sliding burst window ---------------------------------------------------------------------------


def test_no_more_than_the_burst_limit_in_any_window() -> None:
    moments, state = book_all(bucket(size=1000, burst=10), 20.0, [1.0] * 25)
    gap = BURST_WINDOW_S + BURST_MARGIN_S
    exact = [20.0] * 10 + [20.0 + gap] * 10 + [20.0 + 2 * gap] * 5
    assert all(slotted(moment, ideal) for moment, ideal in zip(moments, exact, strict=True))
    assert most_in_one_window(moments) == 10
    # Only the last window's slots are kept: the first twenty sends are more than a window before the last five.
    assert len(state.sends) == 1 and counted(state) == 5 and slotted(state.sends[0][0], moments[-1])


def test_the_slot_rounding_only_delays_by_at_most_a_slot() -> None:
    """A send inside a slot counts at the slot's end: the one it spaces leaves a window after that end."""
    state = book(bucket(size=1000, burst=1), 0.003, 1.0).state
    assert state.sends == ((0.01, 1),)
    second = book(state, 0.5, 1.0)
    assert second.send_at == pytest.approx(0.01 + BURST_WINDOW_S + BURST_MARGIN_S)  # 1.06, not 1.053
    assert slotted(second.send_at, 0.003 + BURST_WINDOW_S + BURST_MARGIN_S)


def test_an_irregular_stream_keeps_the_limit_in_every_window() -> None:
    """Requests off the slot grid, faster than the limit allows: every window holds at most the limit, and
    each send leaves at most a slot after the exact moment the limit-th previous one allows."""
    state, moments = bucket(size=1000, burst=3), []
    for n in range(40):
        now = 3.0 + n * 0.137
        booking = book(state, now, 1.0)
        moments.append(booking.send_at)
        state = booking.state
        assert len(state.sends) <= MOST_SLOTS and well_formed(state)
        # Exactly: not before now, nor the previous send, nor a window and margin after the third one back.
        earliest = [now, *moments[-2:-1], *(moment + BURST_WINDOW_S + BURST_MARGIN_S for moment in moments[-4:-3])]
        assert slotted(booking.send_at, max(earliest))
    assert most_in_one_window(moments) == 3
    assert max(moments) - 3.0 > 10.0  # the window spaced them (40 sends at 3 a second), not the traffic


@pytest.mark.parametrize("seconds", [1, 5])
def test_the_state_stays_small_at_any_limit(seconds: int) -> None:
    """400 bookings a second at a limit of 100000: none waits, and the state holds at most a window's slots
    (where a send a row grew with the traffic), still counting every send of the last window."""
    state, total = bucket(size=1e9, drip=1e6, burst=100_000), 400 * seconds
    for n in range(total):
        now = 7.0 + n / 400
        booking = book(state, now, 1.0)
        assert booking.send_at == now
        state = booking.state
        assert len(state.sends) <= MOST_SLOTS and well_formed(state)
    assert len(state.sends) >= BURST_WINDOW_S / BURST_SLOT_S  # a window's slots, four sends each
    last = 7.0 + (total - 1) / 400
    slot_ends = [7.0 + math.ceil(n / 4) / 100 for n in range(total)]  # four sends a slot
    assert counted(state) == sum(1 for end in slot_ends if end > last - BURST_WINDOW_S - BURST_MARGIN_S)
    # Lightspeed's window at the last send holds 400 of them; the model may count up to a slot's more.
    assert 400 <= sends_between(state.sends, last) <= 400 + 4


def test_the_window_slides_across_a_calendar_second() -> None:
    """Five sends at 41.5 and five at 41.95: at 42.0 a new calendar second starts, but not a new window."""
    state = bucket(size=1000, burst=10)
    first, state = book_all(state, 41.5, [1.0] * 5)
    second, state = book_all(state, 41.95, [1.0] * 5)
    assert first + second == [41.5] * 5 + [41.95] * 5
    eleventh = book(state, 42.0, 1.0)
    assert slotted(eleventh.send_at, 41.5 + BURST_WINDOW_S + BURST_MARGIN_S)
    more, _ = book_all(eleventh.state, 42.0, [1.0] * 9)
    assert most_in_one_window([*first, *second, eleventh.send_at, *more]) == 10


def test_a_send_keeps_its_distance_from_the_limit_th_previous_one() -> None:
    state = bucket(size=1000, burst=10)
    for tenth in range(10):  # one send every 0.1 s: 0.0, 0.1, ... 0.9
        state = book(state, tenth / 10, 1.0).state
    eleventh = book(state, 0.95, 1.0)
    assert slotted(eleventh.send_at, 0.0 + BURST_WINDOW_S + BURST_MARGIN_S)
    twelfth = book(eleventh.state, 1.0, 1.0)
    assert slotted(twelfth.send_at, 0.1 + BURST_WINDOW_S + BURST_MARGIN_S)
    assert book(twelfth.state, 5.0, 1.0).send_at == 5.0  # the window long past: at once


def test_a_burst_limit_of_one_spaces_every_send() -> None:
    moments, _ = book_all(bucket(size=1000, burst=1), 0.0, [1.0] * 4)
    gap = BURST_WINDOW_S + BURST_MARGIN_S
    assert all(slotted(moment, n * gap) for n, moment in enumerate(moments))
    assert all(later - earlier >= gap - 1e-9 for earlier, later in itertools.pairwise(moments))


def test_both_limits_the_later_wins() -> None:
    """Burst 2 and a bucket of 4 (3 usable): whichever limit is the later one decides each moment."""
    moments, _ = book_all(bucket(size=4, drip=10, burst=2), 0.0, [1.0] * 5)
    gap = BURST_WINDOW_S + BURST_MARGIN_S
    exact = [0.0, 0.0, gap, gap, 2 * gap]
    assert all(slotted(moment, ideal) for moment, ideal in zip(moments, exact, strict=True))
    moments, _ = book_all(bucket(size=4, drip=0.5, burst=2), 0.0, [1.0] * 5)
    exact = [0.0, 0.0, gap, 2.0, 4.0]  # the window spaces the 3rd, the bucket the rest
    assert all(slotted(moment, ideal) for moment, ideal in zip(moments, exact, strict=True))


# -- observe ---------------------------------------------------------------------------------------------------


def reading(**headers: str) -> Reading:
    names = {"level": "x-ls-api-bucket-level", "drip": "x-ls-api-drip-rate", "burst": "x-ls-api-burst-level"}
    return Reading.of({names[key]: value for key, value in headers.items()})


def test_size_drip_and_burst_limit_come_from_the_headers() -> None:
    state = observe(BucketState(), 0.0, reading(level="5/20", drip="4", burst="1/20"))
    assert (state.size, state.drip, state.burst_limit, state.level) == (20.0, 4.0, 20, 5.0)
    assert book(state, 0.0, 10).send_at == 0.0  # 15 of 19 usable
    assert book(book(state, 0.0, 10).state, 0.0, 10).send_at == pytest.approx((15 + 10 - 19) / 4)


def test_an_empty_reading_changes_nothing() -> None:
    state = book(bucket(size=10, drip=2, burst=5), 3.0, 4.0).state
    assert observe(state, 3.5, Reading()) == state
    assert observe(state, 3.5, reading(level="garbage", drip="0", burst="x/y")) == state


def test_an_answer_never_forgets_requests_still_in_flight() -> None:
    """Three requests booked; the first answer counts only itself: the other two stay in the model."""
    _, state = book_all(bucket(size=10, drip=1), 0.0, [3.0] * 3)
    seen = observe(state, 0.0, reading(level="3/10", drip="1"))
    assert seen.level_at(0.0) == pytest.approx(9.0)
    assert book(seen, 0.0, 3.0).send_at == pytest.approx(3.0)  # 9 + 3 - 9 usable, at 1/s


def test_a_higher_reported_level_wins() -> None:
    """Another app spends the same bucket: the answer's level raises the model."""
    state = book(bucket(size=10, drip=1), 0.0, 1.0).state
    seen = observe(state, 0.0, reading(level="8.5/10"))
    assert seen.level_at(0.0) == 8.5
    assert book(seen, 0.0, 1.0).send_at == pytest.approx(0.5)


def test_a_reported_level_is_compared_at_the_latest_booking() -> None:
    """A request booked 2 s ahead at level 9: an answer of 4 now is 2 by then, so the booking stands; an
    answer of 12 now is 10 by then, and raises it."""
    state = bucket(size=20, drip=1, level=9.0, at=12.0)
    assert observe(state, 10.0, reading(level="4/20")) == state
    raised = observe(state, 10.0, reading(level="12/20"))
    assert (raised.at, raised.level) == (12.0, pytest.approx(10.0))


def test_a_reported_level_against_a_drained_model() -> None:
    state = bucket(size=20, drip=1, level=5.0, at=0.0)  # 2 by now
    lower = observe(state, 3.0, reading(level="1/20"))
    assert lower.level_at(3.0) == pytest.approx(2.0)
    higher = observe(state, 3.0, reading(level="4/20"))
    assert higher.level_at(3.0) == pytest.approx(4.0) and higher.at == 3.0


def test_the_burst_level_adds_sends_the_model_did_not_know_of() -> None:
    state = bucket(size=1000, burst=5, sends=((9.5, 1), (9.8, 1)))
    seen = observe(state, 10.0, reading(burst="5/5"))
    assert seen.sends == ((9.5, 1), (9.8, 1), (10.0, 3))  # three more, in now's slot
    assert book(seen, 10.0, 1.0).send_at == pytest.approx(9.5 + BURST_WINDOW_S + BURST_MARGIN_S)


def test_unknown_sends_join_now_s_slot_in_order() -> None:
    """Now's slot may fall between booked ones (a booking ahead of now): the added sends go into it, in order."""
    seen = observe(bucket(size=1000, burst=5, sends=((9.5, 1), (10.5, 1))), 10.003, reading(burst="3/5"))
    assert seen.sends == ((9.5, 1), (10.01, 2), (10.5, 1))
    assert observe(seen, 10.004, reading(burst="3/5")) == seen  # now all known
    more = observe(seen, 10.004, reading(burst="4/5"))
    assert more.sends == ((9.5, 1), (10.01, 3), (10.5, 1))


def test_a_burst_level_the_model_already_knows_changes_nothing() -> None:
    state = bucket(size=1000, burst=5, sends=((9.5, 1), (9.8, 1)))
    assert observe(state, 10.0, reading(burst="2/5")) == state
    assert observe(state, 10.0, reading(burst="0/5")) == state


def test_sends_outside_the_window_are_not_known_sends() -> None:
    state = bucket(size=1000, burst=5, sends=((8.5, 1),))  # 1.5 s ago: Lightspeed no longer counts it
    assert observe(state, 10.0, reading(burst="1/5")).sends == ((8.5, 1), (10.0, 1))
    edge = bucket(size=1000, burst=5, sends=((9.0, 2),))  # exactly a window ago: out of it
    assert observe(edge, 10.0, reading(burst="2/5")).sends == ((9.0, 2), (10.0, 2))


def test_sends_between_counts_the_window_and_now_s_slot() -> None:
    """Slots ending in (now - window, now + slot]: a send of now's slot may have left by now."""
    sends = ((9.0, 1), (9.01, 2), (9.5, 4), (10.0, 8), (10.01, 16), (10.02, 32))
    assert sends_between(sends, 10.0) == 2 + 4 + 8 + 16
    assert sends_between(sends, 10.5) == 8 + 16 + 32
    assert sends_between(sends, 20.0) == 0 and sends_between((), 10.0) == 0


def test_only_the_last_window_s_slots_are_kept() -> None:
    """The window bounds the state, not the limit: slots that left it before a booking are dropped, whatever
    the limit, so the state stays small at any limit."""
    state = bucket(size=1000, burst=3, sends=((9.1, 1), (9.2, 1), (9.3, 1)))
    assert observe(state, 10.0, reading(burst="3/3")) == state  # all three are in the window: nothing new
    seen = observe(bucket(size=1000, burst=3, sends=((8.0, 1), (8.5, 1), (8.9, 1))), 10.0, reading(burst="2/3"))
    assert seen.sends == ((8.0, 1), (8.5, 1), (8.9, 1), (10.0, 2))  # observing adds, never trims
    booking = book(seen, 10.0, 1.0)  # 8.0 .. 8.9 left the window (and its margin) before 10.0: dropped
    assert booking.send_at == 10.0 and booking.state.sends == ((10.0, 3),)
    two_windows = tuple((round(8.0 + n / 100, 2), 5) for n in range(201))  # 8.0, 8.01, .. 10.0: 1005 sends
    kept = book(bucket(size=1000, burst=100_000, sends=two_windows), 10.0, 1.0).state
    # However high the limit, only the slots ending within the window and its margin before 10.0 are kept.
    assert [end for end, _count in kept.sends] == [round(8.96 + n / 100, 2) for n in range(105)]
    assert counted(kept) == 105 * 5 + 1


def test_a_lower_burst_limit_spaces_the_next_send() -> None:
    state = bucket(size=1000, burst=5, sends=((5.1, 1), (5.2, 1), (5.3, 1), (5.4, 1), (5.5, 1)))
    seen = observe(state, 5.6, reading(burst="5/2"))
    assert seen.burst_limit == 2 and seen.sends == state.sends
    booking = book(seen, 5.6, 1.0)
    assert slotted(booking.send_at, 5.4 + BURST_WINDOW_S + BURST_MARGIN_S)
    # The window bounds what is kept, not the limit: all five are within it at 5.6, when this one was booked ...
    assert booking.state.sends == (*state.sends, (6.45, 1))
    later = book(booking.state, 6.5, 1.0)  # ... and the next one, booked at 6.5, drops 5.1 .. 5.4
    assert slotted(later.send_at, 5.5 + BURST_WINDOW_S + BURST_MARGIN_S)
    assert later.state.sends == ((5.5, 1), (6.45, 1), (6.55, 1))
    without_level = observe(state, 6.0, Reading(burst_limit=3))
    assert without_level.burst_limit == 3 and without_level.sends == state.sends
    assert slotted(book(without_level, 6.0, 1.0).send_at, 5.3 + BURST_WINDOW_S + BURST_MARGIN_S)


# -- observe: the request's own cost ---------------------------------------------------------------------------


def test_a_cost_above_the_booking_raises_the_model_by_the_difference() -> None:
    """No level reported (only ``X-LS-API-Request-Cost``): a write booked at 1.5 cost 9, and the next booking
    sees all of it."""
    state = book(bucket(size=10, drip=1), 0.0, 1.5).state
    seen = observe(state, 0.0, Reading(cost=9.0), booked=1.5)
    assert seen.level_at(0.0) == pytest.approx(9.0)
    assert book(seen, 0.0, 1.0).send_at == pytest.approx(1.0)  # 9 + 1 - 9 usable, at 1/s


def test_a_cost_below_the_booking_frees_the_difference() -> None:
    _, state = book_all(bucket(size=10, drip=2), 0.0, [1.5] * 6)  # 9 of 9 usable
    seen = observe(state, 0.0, Reading(cost=1.0), booked=1.5)
    assert seen.level_at(0.0) == pytest.approx(8.5)
    assert book(seen, 0.0, 1.5).send_at == pytest.approx(0.5)  # (8.5 + 1.5 - 9) / 2, not 0.75


def test_a_cost_corrects_only_against_a_booking_it_differs_from() -> None:
    state = book(bucket(size=10, drip=1), 0.0, 1.5).state
    assert observe(state, 0.0, Reading(cost=9.0)) == state  # not booked (an account lookup): nothing to correct
    assert observe(state, 0.0, Reading(cost=1.5), booked=1.5) == state


def test_a_cost_is_corrected_at_the_latest_booking() -> None:
    state = bucket(size=20, drip=1, level=9.0, at=12.0)  # a booking 2 s ahead
    seen = observe(state, 10.0, Reading(cost=4.0), booked=1.5)
    assert seen.at == 12.0 and seen.level == pytest.approx(11.5)


def test_a_cheaper_request_never_drains_the_model_below_empty() -> None:
    seen = observe(bucket(size=20, drip=1, level=1.5, at=0.0), 5.0, Reading(cost=1.0), booked=1.5)
    assert seen.level_at(5.0) == 0.0 and seen.level >= 0.0


def test_a_cost_hidden_under_requests_in_flight_still_counts() -> None:
    """Three writes booked at 1.5; the first cost 2.5, and its answer's level counts only it (the other two are
    in flight). The level as a floor alone keeps 4.5 and never sees the extra 1; the difference makes 5.5."""
    _, state = book_all(bucket(size=10, drip=1), 0.0, [1.5] * 3)
    answer = Reading(used=2.5, size=10.0, cost=2.5)
    assert observe(state, 0.0, answer, booked=1.5).level_at(0.0) == pytest.approx(5.5)
    assert observe(state, 0.0, answer).level_at(0.0) == pytest.approx(4.5)  # what the floor alone gives


def test_a_reported_level_already_holding_the_cost_is_not_counted_twice() -> None:
    """A write booked at 1.5 cost 4, and another app spent 2: the answer's level (6) holds the 4 already. The
    model becomes 6, not 6 + 2.5."""
    state = book(bucket(size=10, drip=1), 0.0, 1.5).state
    seen = observe(state, 0.0, Reading(used=6.0, size=10.0, cost=4.0), booked=1.5)
    assert seen.level_at(0.0) == pytest.approx(6.0)


# -- hold ------------------------------------------------------------------------------------------------------


def test_hold_honours_retry_after_then_drips() -> None:
    state = hold(bucket(size=90, drip=1), 10.0, 3.0, 1.5)  # a 429: "Retry-After: 3"
    assert state.hold_until == 13.0
    retry = book(state, 10.0, 1.5)
    assert retry.send_at == pytest.approx(13.0)  # the refused request goes exactly when Lightspeed said
    assert book(retry.state, 10.0, 1.5).send_at == pytest.approx(14.5)  # the next at the drip rate


def test_a_hold_never_shortens_one_already_there() -> None:
    state = hold(bucket(), 10.0, 5.0, 1.0)
    assert hold(state, 11.0, 0.0, 1.0).hold_until == 15.0
    assert hold(state, 11.0, -4.0, 1.0).hold_until == 15.0
    assert hold(state, 11.0, 10.0, 1.0).hold_until == 21.0


def test_a_hold_never_releases_what_is_already_booked() -> None:
    _, state = book_all(bucket(size=10, drip=1), 0.0, [1.0] * 12)  # booked up to 3.0
    held = hold(state, 0.0, 1.0, 1.0)
    assert held.at == 3.0 and held.level_at(3.0) >= state.level_at(3.0)
    assert book(held, 0.0, 1.0).send_at >= 3.0


def test_a_negative_retry_after_holds_until_now() -> None:
    assert hold(bucket(), 10.0, -3.0, 1.0).hold_until == 10.0


# -- Reading.of ------------------------------------------------------------------------------------------------


def test_a_reading_of_complete_headers() -> None:
    headers = {"x-ls-api-bucket-level": "11/90", "x-ls-api-drip-rate": "1.5", "x-ls-api-burst-level": "3/10"}
    assert Reading.of(headers) == Reading(used=11.0, size=90.0, drip=1.5, burst_used=3, burst_limit=10)
    costly = Reading.of({**headers, "x-ls-api-request-cost": "2.5"})
    assert costly == Reading(used=11.0, size=90.0, drip=1.5, burst_used=3, burst_limit=10, cost=2.5)
    assert not Reading.of(headers).empty


def test_a_reading_of_no_headers_is_empty() -> None:
    assert Reading.of({}) == Reading() and Reading.of({}).empty
    assert Reading.of({"content-type": "application/json"}).empty


@pytest.mark.parametrize(
    ("value", "used", "size"),
    [
        ("11/90", 11.0, 90.0),
        ("1.5/10", 1.5, 10.0),
        ("0/90", 0.0, 90.0),
        ("11/0", 11.0, None),  # no size: the used part still counts
        ("11/-90", 11.0, None),
        ("-1/90", None, None),
        ("inf/90", None, None),
        ("11/inf", None, None),
        ("nan/90", None, None),
        ("11/nan", None, None),
        ("1e400/90", None, None),
        ("", None, None),
        ("11", None, None),
        ("/90", None, None),
        ("a/b", None, None),
        ("11/90/3", None, None),
    ],
)
def test_the_bucket_level_header(value: str, used: float | None, size: float | None) -> None:
    found = Reading.of({"x-ls-api-bucket-level": value})
    assert (found.used, found.size) == (used, size)


@pytest.mark.parametrize(
    ("value", "drip"),
    [("1", 1.0), ("0.5", 0.5), ("0", None), ("-1", None), ("inf", None), ("nan", None), ("", None), ("fast", None)],
)
def test_the_drip_rate_header(value: str, drip: float | None) -> None:
    assert Reading.of({"x-ls-api-drip-rate": value}).drip == drip


@pytest.mark.parametrize(
    ("value", "used", "limit"),
    [
        ("3/10", 3, 10),
        ("0/20", 0, 20),
        ("3/0", 3, None),
        ("3/0.5", 3, None),
        ("-1/10", None, None),
        ("inf/10", None, None),
        ("3/nan", None, None),
        ("3", None, None),
        ("x/10", None, None),
    ],
)
def test_the_burst_level_header(value: str, used: int | None, limit: int | None) -> None:
    found = Reading.of({"x-ls-api-burst-level": value})
    assert (found.burst_used, found.burst_limit) == (used, limit)


@pytest.mark.parametrize(
    ("value", "cost"),
    [
        ("7", 7.0),
        ("1.5", 1.5),
        ("10", 10.0),
        ("0", None),
        ("-1", None),
        ("inf", None),
        ("nan", None),
        ("1e400", None),
        ("", None),
        ("ten", None),
        ("1/2", None),
    ],
)
def test_the_request_cost_header(value: str, cost: float | None) -> None:
    found = Reading.of({"x-ls-api-request-cost": value})
    assert found.cost == cost and found.empty is (cost is None)


def test_a_refused_request_s_cost_is_not_read() -> None:
    """A 429 (it names its limiter) charged nothing, whatever the request would have cost."""
    headers = {"x-ls-api-request-cost": "1.5", "x-ls-api-ratelimit-type": "api-leaky-bucket"}
    assert Reading.of({**headers, "x-ls-api-bucket-level": "89/90"}) == Reading(used=89.0, size=90.0)
    assert Reading.of(headers).empty


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("11/90", (11.0, 90.0)), ("1.5/10", (1.5, 10.0)), ("", None), ("11", None), ("a/b", None), ("/90", None)],
)
def test_parse_bucket(value: str, parsed: tuple[float, float] | None) -> None:
    assert parse_bucket({"x-ls-api-bucket-level": value}) == parsed


# -- BucketState.dumps / loads ---------------------------------------------------------------------------------


def test_a_state_survives_dumps_and_loads() -> None:
    _, state = book_all(bucket(size=20, drip=0.5, burst=4), 1_700_000_000.25, [1.5] * 7)
    state = hold(state, 1_700_000_001.0, 2.0, 1.5)
    assert BucketState.loads(state.dumps()) == state
    assert BucketState.loads(BucketState().dumps()) == BucketState()


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "null",
        "[]",
        "[1, 2]",
        '{"level": 1}',
        '"abcdefg"',
        "[0, 0, 90, 1, 10, 5, 0]",
        '["x", 0, 90, 1, 10, [], 0]',
        "[0, 0, 90, 1, 10, [], 0, 7]",
        "[0, 0, 90, 1, null, [], 0]",
    ],
)
def test_an_unreadable_row_is_a_fresh_state(text: str | None) -> None:
    assert BucketState.loads(text) == BucketState()


def test_a_row_whose_sends_are_not_numbers_is_a_fresh_state() -> None:
    assert BucketState.loads('[0, 0, 90, 1, 10, "ab", 0, []]') == BucketState()


def test_bookers_keep_the_latest_two_distinct_processes() -> None:
    state = BucketState().booked_by("a", 1.0).booked_by("b", 2.0).booked_by("a", 3.0).booked_by("c", 4.0)
    assert state.bookers == (("c", 4.0), ("a", 3.0))
    assert state.others_since("a", 3.5) and not state.others_since("c", 3.5)
    assert not BucketState().booked_by("a", 1.0).booked_by("a", 2.0).others_since("a", 0.0)


def test_a_row_of_slots_loads_as_slots() -> None:
    state = BucketState.loads('[1, 2, 90, 1, 10, [[1.5, 1], [1.51, 3], [2, 12]], 0, [["a1", 1.5]], "c1"]')
    assert state.bookers == (("a1", 1.5),)
    assert state.sends == ((1.5, 1), (1.51, 3), (2.0, 12))
    assert all(isinstance(end, float) and type(count) is int for end, count in state.sends)
    assert BucketState.loads(state.dumps()) == state


@pytest.mark.parametrize(
    "sends",
    [
        "[[2.0, 1], [1.0, 1]]",  # out of order
        "[[1.0, 1], [1.0, 2]]",  # one end twice
        "[[1.0, 1], [3.0, 1], [2.0, 1]]",
        "[[1.0, 1.5]]",  # counts: positive ints only
        "[[1.0, 1.0]]",
        '[[1.0, "1"]]',
        "[[1.0, true]]",
        "[[1.0, 0]]",
        "[[1.0, -2]]",
        "[[1.0, null]]",
        "[[1.0]]",  # not pairs
        "[[1.0, 1, 2]]",
        "[[1.0, 1], 2.0]",
        '[{"end": 1.0, "count": 1}]',
        '["ab"]',
        "[1.5, 1.6]",  # the old representation: send times
        '[["x", 1]]',  # ends: finite numbers
        "[[null, 1]]",
        "[[NaN, 1]]",
        "[[Infinity, 1]]",
        "[[1e400, 1]]",
        "[[1.0, 1], [NaN, 1]]",
    ],
)
def test_a_row_whose_slots_are_damaged_is_a_fresh_state(sends: str) -> None:
    assert BucketState.loads(f"[3, 4, 50, 2, 7, {sends}, 0]") == BucketState()


# -- retry_after_s ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "seconds"), [(0.0, 1), (-2.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (9.5, 10), (10.0, 10), (61.2, 62)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, seconds: int) -> None:
    assert retry_after_s(wait) == seconds


# -- the property: a strict provider never refuses what was booked ----------------------------------------------


class StrictProvider:
    """Lightspeed at its strictest: a leaky bucket of ``size`` refusing any overflow, and at most ``limit``
    requests in any closed one-second window."""

    def __init__(self, size: float, drip: float, limit: int) -> None:
        self.size, self.drip, self.limit = size, drip, limit
        self.level, self.last = 0.0, -math.inf
        self.accepted: list[float] = []

    def receive(self, at: float, cost: float) -> str | None:
        """None when accepted, else why it was refused."""
        if self.last > -math.inf:
            self.level = max(0.0, self.level - (at - self.last) * self.drip)
        self.last = at
        if self.level + cost > self.size + 1e-9:
            return f"leaky bucket: {self.level:.4f} + {cost} > {self.size}"
        in_window = sum(1 for sent in self.accepted if at - BURST_WINDOW_S <= sent <= at)
        if in_window + 1 > self.limit:
            return f"burst: {in_window + 1} > {self.limit} in the window ending {at}"
        self.level += cost
        self.accepted.append(at)
        return None


TRAFFIC = st.lists(
    st.tuples(
        st.sampled_from([1.0, 1.5, 2.5]),
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False)),
    ),
    min_size=1,
    max_size=80,
)


@FAST
@given(
    size=st.floats(min_value=4.0, max_value=120.0, allow_nan=False, allow_infinity=False),
    drip=st.floats(min_value=0.25, max_value=10.0, allow_nan=False, allow_infinity=False),
    limit=st.integers(min_value=1, max_value=20),
    traffic=TRAFFIC,
    start=st.floats(min_value=0.0, max_value=1_000_000.0, allow_nan=False, allow_infinity=False),
)
def test_a_strict_provider_never_refuses_a_booked_request(
    size: float, drip: float, limit: int, traffic: list[tuple[float, float]], start: float
) -> None:
    state = bucket(size=size, drip=drip, burst=limit)
    now, sends = start, []
    for cost, gap in traffic:
        now += gap
        booking = book(state, now, cost)
        assert booking.send_at >= now and booking.wait >= 0
        assert not sends or booking.send_at >= sends[-1][0]  # first in, first out
        sends.append((booking.send_at, cost))
        state = booking.state
        assert len(state.sends) <= MOST_SLOTS and well_formed(state)  # small, whatever the traffic
    provider = StrictProvider(size, drip, limit)
    for at, cost in sends:
        assert provider.receive(at, cost) is None, (at, cost, sends)


#: (booked, charged): a write booked at 1.5 that cost 1, 1.5 or 2.5, a read booked at 1 that cost 1 or 2. Each
#: request is at most the headroom over its booking: the model can only learn a cost from the answer, after it.
COSTS = st.sampled_from([(1.5, 1.0), (1.5, 1.5), (1.5, 2.5), (1.0, 1.0), (1.0, 2.0)])


@FAST
@given(
    size=st.floats(min_value=4.0, max_value=120.0, allow_nan=False, allow_infinity=False),
    drip=st.floats(min_value=0.25, max_value=10.0, allow_nan=False, allow_infinity=False),
    limit=st.integers(min_value=1, max_value=20),
    traffic=st.lists(
        st.tuples(COSTS, st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=80,
    ),
    start=st.floats(min_value=0.0, max_value=1_000_000.0, allow_nan=False, allow_infinity=False),
)
def test_a_strict_provider_never_refuses_a_caller_corrected_by_costs_alone(
    size: float, drip: float, limit: int, traffic: list[tuple[tuple[float, float], float]], start: float
) -> None:
    """A sequential caller (each answer read before the next booking) whose requests cost other than booked,
    and whose answers carry only ``X-LS-API-Request-Cost``: the differences never pile up into a refusal."""
    state = bucket(size=size, drip=drip, burst=limit)
    provider, now = StrictProvider(size, drip, limit), start
    for (booked, charged), gap in traffic:
        booking = book(state, now + gap, booked)
        assert provider.receive(booking.send_at, charged) is None, (booking.send_at, booked, charged)
        now = booking.send_at
        state = observe(booking.state, now, Reading(cost=charged), booked=booked)

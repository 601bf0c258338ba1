"""``lightspeed.api_pacing.ApiPacer`` over ``LocalBucketRows``, on fake clocks.

The shared clock (``LocalBucketRows(clock=...)``, the database's in production) and this process's monotonic
clock are deliberately far apart, so a test notices a moment taken from the wrong one. Sleeping moves both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from lightkeeper.lightspeed.api_pacing import LATE_S, ApiPacer, LocalBucketRows, Refusal, Slot
from lightkeeper.lightspeed.bucket import (
    BURST_MARGIN_S,
    BURST_SLOT_S,
    BURST_WINDOW_S,
    BucketState,
    Reading,
    sends_between,
)

WALL = 1_700_000_000.0  # the shared clock at t = 0
MONO = 500.0  # this process's monotonic clock at t = 0


class FakeClock:
    """Both clocks of one simulated instant ``t``; ``sleep`` moves it (by ``oversleep`` more, once, if set)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.oversleep = 0.0

    def wall(self) -> float:
        return WALL + self.t

    def monotonic(self) -> float:
        return MONO + self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds + self.oversleep
        self.oversleep = 0.0


class CountingRows(LocalBucketRows):
    """``LocalBucketRows`` that counts the writes (a change returning a new row)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.writes = 0

    def transform(self, name: str, change: Callable[[str, float], tuple[str | None, Any]]) -> tuple[Any, float]:
        def counted(text: str, now: float) -> tuple[str | None, Any]:
            new, result = change(text, now)
            if new is not None:
                self.writes += 1
            return new, result

        return super().transform(name, counted)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rows(clock: FakeClock) -> CountingRows:
    return CountingRows(clock.wall)


def make_pacer(rows: LocalBucketRows, clock: FakeClock, client_id: str = "app") -> ApiPacer:
    return ApiPacer(rows, client_id=client_id, monotonic=clock.monotonic, sleep=clock.sleep)


@pytest.fixture
def pacer(rows: CountingRows, clock: FakeClock) -> ApiPacer:
    return make_pacer(rows, clock)


def learn(pacer: ApiPacer, account: str = "1", *, size: float = 10, drip: float = 2, burst: int = 100) -> None:
    pacer.correct(account, Reading(size=size, drip=drip, burst_limit=burst))


def slot(result: Slot | Refusal) -> Slot:
    assert isinstance(result, Slot), result
    return result


def wait_of(pacer: ApiPacer, clock: FakeClock, account: str = "1", cost: float = 1.0) -> float:
    return slot(pacer.book(account, cost)).moment - clock.monotonic()


def headers(level: str | None = None, drip: str | None = None, burst: str | None = None) -> dict[str, str]:
    found = {"x-ls-api-bucket-level": level, "x-ls-api-drip-rate": drip, "x-ls-api-burst-level": burst}
    return {name: value for name, value in found.items() if value is not None}


# -- book ------------------------------------------------------------------------------------------------------


def test_a_slot_in_an_empty_bucket_is_now_on_both_clocks(pacer: ApiPacer, clock: FakeClock) -> None:
    clock.t = 12.5
    booked = slot(pacer.book("1", 1.5))
    assert (booked.account_id, booked.cost) == ("1", 1.5)
    assert booked.moment == clock.monotonic() and booked.shared_at == clock.wall()
    assert booked.state.level == 1.5 and len(booked.state.sends) == 1
    (end, count), now = booked.state.sends[0], clock.wall()
    assert count == 1 and now <= end < now + BURST_SLOT_S  # counted in its slot, on the shared clock
    assert sends_between(booked.state.sends, now) == 1


def test_a_full_bucket_books_a_later_moment(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    assert [wait_of(pacer, clock, cost=1.5) for _ in range(6)] == [0.0] * 6  # 9 usable
    seventh = slot(pacer.book("1", 1.5))
    assert seventh.moment == pytest.approx(MONO + 0.75) and seventh.shared_at == pytest.approx(WALL + 0.75)


def test_a_refusal_books_nothing(pacer: ApiPacer, clock: FakeClock, rows: CountingRows) -> None:
    learn(pacer, size=10, drip=2)
    for _ in range(6):
        pacer.book("1", 1.5)
    writes = rows.writes
    refused = pacer.book("1", 1.5, max_wait=0.5)
    assert isinstance(refused, Refusal) and refused.wait == pytest.approx(0.75)
    assert rows.writes == writes
    again = pacer.book("1", 1.5, max_wait=0.75)  # the same wait: nothing was counted for the refused one
    assert slot(again).moment == pytest.approx(MONO + 0.75)
    assert isinstance(pacer.book("1", 1.5, max_wait=1.0), Refusal)  # 1.5 s now


def test_max_wait_zero_still_books_what_leaves_at_once(pacer: ApiPacer, clock: FakeClock) -> None:
    assert slot(pacer.book("1", 1.0, max_wait=0.0)).moment == MONO


def test_the_wait_counts_from_when_the_booking_was_made(rows: CountingRows, clock: FakeClock) -> None:
    """The shared clock may be anywhere: only the wait it computes carries over to the monotonic clock."""
    skewed = LocalBucketRows(clock=lambda: clock.wall() + 3600.0)
    pacer = make_pacer(skewed, clock)
    learn(pacer, size=10, drip=2)
    for _ in range(6):
        pacer.book("1", 1.5)
    assert slot(pacer.book("1", 1.5)).moment == pytest.approx(MONO + 0.75)


# -- reserve and late ------------------------------------------------------------------------------------------


def test_reserve_leaves_at_once_when_there_is_room(pacer: ApiPacer, clock: FakeClock) -> None:
    booked = pacer.reserve("1", 1.0)
    assert booked.moment == MONO and clock.sleeps == []


def test_reserve_sleeps_until_the_moment(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    for _ in range(6):
        pacer.reserve("1", 1.5)
    booked = pacer.reserve("1", 1.5)
    assert clock.sleeps == [pytest.approx(0.75)]
    assert clock.monotonic() == pytest.approx(booked.moment) and not pacer.late(booked)
    pacer.reserve("1", 1.5)
    assert clock.sleeps == [pytest.approx(0.75), pytest.approx(0.75)]


def test_a_batch_takes_the_theoretical_minimum(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=90, drip=1)
    for _ in range(300):
        pacer.reserve("1", 1.5)
    assert clock.t == pytest.approx((300 * 1.5 - 89) / 1)  # 361 s
    steady = [seconds for seconds in clock.sleeps if seconds > 0.5]  # once the bucket is full
    assert len(steady) >= 240 and all(seconds == pytest.approx(1.5) for seconds in steady[1:])


def test_late(pacer: ApiPacer, clock: FakeClock) -> None:
    booked = slot(pacer.book("1", 1.0))
    assert not pacer.late(booked)
    clock.t += LATE_S - 0.01
    assert not pacer.late(booked)
    clock.t += 0.02
    assert pacer.late(booked)


def test_reserve_books_again_when_it_wakes_late(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    for _ in range(6):
        pacer.reserve("1", 1.5)  # level 9 of 9 usable
    clock.oversleep = 0.5  # the first sleep (0.75) ends at 1.25: too late for its moment
    booked = pacer.reserve("1", 1.5)
    # The late slot stays counted (it cannot be taken back): the new one drains after it, 0.25 s later.
    assert clock.sleeps == [pytest.approx(0.75), pytest.approx(0.25)]
    assert booked.moment == pytest.approx(MONO + 1.5) and booked.shared_at == pytest.approx(WALL + 1.5)
    # Both stay in the burst window (the six at 0 left it, with its margin, before the second booking at 1.25).
    assert booked.state.sends == ((pytest.approx(WALL + 0.75, abs=1e-6), 1), (pytest.approx(WALL + 1.5, abs=1e-6), 1))


# -- news, correct and observe ---------------------------------------------------------------------------------


def test_empty_headers_are_no_news(pacer: ApiPacer) -> None:
    booked = slot(pacer.book("1", 1.0))
    assert pacer.news({}) is None and pacer.news({}, booked) is None
    assert pacer.news(headers(level="garbage", drip="0")) is None


def test_without_a_slot_any_reading_is_news(pacer: ApiPacer) -> None:
    assert pacer.news(headers(level="1/90")) == Reading(used=1.0, size=90.0)


def test_what_the_model_expected_is_no_news(pacer: ApiPacer) -> None:
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.0))
    assert pacer.news(headers(level="1/20", drip="1", burst="1/10"), booked) is None
    assert pacer.news(headers(level="2/20", drip="1"), booked) is None  # one request's worth: not news


@pytest.mark.parametrize(
    "answer",
    [
        headers(level="1/30", drip="1"),  # a different size
        headers(level="1/20", drip="2"),  # a different drip rate
        headers(burst="1/20"),  # a different burst limit
        headers(level="2.5/20", drip="1"),  # more than a request above the model
        headers(burst="4/10"),  # three sends the model did not know of
        {"x-ls-api-request-cost": "2"},  # the request cost more than booked (no level said)
        {"x-ls-api-request-cost": "0.5"},  # or less
    ],
)
def test_surprises_are_news(pacer: ApiPacer, answer: dict[str, str]) -> None:
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.0))
    assert pacer.news(answer, booked) == Reading.of(answer)


def test_a_burst_level_within_two_of_the_model_is_no_news(pacer: ApiPacer) -> None:
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.0))
    assert pacer.news(headers(burst="3/10"), booked) is None


def test_the_level_is_compared_at_the_moment_of_the_answer(pacer: ApiPacer, clock: FakeClock) -> None:
    """The model drains while the answer is awaited: 1.5 two seconds later is more than a request above 0."""
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.0))
    assert pacer.news(headers(level="1.5/20"), booked) is None
    clock.t += 2.0
    assert pacer.news(headers(level="1.5/20"), booked) == Reading(used=1.5, size=20.0)
    assert pacer.news(headers(level="1/20"), booked) is None


def test_correct_writes_only_a_change(pacer: ApiPacer, clock: FakeClock, rows: CountingRows) -> None:
    learn(pacer, size=10, drip=2)
    writes = rows.writes
    pacer.correct("1", Reading())
    pacer.correct("1", Reading(size=10.0, drip=2.0, burst_limit=100))
    assert rows.writes == writes
    pacer.correct("1", Reading(used=9.0))
    assert rows.writes == writes + 1
    assert wait_of(pacer, clock, cost=1.0) == pytest.approx(0.5)  # 9 + 1 - 9 usable, at 2/s


def test_observe_applies_news(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    booked = slot(pacer.book("1", 1.0))
    pacer.observe("1", headers(level="9/10", drip="2"), booked)  # someone else spends the bucket
    assert wait_of(pacer, clock, cost=1.0) == pytest.approx(0.5)


def test_observe_without_news_writes_nothing(pacer: ApiPacer, rows: CountingRows) -> None:
    learn(pacer, size=10, drip=2)
    booked = slot(pacer.book("1", 1.0))
    writes = rows.writes
    pacer.observe("1", headers(level="1/10", drip="2"), booked)
    pacer.observe("1", {}, booked)
    assert rows.writes == writes


def test_the_first_answer_teaches_size_and_drip(pacer: ApiPacer, clock: FakeClock) -> None:
    pacer.observe("1", headers(level="5/20", drip="4", burst="1/20"))
    assert wait_of(pacer, clock, cost=10) == 0.0  # 15 of 19 usable
    assert wait_of(pacer, clock, cost=10) == pytest.approx((15 + 10 - 19) / 4)


def costing(cost: str, **more: str) -> dict[str, str]:
    """An answer's headers with ``X-LS-API-Request-Cost`` (``more``: others, as for ``headers``)."""
    return {**headers(**more), "x-ls-api-request-cost": cost}


def test_a_cost_is_news_only_against_a_booking_it_differs_from(pacer: ApiPacer) -> None:
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.5))
    assert pacer.news(costing("7")) is None  # nothing booked (an account lookup): nothing to correct
    assert pacer.news(costing("7", level="1/20")) == Reading(used=1.0, size=20.0)  # the rest still counts
    assert pacer.news(costing("7"), booked) == Reading(cost=7.0)
    assert pacer.news(costing("1.5", level="1.5/20", drip="1"), booked) is None


def test_a_refused_request_s_cost_is_no_news(pacer: ApiPacer) -> None:
    """A 429 charged nothing: its ``hold`` (or ``full``) is what changes the bucket."""
    learn(pacer, size=20, drip=1, burst=10)
    booked = slot(pacer.book("1", 1.5))
    assert pacer.news({**costing("7"), "x-ls-api-ratelimit-type": "api-leaky-bucket"}, booked) is None


def test_a_costlier_request_corrects_the_shared_row_for_every_process(rows: CountingRows, clock: FakeClock) -> None:
    """A write booked at 1.5 cost 9, and its answer says no level: the other process's next booking waits."""
    first, second = make_pacer(rows, clock), make_pacer(rows, clock)
    learn(first, size=10, drip=2)
    booked = slot(first.book("1", 1.5))
    writes = rows.writes
    first.observe("1", costing("9"), booked)
    assert rows.writes == writes + 1
    assert wait_of(second, clock, cost=1.0) == pytest.approx(0.5)  # 9 + 1 - 9 usable, at 2/s


def test_a_cheaper_request_frees_the_difference(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    last = [slot(pacer.book("1", 1.5)) for _ in range(6)][-1]  # 9 of 9 usable
    pacer.observe("1", costing("1"), last)
    assert wait_of(pacer, clock, cost=1.5) == pytest.approx(0.5)  # (8.5 + 1.5 - 9) / 2, not 0.75


def test_a_cost_under_requests_in_flight_is_corrected(pacer: ApiPacer, clock: FakeClock) -> None:
    """Three writes booked at 1.5; the first cost 2.5, and its answer's level counts only it: not a request above
    the model (4.5), yet the row must count the extra 1."""
    learn(pacer, size=10, drip=1)
    first, _second, _third = (slot(pacer.book("1", 1.5)) for _ in range(3))
    fix = pacer.correction("1", costing("2.5", level="2.5/10", drip="1"), first)
    assert fix is not None
    fix()
    assert wait_of(pacer, clock, cost=4.0) == pytest.approx(0.5)  # 5.5 + 4 - 9 usable, at 1/s (4.5: no wait)


def test_a_cost_ends_the_credit_and_corrects_the_row(rows: CountingRows, clock: FakeClock) -> None:
    """A steady caller books from its credit (no row write); the answer of one of those requests says it cost
    300 more: the row, where the other process books, counts it."""
    caller, other = make_pacer(rows, clock), make_pacer(rows, clock)
    learn(caller, size=1000, drip=400, burst=1000)
    booked: list[Slot] = []
    for _ in range(300):  # 300 a second for a second: the caller reserves credits ahead
        booked.append(slot(caller.book("1", 1.5)))
        clock.t += 1 / 300
    last = booked[-1]
    assert last.deadline < float("inf")  # booked from a credit
    caller.observe("1", costing("301.5"), last)
    level = rows.transform("app/1", lambda text, now: (None, BucketState.loads(text).level_at(now)))[0]
    assert 300.0 <= level <= 300.0 + 100.0  # the 300, and at most the credits' few requests besides
    assert wait_of(other, clock, cost=700.0) > 0.0  # without the 300: 700 + at most 100 of 999 usable


# -- hold and full ---------------------------------------------------------------------------------------------


def test_hold_honours_retry_after_then_drips(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=90, drip=1)
    pacer.hold("1", 3.0, 1.5)  # a 429: "Retry-After: 3"
    retry = slot(pacer.book("1", 1.5))
    assert retry.moment == pytest.approx(MONO + 3.0) and retry.shared_at == pytest.approx(WALL + 3.0)
    assert wait_of(pacer, clock, cost=1.5) == pytest.approx(4.5)  # the next one a drip later
    pacer.hold("1", 0.0, 1.5)  # a hold never releases what is already booked
    assert wait_of(pacer, clock, cost=1.5) == pytest.approx(6.0)


def test_hold_refuses_what_would_wait_too_long(pacer: ApiPacer) -> None:
    pacer.hold("1", 30.0, 1.0)
    refused = pacer.book("1", 1.0, max_wait=10.0)
    assert isinstance(refused, Refusal) and refused.wait == pytest.approx(30.0)


def test_full_makes_the_next_request_wait_a_drip(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, size=10, drip=2)
    pacer.full("1")
    assert wait_of(pacer, clock, cost=1.0) == pytest.approx(1.0)  # (10 + 1 - 9) / 2


# -- who shares a bucket ---------------------------------------------------------------------------------------


def test_two_pacers_on_one_store_share_the_bucket(rows: CountingRows, clock: FakeClock) -> None:
    first, second = make_pacer(rows, clock), make_pacer(rows, clock)
    learn(first, size=10, drip=2)
    for _ in range(6):
        first.book("1", 1.5)
    assert wait_of(second, clock, cost=1.5) == pytest.approx(0.75)
    second.hold("1", 5.0, 1.5)
    assert wait_of(first, clock, cost=1.5) >= 5.0


def test_another_oauth_client_has_its_own_bucket(rows: CountingRows, clock: FakeClock) -> None:
    first, other = make_pacer(rows, clock, "app"), make_pacer(rows, clock, "other-app")
    assert (first.name("1"), other.name("1")) == ("app/1", "other-app/1")
    learn(first, size=10, drip=2)
    for _ in range(6):
        first.book("1", 1.5)
    assert wait_of(other, clock, cost=1.5) == 0.0


def test_accounts_have_separate_buckets(pacer: ApiPacer, clock: FakeClock) -> None:
    learn(pacer, "1", size=10, drip=1)
    learn(pacer, "2", size=10, drip=1)
    for _ in range(9):
        pacer.book("1", 1.0)
    pacer.hold("3", 60.0, 1.0)
    assert wait_of(pacer, clock, "2") == 0.0
    assert wait_of(pacer, clock, "1") == pytest.approx(1.0)


def test_a_pacer_without_rows_keeps_its_own() -> None:
    clock = FakeClock()
    pacer = ApiPacer(monotonic=clock.monotonic, sleep=clock.sleep)
    assert pacer.name("7") == "/7"
    assert slot(pacer.book("7", 1.0)).state.level == 1.0


def test_local_rows_write_only_what_a_change_returns(clock: FakeClock) -> None:
    rows = LocalBucketRows(clock=clock.wall)
    assert rows.transform("a", lambda text, now: (None, (text, now))) == (("", WALL), WALL)
    rows.transform("a", lambda text, now: ("stored", None))
    assert rows.transform("a", lambda text, now: (None, text)) == ("stored", WALL)
    assert rows.transform("b", lambda text, now: (None, text)) == ("", WALL)


def test_threads_booking_at_once_get_distinct_spaced_moments() -> None:
    """Twenty threads at the same instant: the first bucketful at once, then one every cost / drip, none twice."""
    rows = LocalBucketRows(clock=lambda: WALL)
    pacer = ApiPacer(rows, client_id="app", monotonic=lambda: MONO, sleep=lambda _seconds: None)
    learn(pacer, size=10, drip=2, burst=100)
    barrier = threading.Barrier(20)
    booked: list[Slot] = []
    lock = threading.Lock()

    def book() -> None:
        barrier.wait()
        result = slot(pacer.book("1", 1.5))
        with lock:
            booked.append(result)

    threads = [threading.Thread(target=book) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    moments = sorted(result.moment for result in booked)
    assert moments == pytest.approx([MONO] * 6 + [MONO + 0.75 * n for n in range(1, 15)])
    assert len({result.shared_at for result in booked if result.shared_at > WALL}) == 14
    final = BucketState.loads(rows.transform("app/1", lambda text, now: (None, text))[0])
    # Every booking was written in turn: the level is the twenty's, and the slots kept are exactly those of the
    # bookings within the window (and its margin) before the last one was booked, from WALL + 9.75: one each.
    assert (final.at, final.level) == (pytest.approx(WALL + 10.5, abs=1e-6), pytest.approx(9.0))
    latest = sorted(result.shared_at for result in booked)[-3:]
    assert latest == [pytest.approx(WALL + moment, abs=1e-6) for moment in (9.0, 9.75, 10.5)]
    assert final.sends == tuple((pytest.approx(shared_at, abs=1e-6), 1) for shared_at in latest)


def test_threads_keep_the_burst_window() -> None:
    rows = LocalBucketRows(clock=lambda: WALL)
    pacer = ApiPacer(rows, monotonic=lambda: MONO, sleep=lambda _seconds: None)
    pacer.correct("1", Reading(size=1000.0, drip=1.0, burst_limit=10))
    barrier = threading.Barrier(20)
    moments: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        barrier.wait()
        result = slot(pacer.book("1", 1.0))
        with lock:
            moments.append(result.moment)

    threads = [threading.Thread(target=book) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gap = BURST_WINDOW_S + BURST_MARGIN_S
    assert sorted(moments) == pytest.approx([MONO] * 10 + [MONO + gap] * 10)
    # The second ten share one slot, all counted; the first ten, a window and margin before the last booking
    # (from WALL + gap), are dropped.
    final = BucketState.loads(rows.transform("/1", lambda text, now: (None, text))[0])
    assert final.sends == ((pytest.approx(WALL + gap, abs=1e-6), 10),)


def test_lateness_shrinks_only_for_a_fast_drip_into_a_nearly_full_bucket() -> None:
    from lightkeeper.lightspeed.api_pacing import late_after
    from lightkeeper.lightspeed.bucket import HEADROOM, BucketState

    nearly_full = BucketState(level=88.8, size=90.0, drip=201.0)  # less than half the headroom left
    assert late_after(nearly_full) == pytest.approx(HEADROOM / 2 / 201.0)  # half the headroom, drained
    assert late_after(BucketState(level=10.0, size=90.0, drip=1.0)) == LATE_S  # Lightspeed's usual limits
    huge = BucketState(level=1.0, size=1e9, drip=1e9)
    assert late_after(huge) == LATE_S  # room to spare: rebooking would only spin

"""``lightspeed.credits``: a process's credit in an account's shared bucket, through ``ApiPacer`` on fake clocks.

A process that books an account several times a second reserves a few requests ahead in the shared row
(``bucket.reserve_ahead``) and books them locally until the credit's end. The tests count the row's writes
(``CountingRows``), tell a slot booked from a credit by its finite ``deadline``, and replay what the pacers booked
against a strict provider (the one of ``test_bucket``'s property test) to show that credits never make the
combined traffic of one or two processes overfill the bucket or the burst window.

The shared clock (``LocalBucketRows(clock=...)``) and each process's monotonic clock are far apart, so a moment
taken from the wrong clock shows.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lightkeeper.lightspeed import credits
from lightkeeper.lightspeed.api_pacing import LATE_S, ApiPacer, LocalBucketRows, Refusal, Slot
from lightkeeper.lightspeed.bucket import BURST_WINDOW_S, HEADROOM, BucketState, Reading, reserve_ahead
from lightkeeper.lightspeed.credits import CREDIT_S, SOLE_USER_S

WALL = 1_700_000_000.0  # the shared clock at t = 0
MONO = 500.0  # the first process's monotonic clock at t = 0
OTHER_MONO = 9_000.0  # the second process's
RATE = 300  # a steady caller's requests a second
ROOMY = {"size": 1000.0, "drip": 400.0, "burst": 1000}  # far more than RATE needs: credits pay off


class FakeClock:
    """The shared clock and every process's monotonic clock at one simulated instant ``t``."""

    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> float:
        return WALL + self.t

    def monotonic(self, offset: float = MONO) -> Callable[[], float]:
        return lambda: offset + self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class CountingRows(LocalBucketRows):
    """``LocalBucketRows`` that counts the transactions and the writes (a change returning a new row)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.writes = 0
        self.transactions = 0

    def transform(self, name: str, change: Callable[[str, float], tuple[str | None, Any]]) -> tuple[Any, float]:
        def counted(text: str, now: float) -> tuple[str | None, Any]:
            new, result = change(text, now)
            self.transactions += 1
            if new is not None:
                self.writes += 1
            return new, result

        return super().transform(name, counted)

    def state(self, name: str = "app/1") -> BucketState:
        return BucketState.loads(super().transform(name, lambda text, _now: (None, text))[0])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rows(clock: FakeClock) -> CountingRows:
    return CountingRows(clock.wall)


def make_pacer(rows: LocalBucketRows, clock: FakeClock, offset: float = MONO) -> ApiPacer:
    return ApiPacer(rows, client_id="app", monotonic=clock.monotonic(offset), sleep=clock.sleep)


def learn(pacer: ApiPacer, *, size: float, drip: float, burst: int) -> None:
    pacer.correct("1", Reading(size=size, drip=drip, burst_limit=burst))


def slot(result: Slot | Refusal) -> Slot:
    assert isinstance(result, Slot), result
    return result


def from_credit(booked: Slot) -> bool:
    return math.isfinite(booked.deadline)


def steady(pacer: ApiPacer, clock: FakeClock, seconds: float, cost: float = 1.0) -> list[Slot]:
    """One booking every ``1 / RATE`` s for ``seconds``, each sent at its moment (a sequential caller)."""
    booked = []
    for _ in range(round(seconds * RATE)):
        booked.append(slot(pacer.book("1", cost)))
        clock.t += 1 / RATE
    return booked


class StrictProvider:
    """Lightspeed at its strictest (as in ``test_bucket``): a leaky bucket of ``size`` refusing any overflow,
    and at most ``limit`` requests in any closed one-second window. Sends arrive in time order."""

    def __init__(self, size: float, drip: float, limit: int) -> None:
        self.size, self.drip, self.limit = size, drip, limit
        self.level, self.last = 0.0, -math.inf
        self.accepted: list[float] = []

    def receive(self, at: float, cost: float) -> str | None:
        """None when accepted, else why it was refused."""
        assert at >= self.last
        if self.last > -math.inf:
            self.level = max(0.0, self.level - (at - self.last) * self.drip)
        self.last = at
        if self.level + cost > self.size + 1e-9:
            return f"leaky bucket: {self.level:.4f} + {cost} > {self.size}"
        in_window = sum(1 for sent in self.accepted if at - BURST_WINDOW_S <= sent <= at)
        if in_window + 1 > self.limit:
            return f"burst: {in_window + 1} > {self.limit} in the window ending {at - WALL:.6f}"
        self.level += cost
        self.accepted.append(at)
        return None


def refusals(sends: list[tuple[float, float]], size: float, drip: float, limit: int) -> list[str]:
    provider = StrictProvider(size, drip, limit)
    found = []
    for at, cost in sorted(sends):
        if (why := provider.receive(at, cost)) is not None:
            found.append(f"at {at - WALL:.6f} cost {cost}: {why}")
    return found


# -- a steady caller -------------------------------------------------------------------------------------------


def test_a_steady_caller_books_mostly_from_its_credit(rows: CountingRows, clock: FakeClock) -> None:
    pacer = make_pacer(rows, clock)
    learn(pacer, **ROOMY)
    warmup = steady(pacer, clock, 1.0)  # the demand is known after a few dozen requests
    writes = rows.writes
    booked = steady(pacer, clock, 2.0)
    assert rows.writes - writes < len(booked) / 5
    assert sum(map(from_credit, booked)) > len(booked) * 3 / 4
    for booking in [*warmup, *booked]:
        assert booking.moment <= booking.deadline  # every slot from a credit leaves within it
        assert booking.moment - (booking.shared_at - WALL) == pytest.approx(MONO)  # on the right clocks
    # A roomy bucket: nobody waits more than a credit's length.
    assert max(b.moment - MONO - n / RATE for n, b in enumerate([*warmup, *booked])) <= CREDIT_S + 1e-6
    sends = [(booking.shared_at, booking.cost) for booking in [*warmup, *booked]]
    assert refusals(sends, ROOMY["size"], ROOMY["drip"], ROOMY["burst"]) == []


def test_a_credit_slot_is_late_after_the_credit_s_end(rows: CountingRows, clock: FakeClock) -> None:
    pacer = make_pacer(rows, clock)
    learn(pacer, **ROOMY)
    booked = next(b for b in steady(pacer, clock, 1.0) if from_credit(b))
    clock.t = booked.moment - MONO
    assert not pacer.late(booked)
    clock.t = booked.deadline - MONO + 1e-6
    assert booked.deadline - booked.moment < LATE_S  # the deadline, not LATE_S, makes it late
    assert pacer.late(booked)


# -- the property: credits never make a strict provider refuse ------------------------------------------------

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))

#: A run of arrivals close together (a busy moment, whose demand earns credits), after a gap.
RUNS = st.tuples(
    st.floats(min_value=0.0, max_value=2.5),  # the gap before the run
    st.integers(min_value=1, max_value=60),  # its arrivals
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.03)),  # between them
    st.lists(st.sampled_from([1.0, 1.5]), min_size=1, max_size=3),  # the costs booked together in one book_many
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.5)),  # their max_wait
)
#: (gap since the previous arrival, the costs booked together, their ``max_wait``).
ARRIVALS = st.lists(RUNS, min_size=1, max_size=5).map(
    lambda runs: [
        (before if n == 0 else between, costs, max_wait)
        for before, count, between, costs, max_wait in runs
        for n in range(count)
    ]
)
Stream = Sequence[tuple[float, Sequence[float], float | None]]


def simulate(
    size: float, drip: float, limit: int, streams: Sequence[Stream], stalls: Sequence[float] = ()
) -> tuple[list[tuple[float, float]], int, int]:
    """Each stream a process (an ``ApiPacer`` on the same rows) booking its arrivals, all interleaved in time.
    Every slot is sent when its caller wakes, at its moment (plus the next of ``stalls``, cycled, for a first
    booking): sent on the shared clock at ``shared_at`` (plus the stall) unless ``late``, then booked again as
    ``reserve`` does.
    The sends (shared moment, cost), how many came from a credit, and how many were booked again."""
    clock = FakeClock()
    rows = LocalBucketRows(clock.wall)
    offsets = [MONO, OTHER_MONO][: len(streams)]
    pacers = [make_pacer(rows, clock, offset) for offset in offsets]
    learn(pacers[0], size=size, drip=drip, burst=limit)
    order = itertools.count()
    delays = itertools.cycle(stalls or [0.0])
    queue: list[tuple[float, int, int, Any]] = []
    for who, stream in enumerate(streams):
        t = 0.0
        for gap, costs, max_wait in stream:
            t += gap
            heapq.heappush(queue, (t, next(order), who, [(cost, max_wait) for cost in costs]))

    def wake(who: int, booked: Slot, delay: float | None = None) -> None:
        delay = next(delays) if delay is None else delay
        at = max(clock.t, booked.moment - offsets[who] + delay)
        heapq.heappush(queue, (at, next(order), who, (booked, delay)))

    sends: list[tuple[float, float]] = []
    credited = rebooked = 0
    while queue:
        t, _, who, item = heapq.heappop(queue)
        clock.t = max(clock.t, t)
        pacer = pacers[who]
        if isinstance(item, list):
            for result in pacer.book_many("1", item):
                if isinstance(result, Slot):
                    wake(who, result)
            continue
        booked, delay = item
        if pacer.late(booked):
            rebooked += 1
            wake(who, slot(pacer.book("1", booked.cost)), 0.0)  # a caller booking again does not stall again
            continue
        assert booked.moment <= booked.deadline and offsets[who] + clock.t <= booked.deadline + 1e-9
        credited += from_credit(booked)
        sends.append((booked.shared_at + delay, booked.cost))
    return sends, credited, rebooked


LIMITS = {
    "size": st.one_of(st.floats(min_value=4.0, max_value=60.0), st.floats(min_value=60.0, max_value=1000.0)),
    "drip": st.one_of(st.floats(min_value=0.25, max_value=10.0), st.floats(min_value=10.0, max_value=500.0)),
    "limit": st.one_of(st.integers(min_value=1, max_value=20), st.integers(min_value=20, max_value=400)),
    "streams": st.integers(min_value=1, max_value=2).flatmap(lambda n: st.lists(ARRIVALS, min_size=n, max_size=n)),
}


def credit_event(credited: int, total: int) -> None:
    event("no credit" if not credited else "credits" if credited < total / 2 else "mostly credits")


@FAST
@given(**LIMITS)
def test_a_strict_provider_never_refuses_what_one_or_two_processes_booked(
    size: float, drip: float, limit: int, streams: list[Stream]
) -> None:
    sends, credited, rebooked = simulate(size, drip, limit, streams)
    credit_event(credited, len(sends))
    assert rebooked == 0  # sent exactly at their moments: never late
    assert refusals(sends, size, drip, limit) == []


STALLS = st.lists(st.sampled_from([0.0, 0.0, 0.005, 0.02, LATE_S - 0.001, LATE_S + 0.01, 0.2]), max_size=7)


@settings(FAST, max_examples=30)
@given(stalls=STALLS, **LIMITS)
def test_callers_that_wake_late_never_send_after_a_credit_s_end(
    size: float, drip: float, limit: int, streams: list[Stream], stalls: list[float]
) -> None:
    """Callers that wake a little late send then (within ``LATE_S`` and the slot's deadline) or book again:
    ``simulate`` checks that no slot leaves after its deadline, and the provider still accepts everything."""
    sends, credited, _ = simulate(size, drip, limit, streams, stalls)
    credit_event(credited, len(sends))
    assert refusals(sends, size, drip, limit) == []


def test_the_simulation_does_exercise_credits() -> None:
    """One busy process, another that books once in a while: most of the first's slots come from credits."""
    busy = [(0.01, [1.0], None)] * 300
    sparse = [(1.5, [1.5], None)] * 2
    sends, credited, _ = simulate(200.0, 150.0, 400, [busy, sparse])
    assert credited > 100 and refusals(sends, 200.0, 150.0, 400) == []


# -- who else books the account --------------------------------------------------------------------------------


def test_two_processes_alternating_take_no_credit(rows: CountingRows, clock: FakeClock) -> None:
    first, second = make_pacer(rows, clock), make_pacer(rows, clock, OTHER_MONO)
    learn(first, **ROOMY)
    assert sum(map(from_credit, steady(first, clock, 1.0))) > RATE / 2  # alone: credits
    start = clock.t
    written: list[tuple[float, int, Slot]] = []  # (when, writes, slot)
    for n in range(RATE):  # one second, taking turns
        writes = rows.writes
        booked = slot((first, second)[n % 2].book("1", 1.0))
        written.append((clock.t, rows.writes - writes, booked))
        clock.t += 1 / RATE
    # Once the first's last credit is over, every booking of either is written in the row.
    after = [(writes, booked) for when, writes, booked in written if when > start + 2 * CREDIT_S]
    assert after and all(writes == 1 and not from_credit(booked) for writes, booked in after)
    second_left = clock.t - 1 / RATE
    alone: list[tuple[float, int, Slot]] = []
    for _ in range(2 * RATE):  # the first alone again
        writes = rows.writes
        booked = slot(first.book("1", 1.0))
        alone.append((clock.t, rows.writes - writes, booked))
        clock.t += 1 / RATE
    within = [(writes, booked) for when, writes, booked in alone if when < second_left + SOLE_USER_S]
    assert within and all(writes == 1 and not from_credit(booked) for writes, booked in within)
    later = [(writes, booked) for when, writes, booked in alone if when > second_left + SOLE_USER_S + CREDIT_S]
    assert sum(writes for writes, _ in later) < len(later) / 5
    assert sum(from_credit(booked) for _, booked in later) > len(later) * 3 / 4


def test_a_process_that_booked_long_ago_does_not_stop_credits(rows: CountingRows, clock: FakeClock) -> None:
    first, second = make_pacer(rows, clock), make_pacer(rows, clock, OTHER_MONO)
    learn(first, **ROOMY)
    slot(second.book("1", 1.0))
    clock.t += SOLE_USER_S + 0.01
    assert sum(map(from_credit, steady(first, clock, 1.0))) > RATE / 2


# -- what drops a credit ---------------------------------------------------------------------------------------


def with_a_credit(rows: CountingRows, clock: FakeClock) -> ApiPacer:
    """A steady caller just after a booking in the row that took a credit."""
    pacer = make_pacer(rows, clock)
    learn(pacer, **ROOMY)
    steady(pacer, clock, 1.0)
    while True:
        writes = rows.writes
        booked = slot(pacer.book("1", 1.0))
        clock.t += 1 / RATE
        if rows.writes > writes:
            assert not from_credit(booked)
            return pacer


DROPS: dict[str, Callable[[ApiPacer], None]] = {
    "hold": lambda pacer: pacer.hold("1", 0.0, 1.0),
    "full": lambda pacer: pacer.full("1"),
    "correct": lambda pacer: pacer.correct("1", Reading(size=ROOMY["size"])),  # news that changes nothing
}


def test_a_fresh_credit_serves_the_next_booking(rows: CountingRows, clock: FakeClock) -> None:
    pacer = with_a_credit(rows, clock)
    writes, transactions = rows.writes, rows.transactions
    assert from_credit(slot(pacer.book("1", 1.0)))
    assert (rows.writes, rows.transactions) == (writes, transactions)


@pytest.mark.parametrize("drop", sorted(DROPS))
def test_hold_full_and_correct_drop_the_credit(rows: CountingRows, clock: FakeClock, drop: str) -> None:
    pacer = with_a_credit(rows, clock)
    DROPS[drop](pacer)
    writes = rows.writes
    booked = slot(pacer.book("1", 1.0))
    assert rows.writes == writes + 1 and not from_credit(booked)


def test_a_hold_by_another_process_is_kept_by_the_credit_holder(rows: CountingRows, clock: FakeClock) -> None:
    """The other process's hold is in the row: the holder's next booking there honours it (not undone by its
    own credit's bookings replacing the reservation)."""
    pacer = with_a_credit(rows, clock)
    other = make_pacer(rows, clock, OTHER_MONO)
    other.hold("1", 5.0, 1.0)
    held_from = clock.t
    for _ in range(RATE):
        booked = slot(pacer.book("1", 1.0))
        if not from_credit(booked):
            break
        assert booked.moment <= booked.deadline
        clock.t += 1 / RATE
    assert not from_credit(booked) and booked.moment - MONO >= held_from + 5.0 - 1e-6


def test_a_full_by_another_process_is_kept_by_the_credit_holder(rows: CountingRows, clock: FakeClock) -> None:
    pacer = with_a_credit(rows, clock)
    other = make_pacer(rows, clock, OTHER_MONO)
    other.full("1")
    full_at = clock.wall()
    while from_credit(slot(pacer.book("1", 1.0))):
        clock.t += 1 / RATE
    # The row said full: its level, drained since, is still in the row after the holder's booking there.
    row = rows.state()
    assert row.level_at(row.at) >= ROOMY["size"] - (row.at - full_at) * ROOMY["drip"] - 1e-6


# -- max_wait --------------------------------------------------------------------------------------------------


def credit_that_waits(rows: CountingRows, clock: FakeClock) -> ApiPacer:
    """A credit whose next slot waits: the burst window spaced the booking that took it (40 sends at 0, limit
    40, the 41st booked at 1.0 leaves at 1.05), and the credit books after it."""
    pacer = make_pacer(rows, clock)
    learn(pacer, size=1000.0, drip=100.0, burst=40)
    assert all(isinstance(result, Slot) for result in pacer.book_many("1", [(1.0, None)] * 40))
    clock.t = 1.0
    spaced = slot(pacer.book("1", 1.0))
    assert spaced.moment - clock.monotonic()() == pytest.approx(0.05, abs=0.011) and not from_credit(spaced)
    return pacer


def test_a_credit_slot_may_wait(rows: CountingRows, clock: FakeClock) -> None:
    pacer = credit_that_waits(rows, clock)
    transactions = rows.transactions
    booked = slot(pacer.book("1", 1.0))
    assert from_credit(booked) and rows.transactions == transactions
    assert 0.03 < booked.moment - clock.monotonic()() <= booked.deadline - clock.monotonic()()


def test_a_max_wait_below_the_credit_slot_s_wait_books_in_the_row(rows: CountingRows, clock: FakeClock) -> None:
    pacer = credit_that_waits(rows, clock)
    transactions = rows.transactions
    result = pacer.book("1", 1.0, max_wait=0.01)
    assert rows.transactions == transactions + 1  # the row was asked, not the credit
    assert isinstance(result, Refusal) or not from_credit(result)
    if isinstance(result, Refusal):
        assert result.wait > 0.01


def test_a_max_wait_above_the_credit_slot_s_wait_books_from_the_credit(rows: CountingRows, clock: FakeClock) -> None:
    pacer = credit_that_waits(rows, clock)
    transactions = rows.transactions
    assert from_credit(slot(pacer.book("1", 1.0, max_wait=0.2)))
    assert rows.transactions == transactions


# -- a tight bucket --------------------------------------------------------------------------------------------


def test_a_tight_bucket_takes_no_credit_and_the_theoretical_minimum(rows: CountingRows, clock: FakeClock) -> None:
    """33 requests a second into a bucket of 90 draining 50/s: the demand asks for credits, but once the bucket
    is full none is taken, and the batch takes (n x cost - usable bucket) / drip, as without credits."""
    pacer = make_pacer(rows, clock)
    learn(pacer, size=90.0, drip=50.0, burst=1000)
    count, cost = 1000, 1.5
    booked = []
    for _ in range(count):
        writes = rows.writes
        booked.append((pacer.reserve("1", cost), rows.writes - writes))
    assert clock.t == pytest.approx((count * cost - (90.0 - HEADROOM)) / 50.0, abs=cost / 50.0)
    full = [(b, writes) for b, writes in booked if b.moment - MONO > 1.0]
    assert len(full) > count * 0.9
    assert all(not from_credit(b) and writes == 1 for b, writes in full)
    assert refusals([(b.shared_at, b.cost) for b, _ in booked], 90.0, 50.0, 1000) == []


# -- bucket.reserve_ahead and credits.take ---------------------------------------------------------------------


def state(**fields: Any) -> BucketState:
    return BucketState(**{"size": 21.0, "drip": 1.0, "burst_limit": 1000, **fields})


def test_reserve_ahead_stops_at_half_the_bucket() -> None:
    reserved, count = reserve_ahead(state(), 10.0, 100)
    assert count == 10  # (21 - 1) / 2
    assert (reserved.level, reserved.at, sum(n for _end, n in reserved.sends)) == (10.0, 10.0, 10)
    assert reserve_ahead(state(level=6.0, at=10.0), 10.0, 100)[1] == 4
    assert reserve_ahead(state(level=9.0, at=6.0), 10.0, 100)[1] == 5  # drained to 5 by then
    assert reserve_ahead(state(), 10.0, 100, 2.5)[1] == 4
    assert reserve_ahead(state(level=10.0, at=10.0), 10.0, 100)[1] == 0


def test_reserve_ahead_stops_at_half_the_burst_window() -> None:
    assert reserve_ahead(state(size=1e6, burst_limit=9), 10.0, 100)[1] == 4
    assert reserve_ahead(state(size=1e6, burst_limit=8), 10.0, 100)[1] == 4
    assert reserve_ahead(state(size=1e6, burst_limit=8, sends=((9.5, 3),)), 10.0, 100)[1] == 1
    assert reserve_ahead(state(size=1e6, burst_limit=8, sends=((8.9, 5),)), 10.0, 100)[1] == 4  # out of it
    assert reserve_ahead(state(size=1e6, burst_limit=1), 10.0, 100)[1] == 0


def test_reserve_ahead_stops_at_most() -> None:
    reserved, count = reserve_ahead(state(), 10.0, 3)
    assert count == 3 and reserved.level == 3.0
    assert reserve_ahead(state(), 10.0, 0) == (state(), 0)


def test_reserve_ahead_books_nothing_that_would_wait() -> None:
    ahead = state(level=1.0, at=10.5)  # a booking beyond ``until``
    assert reserve_ahead(ahead, 10.0, 100) == (ahead, 0)
    held = state(hold_until=10.2)
    assert reserve_ahead(held, 10.0, 100) == (held, 0)


def test_take_reserves_after_what_is_booked() -> None:
    row = state(level=2.0, at=10.02)
    reserved, credit = credits.take(row, 10.0, 5, 1.0, booker="a")
    assert credit is not None and credit.until == pytest.approx(10.02 + CREDIT_S)
    assert (credit.sends, credit.units, credit.state) == (5, 5.0, row)
    assert reserved.at == credit.until and reserved.level == pytest.approx(7.0 - CREDIT_S)


def test_take_gives_no_credit_to_a_process_sharing_the_account() -> None:
    row = state().booked_by("b", 9.5)
    assert credits.take(row, 10.0, 5, 1.0, booker="a") == (row, None)
    assert credits.take(row, 10.0, 5, 1.0, booker="b")[1] is not None  # its own booking is no one else's
    assert credits.take(row, 9.5 + SOLE_USER_S + 0.01, 5, 1.0, booker="a")[1] is not None
    assert credits.take(state(), 10.0, 0, 1.0, booker="a") == (state(), None)
    full = state(level=15.0, at=10.0)
    assert credits.take(full, 10.0, 5, 1.0, booker="a") == (full, None)


def test_a_credit_books_from_the_state_before_the_reservation() -> None:
    _, credit = credits.take(state(), 10.0, 3, 1.5, booker="a")
    assert credit is not None and credit.monotonic_at == 0.0
    left, booking = credit.book(1.0, 0.01) or pytest.fail("no booking")
    assert (booking.send_at, booking.wait) == (pytest.approx(10.01), 0.0)
    assert (left.sends, left.units) == (2, 3.5) and left.state.level == 1.0
    assert credit.book(1.0, CREDIT_S) is None  # too close to its end
    assert spend(credit, [1.0, 1.5, 1.5]).sends == 0  # three requests, 4 of the 4.5 units
    assert credit.book(1.0, 0.01) is not None and spend(credit, [1.0, 1.5, 1.5]).book(1.0, 0.01) is None
    _, cheap = credits.take(state(), 10.0, 3, 1.0, booker="a")
    assert cheap is not None and spend(cheap, [1.5, 1.5]).sends == 1
    assert spend(cheap, [1.5, 1.5]).book(1.0, 0.01) is None  # one request left, but no unit


def spend(credit: credits.Credit, costs: list[float]) -> credits.Credit:
    for cost in costs:
        taken = credit.book(cost, 0.01)
        assert taken is not None, (credit, cost)
        credit = taken[0]
    return credit


def test_demand_needs_a_few_requests_a_second() -> None:
    now = [0.0]
    demand = credits.Demand(lambda: now[0])
    assert demand.credit_size("1") == 0
    demand.note("1", 19)
    assert demand.credit_size("1") == 0  # 1.9 expected in a credit's time
    demand.note("1")
    assert demand.credit_size("1") == 2
    demand.note("1", 10_000)
    assert demand.credit_size("1") == credits.CREDIT_MAX
    now[0] = 1.5
    assert demand.credit_size("1") == 0  # the last second's only

"""BucketPacer: the per-account leaky-bucket model, with a fake monotonic clock and a fake sleep."""

from __future__ import annotations

import threading

import pytest

from lightkeeper.lightspeed.bucket import DEFAULT_DRIP, DEFAULT_SIZE, BucketPacer, parse_bucket


class FakeTime:
    """``monotonic`` and ``sleep`` for the pacer: sleeping moves the clock, and every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def pacer(fake: FakeTime) -> BucketPacer:
    return BucketPacer(monotonic=fake.monotonic, sleep=fake.sleep)


def headers(used: float, size: float, drip: float) -> dict[str, str]:
    return {"x-ls-api-bucket-level": f"{used:g}/{size:g}", "x-ls-api-drip-rate": f"{drip:g}"}


def learn(pacer: BucketPacer, account: str, *, size: float, drip: float, used: float = 0.0) -> None:
    pacer.observe(account, headers(used, size, drip))


def test_an_empty_bucket_sends_at_once_until_it_is_full(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=2)
    waits = [pacer.reserve("1", 1.5) for _ in range(6)]  # 9 = size minus the 1.0 headroom
    assert waits == [0.0] * 6 and fake.sleeps == []
    assert pacer.reserve("1", 1.5) == pytest.approx(0.75)  # 1.5 over: drained at 2/s
    assert fake.sleeps == [pytest.approx(0.75)]


def test_a_batch_takes_the_theoretical_minimum(pacer: BucketPacer, fake: FakeTime) -> None:
    """(n x cost - usable bucket) / drip: the first bucketful at once, then exactly at the drip rate."""
    learn(pacer, "1", size=90, drip=1)
    started = fake.now
    for _ in range(300):
        pacer.reserve("1", 1.5)
    assert fake.now - started == pytest.approx((300 * 1.5 - 89) / 1)  # 361 s
    steady = fake.sleeps[1:]
    assert steady and all(s == pytest.approx(1.5) for s in steady)


def test_the_bucket_drains_while_idle(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=2)
    for _ in range(6):
        pacer.reserve("1", 1.5)
    fake.now += 4.5  # 9 drained
    assert [pacer.reserve("1", 1.5) for _ in range(6)] == [0.0] * 6


def test_size_and_drip_come_from_the_headers(pacer: BucketPacer, fake: FakeTime) -> None:
    assert pacer.reserve("1", 1.0) == 0.0  # before any answer: Lightspeed's documented defaults
    bucket = pacer._buckets["1"]
    assert (bucket.size, bucket.drip) == (DEFAULT_SIZE, DEFAULT_DRIP)
    pacer.observe("1", headers(5, 20, 4))
    assert (bucket.size, bucket.drip, bucket.level) == (20, 4, 5)  # Lightspeed counted more than we booked
    assert pacer.reserve("1", 10) == 0.0  # 15 of 19 usable
    assert pacer.reserve("1", 10) == pytest.approx((15 + 10 - 19) / 4)


def test_an_answer_never_forgets_requests_still_in_flight(pacer: BucketPacer, fake: FakeTime) -> None:
    """Three requests booked; the first answer counts only itself: the other two stay in the model."""
    learn(pacer, "1", size=10, drip=1)
    for _ in range(3):
        pacer.reserve("1", 3.0)
    pacer.observe("1", headers(3, 10, 1))  # the answer to the first one
    assert pacer._buckets["1"].level == pytest.approx(9)
    assert pacer.reserve("1", 3.0) == pytest.approx(3.0)  # 9 + 3 - 9 usable, at 1/s


def test_a_higher_reported_level_wins(pacer: BucketPacer, fake: FakeTime) -> None:
    """Another process spends the same bucket: the answer's level raises the model."""
    learn(pacer, "1", size=10, drip=1)
    pacer.reserve("1", 1.0)
    pacer.observe("1", headers(8.5, 10, 1))
    assert pacer.reserve("1", 1.0) == pytest.approx(0.5)


def test_an_answer_to_a_request_booked_ahead_is_compared_at_the_booking(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=1)
    for _ in range(9):
        pacer.reserve("1", 1.0)
    bucket = pacer._buckets["1"]
    bucket.at, bucket.level = fake.now + 2, 9.0  # as if another thread booked a request 2 s ahead
    pacer.observe("1", headers(4, 10, 1))
    assert (bucket.at, bucket.level) == (fake.now + 2, 9.0)  # 4 now is 2 by then: the booking stands


def test_accounts_have_separate_buckets(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=1)
    learn(pacer, "2", size=10, drip=1)
    for _ in range(9):
        pacer.reserve("1", 1.0)
    assert pacer.reserve("2", 1.0) == 0.0
    assert pacer.reserve("1", 1.0) == pytest.approx(1.0)


def test_hold_honours_retry_after_then_drips(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=90, drip=1)
    pacer.hold("1", 3.0, 1.5)  # a 429: "Retry-After: 3"
    assert pacer.reserve("1", 1.5) == pytest.approx(3.0)  # the retry goes exactly when Lightspeed said
    assert pacer.reserve("1", 1.5) == pytest.approx(1.5)  # the next one at the drip rate
    pacer.hold("1", 0.0, 1.5)  # a hold never releases what is already booked
    assert pacer.reserve("1", 1.5) == pytest.approx(1.5)


def test_full_makes_the_next_request_wait_a_drip(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=2)
    pacer.full("1")
    assert pacer.reserve("1", 1.0) == pytest.approx(1.0)  # (10 + 1 - 9) / 2


def test_forget(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=1)
    learn(pacer, "2", size=10, drip=1)
    pacer.full("1")
    pacer.full("2")
    pacer.forget("1")
    assert pacer.reserve("1", 1.0) == 0.0 and pacer.reserve("2", 1.0) > 0
    pacer.forget()
    assert pacer._buckets == {}


def test_threads_are_booked_one_after_another() -> None:
    """Twenty threads at the same instant: each gets its own slot, spaced by cost / drip, none twice."""
    pacer = BucketPacer(monotonic=lambda: 50.0, sleep=lambda _s: None)
    pacer.observe("1", headers(0, 10, 2))
    barrier = threading.Barrier(20)
    waits: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        barrier.wait()
        wait = pacer.reserve("1", 1.5)
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=book) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = [0.0] * 6 + [0.75 * n for n in range(1, 15)]  # 6 fit in 9 usable, then one per 0.75 s
    assert sorted(waits) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("11/90", (11.0, 90.0)), ("1.5/10", (1.5, 10.0)), ("", None), ("11", None), ("a/b", None), ("/90", None)],
)
def test_parse_bucket(value: str, parsed: tuple[float, float] | None) -> None:
    assert parse_bucket({"x-ls-api-bucket-level": value}) == parsed


def test_answers_without_headers_change_nothing(pacer: BucketPacer, fake: FakeTime) -> None:
    learn(pacer, "1", size=10, drip=2)
    pacer.reserve("1", 5)
    before = vars(pacer._buckets["1"]).copy()
    pacer.observe("1", {"x-ls-api-bucket-level": "garbage", "x-ls-api-drip-rate": "0"})
    assert vars(pacer._buckets["1"]) == before

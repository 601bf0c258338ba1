"""Pacing slots shared by every process of a deployment, proven on SQLite and PostgreSQL alike.

``take`` hands out slots ``interval_s`` apart, by the database's clock, and says how long to wait for
the one it reserved. The intervals here are long (no test waits for a slot): a few milliseconds between two
statements can then never make two slots look like one.
"""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import pytest

from lightkeeper.store import REFRESH, Store

INTERVAL = 30.0
#: How far a wait may be from the slot arithmetic: the time between the statements of one test.
SLACK = 1.0


def near(wait: float, expected: float) -> bool:
    """``wait`` is ``expected`` seconds, less the little time the test took since that slot was set."""
    return expected - SLACK < wait <= expected + 1e-6


def test_the_first_slot_is_now(store: Store) -> None:
    assert near(store.pacing.take(REFRESH, INTERVAL), 0.0)


def test_slots_are_spaced_by_the_interval(store: Store) -> None:
    waits = [store.pacing.take(REFRESH, INTERVAL) for _ in range(4)]
    assert all(near(wait, n * INTERVAL) for n, wait in enumerate(waits)), waits


def test_pending_looks_without_taking_a_slot(store: Store) -> None:
    assert store.pacing.pending(REFRESH) == 0.0  # nothing taken yet
    store.pacing.take(REFRESH, INTERVAL)
    assert near(store.pacing.pending(REFRESH), INTERVAL)
    assert near(store.pacing.pending(REFRESH), INTERVAL)
    assert near(store.pacing.take(REFRESH, INTERVAL), INTERVAL)


def test_a_slot_that_went_by_unused_is_not_owed(store: Store) -> None:
    store.pacing.take(REFRESH, 0.05)
    time.sleep(0.1)
    assert store.pacing.pending(REFRESH) == 0.0
    assert near(store.pacing.take(REFRESH, 0.05), 0.0)  # idle time does not pile up into a burst


def test_a_hold_delays_the_next_slot(store: Store) -> None:
    store.pacing.hold(REFRESH, 60)
    assert near(store.pacing.pending(REFRESH), 60)
    assert near(store.pacing.take(REFRESH, INTERVAL), 60)
    assert near(store.pacing.take(REFRESH, INTERVAL), 60 + INTERVAL)


def test_a_hold_never_brings_the_next_slot_forward(store: Store) -> None:
    for _ in range(3):
        store.pacing.take(REFRESH, INTERVAL)
    store.pacing.hold(REFRESH, 5)
    assert near(store.pacing.pending(REFRESH), 3 * INTERVAL)


def test_limiters_are_independent(store: Store) -> None:
    store.pacing.take(REFRESH, INTERVAL)
    store.pacing.hold("other", 60)
    assert near(store.pacing.take("third", INTERVAL), 0.0)
    assert near(store.pacing.pending(REFRESH), INTERVAL)
    assert near(store.pacing.pending("other"), 60)


def test_slots_are_shared_by_every_process(database_url: str) -> None:
    first, second = Store.from_url(database_url), Store.from_url(database_url)  # two replicas
    try:
        assert near(first.pacing.take(REFRESH, INTERVAL), 0.0)
        assert near(second.pacing.take(REFRESH, INTERVAL), INTERVAL)
        assert near(first.pacing.pending(REFRESH), 2 * INTERVAL)
        second.pacing.hold(REFRESH, 100)  # a Retry-After seen by one replica holds the other too
        assert near(first.pacing.take(REFRESH, INTERVAL), 100)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("limiter", ["new", "existing"])
def test_concurrent_takers_get_distinct_slots_an_interval_apart(database_url: str, limiter: str) -> None:
    workers = 8
    waits: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    replicas = [Store.from_url(database_url) for _ in range(workers)]  # like other machines
    if limiter == "existing":
        replicas[0].pacing.hold(REFRESH, 0)  # the row is there: every taker goes straight to it
    barrier = threading.Barrier(workers)

    def take(replica: Store) -> None:
        try:
            barrier.wait()
            wait = replica.pacing.take(REFRESH, INTERVAL)
            with lock:
                waits.append(wait)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=take, args=(replica,)) for replica in replicas]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for replica in replicas:
            replica.close()
    elapsed = time.monotonic() - started

    assert not failures, failures
    assert elapsed < INTERVAL / 4
    waits.sort()
    assert len(waits) == workers
    assert waits[0] <= elapsed
    # Each wait is its slot less the database's now of its statement, and every statement ran within
    # ``elapsed``: slots exactly INTERVAL apart give gaps within ``elapsed`` of it; a shared slot gives ~0.
    gaps = [later - earlier for earlier, later in pairwise(waits)]
    assert all(abs(gap - INTERVAL) <= elapsed for gap in gaps), (gaps, elapsed)

"""The dashboard's shared state (``store/dashboard.py``) on SQLite and PostgreSQL: what one process writes (a
sign-out, a wrong key) another process on the same database reads, counts are exact when processes write at once,
and neither table grows without bound (expired rows are pruned as new ones come, the oldest beyond the bound go).

Two ``Store`` objects on one database stand for two ``serve`` replicas behind a load balancer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from lightkeeper.store import DashboardRepo, Store
from lightkeeper.store.dashboard import ADDRESS_MAX, CLOCK_SKEW, PRUNE_BATCH
from lightkeeper.store.schema import dashboard_signouts, login_failures
from lightkeeper.web.dashboard_auth import FORGET_AFTER, MAX_FAILURES, block_seconds
from lightkeeper.web.dashboard_state import DashboardState, MemoryDashboardState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SESSION_END = NOW + timedelta(hours=12)


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database: two replicas."""
    first, second = Store.from_url(database_url), Store.from_url(database_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def session_hash(n: int) -> str:
    return hashlib.sha256(f"session-{n}".encode()).hexdigest()


def fail(repo: DashboardState, address: str, now: datetime = NOW) -> int | None:
    return repo.login_failed(address, now=now, forget_before=now - FORGET_AFTER, block_s=block_seconds)


def rows(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        signouts = conn.execute(select(func.count()).select_from(dashboard_signouts)).scalar_one()
        addresses = conn.execute(select(func.count()).select_from(login_failures)).scalar_one()
    return int(signouts), int(addresses)


# -- sign-outs --------------------------------------------------------------------------------------------


def test_a_sign_out_on_one_replica_is_seen_by_the_other_and_only_its_hash_is_kept(
    replicas: tuple[Store, Store],
) -> None:
    one, two = replicas
    assert not two.dashboard.session_ended(session_hash(1))

    one.dashboard.end_session(session_hash(1), expires_at=SESSION_END, now=NOW)
    one.dashboard.end_session(session_hash(1), expires_at=SESSION_END, now=NOW)  # twice (two tabs): no error

    assert two.dashboard.session_ended(session_hash(1)) and not two.dashboard.session_ended(session_hash(2))
    with one.engine.connect() as conn:
        stored = conn.execute(select(dashboard_signouts)).all()
    assert [(row.session_hash, row.expires_at) for row in stored] == [(session_hash(1), SESSION_END)]


def test_sign_outs_are_pruned_once_their_session_has_ended_and_a_little_more(store: Store) -> None:
    store.dashboard.end_session(session_hash(1), expires_at=NOW, now=NOW - timedelta(hours=12))

    store.dashboard.end_session(session_hash(2), expires_at=SESSION_END, now=NOW + CLOCK_SKEW / 2)
    assert store.dashboard.session_ended(session_hash(1))  # a replica whose clock is behind still refuses it

    store.dashboard.end_session(session_hash(3), expires_at=SESSION_END, now=NOW + CLOCK_SKEW * 2)
    assert not store.dashboard.session_ended(session_hash(1))
    assert store.dashboard.session_ended(session_hash(2)) and store.dashboard.session_ended(session_hash(3))


def test_sign_outs_beyond_the_bound_forget_the_ones_that_end_first(store: Store) -> None:
    bounded = DashboardRepo(store.engine, max_tracked=3)
    for n in range(6):
        bounded.end_session(session_hash(n), expires_at=SESSION_END + timedelta(minutes=n), now=NOW)

    assert rows(store)[0] == 3
    assert [bounded.session_ended(session_hash(n)) for n in range(6)] == [False] * 3 + [True] * 3


# -- wrong keys per address -----------------------------------------------------------------------------------


def test_failures_on_two_replicas_count_together_and_block_from_the_5th(replicas: tuple[Store, Store]) -> None:
    one, two = replicas
    waits = [fail((one, two)[n % 2].dashboard, "203.0.113.7") for n in range(MAX_FAILURES + 2)]

    assert waits == [None] * (MAX_FAILURES - 1) + [1, 2, 4]
    assert one.dashboard.login_blocked_until("203.0.113.7") == NOW + timedelta(seconds=4)
    assert two.dashboard.login_blocked_until("198.51.100.1") is None  # another address is not blocked

    two.dashboard.login_succeeded("203.0.113.7")  # the right key on the other replica: the count starts again
    assert one.dashboard.login_blocked_until("203.0.113.7") is None
    assert fail(one.dashboard, "203.0.113.7") is None


def test_an_address_whose_last_failure_is_older_than_forget_after_starts_again(store: Store) -> None:
    for _ in range(MAX_FAILURES):
        fail(store.dashboard, "203.0.113.7")
    assert store.dashboard.login_blocked_until("203.0.113.7") is not None

    later = NOW + FORGET_AFTER + timedelta(seconds=1)
    assert fail(store.dashboard, "203.0.113.7", later) is None  # the first failure again: not blocked
    assert store.dashboard.login_blocked_until("203.0.113.7") is None
    assert [fail(store.dashboard, "203.0.113.7", later) for _ in range(MAX_FAILURES - 1)][-1] == 1


def test_failures_from_many_threads_on_two_replicas_lose_no_count(replicas: tuple[Store, Store]) -> None:
    one, two = replicas
    count = 40
    with ThreadPoolExecutor(max_workers=8) as pool:
        waits = list(pool.map(lambda n: fail((one, two)[n % 2].dashboard, "203.0.113.7"), range(count)))

    assert sorted(wait or 0 for wait in waits) == sorted(block_seconds(n) or 0 for n in range(1, count + 1))
    with one.engine.connect() as conn:
        assert conn.execute(select(login_failures.c.failures)).scalar_one() == count


def test_a_flood_of_addresses_keeps_the_newest_and_forgets_old_ones(store: Store) -> None:
    bounded = DashboardRepo(store.engine, max_tracked=5)
    for n in range(12):
        fail(bounded, f"198.51.100.{n}", NOW + timedelta(seconds=n))

    assert rows(store)[1] == 5
    assert [bounded.login_blocked_until(f"198.51.100.{n}") for n in range(12)] == [None] * 12
    with store.engine.connect() as conn:
        kept = set(conn.execute(select(login_failures.c.address)).scalars())
    assert kept == {f"198.51.100.{n}" for n in range(7, 12)}

    much_later = NOW + FORGET_AFTER + timedelta(minutes=1)
    fail(bounded, "192.0.2.1", much_later)  # every other address is forgotten: pruned as the new one comes
    assert rows(store)[1] == 1


def test_pruning_is_done_in_bounded_batches(store: Store) -> None:
    for n in range(PRUNE_BATCH + 20):
        fail(store.dashboard, f"10.0.{n // 250}.{n % 250}", NOW)
    much_later = NOW + FORGET_AFTER + timedelta(minutes=1)

    fail(store.dashboard, "192.0.2.1", much_later)
    assert rows(store)[1] == 21  # 100 forgotten ones pruned by this write, the rest by the next ones
    fail(store.dashboard, "192.0.2.2", much_later)
    assert rows(store)[1] == 2


def test_an_address_longer_than_any_ip_is_cut_and_still_counted(store: Store) -> None:
    address = "x" * 5000  # only from a client trusted to name itself; PostgreSQL's index refuses such a key
    for _ in range(MAX_FAILURES):
        fail(store.dashboard, address)

    assert store.dashboard.login_blocked_until(address) == NOW + timedelta(seconds=1)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.length(login_failures.c.address))).scalar_one() == ADDRESS_MAX


# -- the in-memory state (an auth built by hand) answers alike ----------------------------------------------------


def script(state: DashboardState) -> list[object]:
    """One scripted story of sign-outs and wrong keys; what the state answered at each step."""
    seen: list[object] = []
    for n in range(MAX_FAILURES + 3):
        seen.append(fail(state, "203.0.113.7", NOW + timedelta(seconds=n)))
    seen.append(state.login_blocked_until("203.0.113.7"))
    seen.append(fail(state, "203.0.113.7", NOW + FORGET_AFTER + timedelta(minutes=1)))  # forgotten: from one
    state.login_succeeded("203.0.113.7")
    seen.append(state.login_blocked_until("203.0.113.7"))
    for n in range(4):
        fail(state, f"198.51.100.{n}", NOW + timedelta(seconds=n))
    seen.append([state.login_blocked_until(f"198.51.100.{n}") for n in range(4)])
    state.end_session(session_hash(1), expires_at=SESSION_END, now=NOW)
    seen.append([state.session_ended(session_hash(n)) for n in (1, 2)])
    return seen


def test_the_memory_state_answers_as_the_database_does(store: Store) -> None:
    assert script(MemoryDashboardState(max_tracked=3)) == script(DashboardRepo(store.engine, max_tracked=3))

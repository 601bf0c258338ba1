"""fresh_token: single-flight on-demand refresh, cooldown, expiry (invariants 1-3), on both databases."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from lightkeeper import ConnectionExpired, ConnectionNotFound, Keeper, ProviderUnavailable, Status
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.conftest import FakeClock
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.current = clock.current.now(clock.current.tzinfo)  # the simulator's tokens live on the wall clock
    return clock


@pytest.fixture
def keeper(make_keeper: KeeperFactory, clock: FakeClock) -> Keeper:
    return make_keeper(clock=clock)


@pytest.fixture
def record(keeper: Keeper) -> ConnectionRecord:
    return connect(keeper, "user-1")


def expire_soon(clock: FakeClock) -> None:
    """Move within the 5-minute leeway of the 1-hour access token."""
    clock.advance(minutes=56)


def test_a_valid_token_is_returned_without_calling_lightspeed(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    grant = keeper.fresh_token(record.id)
    assert grant.access_token == keeper.vault.access_token(record)
    assert grant.account_id == record.account_id and grant.expires_at == record.token_expires_at
    assert sim.stats()["refreshes"] == 0
    assert grant.access_token not in repr(grant)


def test_a_token_inside_the_leeway_is_refreshed_once_and_works(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    expire_soon(clock)
    grant = keeper.fresh_token(record.id)
    assert sim.stats()["refreshes"] == 1
    assert grant.expires_at - clock() > timedelta(minutes=5)
    assert keeper.api.account(grant.access_token).account_id == record.account_id
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and keeper.vault.access_token(saved) == grant.access_token  # committed
    assert keeper.fresh_token(record.id).access_token == grant.access_token  # and now valid: no 2nd refresh
    assert sim.stats()["refreshes"] == 1


def test_many_threads_and_keepers_refresh_once(
    make_keeper: KeeperFactory, keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    """Two keepers (as two processes would), 20 threads each, one expired token: one refresh."""
    sim.configure(token_latency_ms=200)
    other = make_keeper(clock=clock)
    expire_soon(clock)
    barrier = threading.Barrier(40)

    def call(k: Keeper) -> str:
        barrier.wait()
        return k.fresh_token(record.id).access_token

    with ThreadPoolExecutor(40) as pool:
        tokens = list(pool.map(call, [keeper] * 20 + [other] * 20))

    assert sim.stats()["refreshes"] == 1
    assert len(set(tokens)) == 1
    assert keeper.api.account(tokens[0]).account_id == record.account_id


def test_invalid_grant_marks_expired_and_raises_connection_expired(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    sim.revoke_account(record.account_id)
    expire_soon(clock)
    with pytest.raises(ConnectionExpired, match="reconnect"):
        keeper.fresh_token(record.id)
    assert keeper.store.connections.get(record.id).status is Status.EXPIRED  # type: ignore[union-attr]
    with pytest.raises(ConnectionExpired):
        keeper.fresh_token(record.id)
    assert sim.stats()["invalid_grant"] == 1  # the second caller did not ask Lightspeed again


def test_transient_failure_starts_a_cooldown_that_answers_at_once(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    sim.inject_fault("token", "status", status=503, count=10)
    expire_soon(clock)
    with pytest.raises(ProviderUnavailable, match="503"):
        keeper.fresh_token(record.id)
    before = sim.stats()["token_requests"]
    for _ in range(5):
        with pytest.raises(ProviderUnavailable, match="cooling down"):
            keeper.fresh_token(record.id)
    assert sim.stats()["token_requests"] == before  # no call to Lightspeed during the cooldown

    sim.clear_faults()
    clock.advance(minutes=1, seconds=1)  # the first cooldown is one minute
    assert keeper.fresh_token(record.id).access_token
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and saved.status is Status.CONNECTED and saved.consecutive_failures == 0


def test_cooldown_grows_with_each_failure(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    sim.inject_fault("token", "status", status=502, count=10)
    expire_soon(clock)
    waits = []
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            keeper.fresh_token(record.id)
        saved = keeper.store.connections.get(record.id)
        assert saved is not None and saved.next_attempt_at is not None
        waits.append(saved.next_attempt_at - clock())
        clock.current = saved.next_attempt_at
    assert waits == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]


def test_forced_refresh_after_a_401_happens_once_for_concurrent_callers(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.configure(token_latency_ms=100)
    with ThreadPoolExecutor(10) as pool:
        rejected = keeper.vault.access_token(record)
        tokens = set(
            pool.map(lambda _: keeper.tokens.fresh_token(record.id, rejected=rejected).access_token, range(10))
        )
    assert sim.stats()["refreshes"] == 1 and len(tokens) == 1


def test_a_waiter_uses_the_pair_another_process_commits(
    make_keeper: KeeperFactory, keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, clock: FakeClock
) -> None:
    other = make_keeper(clock=clock)
    expire_soon(clock)
    held = other.store.connections.acquire(record.id, owner=other.owner, lease=timedelta(minutes=1))
    assert held is not None

    def finish_elsewhere() -> None:
        other.refresher.refresh(held)

    timer = threading.Timer(0.3, finish_elsewhere)
    timer.start()
    grant = keeper.fresh_token(record.id)
    timer.join()
    assert sim.stats()["refreshes"] == 1
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and grant.access_token == keeper.vault.access_token(saved)


def test_unknown_and_disconnected_connections(keeper: Keeper, record: ConnectionRecord) -> None:
    with pytest.raises(ConnectionNotFound):
        keeper.fresh_token(999_999)
    lease = keeper.store.connections.acquire(record.id, owner=keeper.owner, lease=timedelta(minutes=1))
    assert lease is not None
    keeper.store.connections.disconnect(record.id, lease_token=lease.token, now=keeper.clock())
    with pytest.raises(ConnectionExpired, match="disconnected"):
        keeper.fresh_token(record.id)

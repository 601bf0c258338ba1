"""The on-demand client over real HTTP against the simulator, on both databases.

A 401 costs exactly one (single-flight) refresh and one retry; a second 401 is ``AccessDenied``; a 429 is
waited out; requests are paced per account so a batch meets no 429 after the first bucket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from lightkeeper import ConnectionNotFound, Keeper
from lightkeeper.errors import AccessDenied, DecryptError, ProviderUnavailable, RateLimited
from lightkeeper.lightspeed.api import PUT_ONE_RELATION_COST
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.helpers import connect

from .conftest import KeeperFactory, set_row

ITEMS = (1, 2, 3, 4, 5)
SHOPS = (1, 2)


@pytest.fixture
def record(keeper: Keeper) -> ConnectionRecord:
    return connect(keeper, "user-1")


def qoh(sim: SimulatorControl, record: ConnectionRecord, item_id: int, shop_id: int) -> int:
    return int(sim.item(record.account_id, item_id)["qoh_by_shop"][str(shop_id)])


def minimum_seconds(puts: int, bucket: float, drip: float) -> float:
    """The leaky bucket's floor for ``puts`` one-ItemShop PUTs: what does not fit in the bucket must drip."""
    return max(0.0, puts * PUT_ONE_RELATION_COST - bucket) / drip


def put_many(keeper: Keeper, record: ConnectionRecord, count: int, *, start: int = 0) -> None:
    with keeper.lightspeed(record.id) as ls:
        for number in range(start, start + count):
            ls.set_stock(item_id=ITEMS[number % 5], shop_id=SHOPS[number // 5 % 2], qoh=number)


# -- 401 ---------------------------------------------------------------------------------------------------


def test_expired_access_token_costs_one_refresh_then_succeeds(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    before = keeper.vault.access_token(record)
    assert sim.expire_access_tokens(record.account_id)["expired"] == 1  # our stored token now gets 401

    with keeper.lightspeed(record.id) as ls:
        item = ls.set_stock(item_id=3, shop_id=2, qoh=17)
        assert ls.item(3)["itemID"] == "3"  # the new token works without another refresh

    assert item["itemID"] == "3"
    assert qoh(sim, record, 3, 2) == 17
    stats = sim.stats()
    assert stats["refreshes"] == 1
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and keeper.vault.access_token(saved) != before  # committed, and used from the row


def test_many_threads_meeting_the_same_401_share_one_refresh(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.configure(token_latency_ms=200)
    sim.expire_access_tokens(record.account_id)
    barrier = threading.Barrier(12)

    def read(item_id: int) -> str:
        with keeper.lightspeed(record.id) as ls:
            barrier.wait()
            return str(ls.item(item_id)["itemID"])

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(read, [ITEMS[n % 5] for n in range(12)]))

    assert sorted(ids) == sorted(str(ITEMS[n % 5]) for n in range(12))
    assert sim.stats()["refreshes"] == 1


def test_a_second_401_is_access_denied_after_one_refresh(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    before = qoh(sim, record, 1, 1)
    api_before = sim.stats()["api_requests"]
    sim.inject_fault("api", "status", status=401, count=2)  # Lightspeed refuses the old and the new token

    with keeper.lightspeed(record.id) as ls, pytest.raises(AccessDenied, match="again after a refresh") as caught:
        ls.set_stock(item_id=1, shop_id=1, qoh=before + 5)

    assert "access_denied" in str(caught.value.__cause__)  # Lightspeed's own reason is kept as the cause
    stats = sim.stats()
    assert stats["refreshes"] == 1  # one refresh, never a loop
    assert stats["api_requests"] - api_before == 2  # the request and its single retry
    assert qoh(sim, record, 1, 1) == before
    with keeper.lightspeed(record.id) as ls:  # the refreshed token is good once Lightspeed accepts it again
        ls.set_stock(item_id=1, shop_id=1, qoh=before + 5)
    assert qoh(sim, record, 1, 1) == before + 5
    assert sim.stats()["refreshes"] == 1


def test_current_answers_from_the_row_and_never_refreshes(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    grant = keeper.tokens.current(record.id)
    assert grant is not None and grant.access_token == keeper.fresh_token(record.id).access_token
    set_row(keeper, record.id, token_expires_at=keeper.clock() + timedelta(minutes=4))  # inside the leeway
    assert keeper.tokens.current(record.id) is None
    assert sim.stats()["refreshes"] == 0
    with pytest.raises(ConnectionNotFound):
        keeper.tokens.current(999)


def test_a_token_copied_into_another_row_is_refused_even_when_the_fast_path_knows_it(
    keeper: Keeper, record: ConnectionRecord
) -> None:
    """fresh_token keeps decrypted tokens by (row, ciphertext): the row binding of the ciphertext still holds."""
    other = connect(keeper, "user-2")
    assert keeper.fresh_token(record.id).access_token == keeper.vault.access_token(record)  # now known
    set_row(keeper, other.id, access_token=record.access_token)
    with pytest.raises(DecryptError):
        keeper.fresh_token(other.id)


def test_waiting_for_a_refresh_held_elsewhere_is_bounded_for_every_caller(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    """Another process holds the lease (and is stuck): each caller gives up after ``wait``, not after the others."""
    now = keeper.clock()
    set_row(
        keeper,
        record.id,
        token_expires_at=now - timedelta(minutes=1),
        acquired_by="elsewhere:1:stuck",
        acquired_until=now + timedelta(minutes=5),
    )
    keeper.tokens.wait = timedelta(seconds=0.3)

    def call(_n: int) -> float:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="did not finish in time"):
            keeper.fresh_token(record.id)
        return time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        waits = list(pool.map(call, range(4)))

    assert sim.stats()["refreshes"] == 0
    assert max(waits) < 0.3 + 0.5, waits  # today: about 0.3, 0.6, 0.9, 1.2 s


# -- 429 ---------------------------------------------------------------------------------------------------


def test_a_429_is_waited_out_for_retry_after_then_retried(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    api_before = sim.stats()["api_requests"]
    sim.inject_fault("api", "rate_limit", retry_after=1)

    started = time.monotonic()
    with keeper.lightspeed(record.id) as ls:
        ls.set_stock(item_id=2, shop_id=1, qoh=11)
    elapsed = time.monotonic() - started

    assert qoh(sim, record, 2, 1) == 11
    stats = sim.stats()
    assert stats["faults_served"] == 1 and stats["api_requests"] - api_before == 2  # the 429, then the retry
    assert 1.0 <= elapsed < 2.5, elapsed
    assert stats["refreshes"] == 0


def test_a_retry_after_too_long_to_wait_is_raised_at_once(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.inject_fault("api", "rate_limit", retry_after=3600)
    started = time.monotonic()
    with keeper.lightspeed(record.id) as ls, pytest.raises(RateLimited, match="retry after 3600") as caught:
        ls.set_stock(item_id=2, shop_id=1, qoh=11)
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 3600


# -- pacing ------------------------------------------------------------------------------------------------


def test_a_batch_is_paced_to_the_bucket_and_meets_no_429(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.configure(bucket_size=10, drip_rate=20, burst_limit=100)  # the bucket, not the burst window, binds
    floor = minimum_seconds(60, 10, 20)  # 4 s

    started = time.monotonic()
    put_many(keeper, record, 60)
    elapsed = time.monotonic() - started

    assert sim.stats()["rate_limited"] == 0
    assert floor <= elapsed <= floor * 1.1 + 0.5, (elapsed, floor)
    assert qoh(sim, record, 5, 2) == 59  # the last update of item 5 / shop 2 (number 59) landed


def test_pacing_is_shared_by_every_client_of_an_account_on_the_database(
    make_keeper: KeeperFactory, keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    """Two Keepers (two clients, as two processes would be) and two threads on one account: they book the one
    bucket row of the account in the database, so no 429."""
    other = make_keeper()
    assert keeper.api.pacer is not other.api.pacer
    assert keeper.api.pacer.name(record.account_id) == other.api.pacer.name(record.account_id)
    sim.configure(bucket_size=10, drip_rate=20, burst_limit=100)  # the bucket, not the burst window, binds
    barrier = threading.Barrier(2)

    def hammer(args: tuple[Keeper, int]) -> None:
        barrier.wait()
        put_many(args[0], record, 20, start=args[1])

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(hammer, [(keeper, 0), (other, 20)]))
    elapsed = time.monotonic() - started

    assert sim.stats()["rate_limited"] == 0
    assert elapsed >= minimum_seconds(40, 10, 20)  # 2.5 s: the two threads together never beat the drip


def test_pacing_is_independent_between_accounts(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    """One account's full bucket does not slow another account down."""
    second = connect(keeper, "user-2")
    assert second.account_id != record.account_id
    sim.configure(bucket_size=10, drip_rate=20, burst_limit=100)  # the bucket, not the burst window, binds

    def run(which: ConnectionRecord) -> float:
        started = time.monotonic()
        put_many(keeper, which, 30)
        return time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        times = list(pool.map(run, [record, second]))
    elapsed = time.monotonic() - started

    assert sim.stats()["rate_limited"] == 0
    each = minimum_seconds(30, 10, 20)  # 1.75 s for each account on its own
    assert all(t >= each for t in times), times
    assert elapsed < minimum_seconds(60, 10, 20), elapsed  # 4 s if the accounts shared a bucket


# -- async -------------------------------------------------------------------------------------------------


def test_the_async_api(keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl) -> None:
    async def main() -> tuple[Any, ...]:
        grant = await keeper.afresh_token(record.id)
        async with keeper.lightspeed(record.id) as ls:
            account = await ls.account()
            updated = await asyncio.gather(*(ls.set_stock(item_id=i, shop_id=1, qoh=i * 10) for i in ITEMS))
            by_item_shop = await ls.set_stock(item_id=1, item_shop_id=int(_item_shop_id(await ls.item(1), 2)), qoh=4)
        return grant, account, updated, by_item_shop

    grant, account, updated, by_item_shop = asyncio.run(main())

    assert grant.access_token == keeper.vault.access_token(record) and grant.account_id == record.account_id
    assert account.account_id == record.account_id
    assert [item["itemID"] for item in updated] == [str(i) for i in ITEMS]
    assert {i: qoh(sim, record, i, 1) for i in ITEMS} == {i: i * 10 for i in ITEMS}
    assert by_item_shop["itemID"] == "1" and qoh(sim, record, 1, 2) == 4
    assert sim.stats()["refreshes"] == 0


def test_async_callers_meeting_a_401_share_one_refresh(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.configure(token_latency_ms=200)
    sim.expire_access_tokens(record.account_id)

    async def main() -> list[str]:
        async with keeper.lightspeed(record.id) as ls:
            items = await asyncio.gather(*(ls.item(ITEMS[n % 5]) for n in range(10)))
        tokens = await asyncio.gather(*(keeper.afresh_token(record.id) for _ in range(10)))
        return [item["itemID"] for item in items] + [grant.access_token for grant in tokens]

    results = asyncio.run(main())

    assert len(set(results[10:])) == 1
    assert sim.stats()["refreshes"] == 1


def _item_shop_id(item: dict[str, Any], shop_id: int) -> str:
    rows = item["ItemShops"]["ItemShop"]
    return next(str(row["itemShopID"]) for row in rows if str(row["shopID"]) == str(shop_id))

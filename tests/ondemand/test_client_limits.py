"""The Python client's verbs meet the account's limits as the proxy does, on both providers and both databases.

- A booking that would wait longer than the cap (``PROXY_MAX_WAIT_S``) is ``RateLimited`` at once, with a
  ``retry_after`` of when it would fit, and nothing is sent: sync, async and ``paginate`` alike.
- A Lightspeed 429 is waited out and retried once within the cap; a second 429, or a ``Retry-After`` past the
  cap, is raised as it came, with Lightspeed's ``Retry-After`` (and the account held for it, every process).
- update-stock's rows (``set_stock``) wait longer than a request path: ``api.STOCK_MAX_WAIT_S``.

Against the real simulator over HTTP: R-Series at its root, X-Series stores under ``/x``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lightkeeper import Keeper
from lightkeeper.errors import RateLimited
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory
from tests.xseries.conftest import XKeeperFactory, make_x_keeper  # noqa: F401 (the fixture, reused by name)
from tests.xseries.support import seed_x_connections

ITEM = "Item/1.json"
RETAILER = "api/2.0/retailer"
#: The cap of these tests' R-Series keepers: short, yet far from the waits they provoke.
CAP_S = 3
#: How long a call refused at once may take on a busy machine: well under ``CAP_S``.
AT_ONCE_S = 1.5


@pytest.fixture
def capped(make_keeper: KeeperFactory) -> Keeper:
    return make_keeper(PROXY_MAX_WAIT_S=str(CAP_S))


@pytest.fixture
def record(capped: Keeper) -> ConnectionRecord:
    return connect(capped, "user-1")


def sent(sim: SimulatorControl) -> int:
    return len(sim.requests())


# -- R-Series ------------------------------------------------------------------------------------------------


def test_a_booking_past_the_cap_is_rate_limited_at_once_and_sends_nothing(
    capped: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    """A bucket of 5 dripping 1 every 20 s: once it is full, a GET would wait 20 s, past the 3 s cap."""
    sim.configure(bucket_size=5, drip_rate=0.05, burst_limit=100)
    with capped.lightspeed(record.id) as ls:
        for _ in range(8):  # 4 usable units (the connect's lookup holds one), then the bucket is full
            before, started = sent(sim), time.monotonic()
            try:
                ls.get(ITEM)
            except RateLimited as exc:
                refused = exc
                break
        else:
            pytest.fail("the bucket never refused a booking")
        assert time.monotonic() - started < AT_ONCE_S
        assert sent(sim) == before  # nothing was sent
        assert refused.retry_after is not None and 10 <= refused.retry_after <= 21  # when a unit has dripped
        assert f"cap of {CAP_S} s" in str(refused) and "nothing was sent" in str(refused)  # PROXY_MAX_WAIT_S
        with pytest.raises(RateLimited):
            next(ls.paginate("Item.json", {"limit": "100"}))

    async def main() -> None:
        async with capped.lightspeed(record.id) as als:
            with pytest.raises(RateLimited):
                await als.put(ITEM, json={"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 2}}})

    asyncio.run(main())
    assert sent(sim) == before
    assert sim.stats()["rate_limited"] == 0  # Lightspeed itself never had to refuse anything


def test_a_single_429_is_waited_out_and_retried_once(
    capped: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.clear_requests()
    sim.inject_fault("api", "rate_limit", retry_after=1)
    started = time.monotonic()
    with capped.lightspeed(record.id) as ls:
        assert ls.get(ITEM)["Item"]["itemID"] == "1"
    assert time.monotonic() - started >= 0.95  # Retry-After: 1 was honoured before the retry
    assert sent(sim) == 2


def test_a_second_429_is_raised_with_lightspeeds_retry_after(
    capped: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.clear_requests()
    sim.inject_fault("api", "rate_limit", count=2, retry_after=1)
    with capped.lightspeed(record.id) as ls, pytest.raises(RateLimited, match="HTTP 429") as caught:
        ls.put(ITEM, json={"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 9}}})
    assert caught.value.retry_after == 1.0
    assert sent(sim) == 2  # the 429, its one retry's 429, and no third send
    assert sim.item(record.account_id, 1)["qoh_by_shop"]["1"] != 9


def test_a_retry_after_past_the_cap_is_raised_at_once_and_holds_the_account(
    capped: Keeper, record: ConnectionRecord, sim: SimulatorControl, make_keeper: KeeperFactory
) -> None:
    sim.clear_requests()
    sim.inject_fault("api", "rate_limit", retry_after=CAP_S + 30)
    started = time.monotonic()
    with capped.lightspeed(record.id) as ls, pytest.raises(RateLimited, match="HTTP 429") as caught:
        ls.get(ITEM)
    assert time.monotonic() - started < AT_ONCE_S
    assert caught.value.retry_after == CAP_S + 30
    other = make_keeper(PROXY_MAX_WAIT_S=str(CAP_S))  # as another process: the hold is in the shared row
    with other.lightspeed(record.id) as ls, pytest.raises(RateLimited, match="nothing was sent") as held:
        ls.get(ITEM)
    assert held.value.retry_after is not None and CAP_S + 20 <= held.value.retry_after <= CAP_S + 31
    assert sent(sim) == 1


def test_a_stock_row_waits_longer_than_a_verb(
    make_keeper: KeeperFactory, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    """update-stock is a batch, one row at a time: its rows may wait out what a request path is refused."""
    keeper, retry_after = make_keeper(PROXY_MAX_WAIT_S="1"), 2
    sim.inject_fault("api", "rate_limit", retry_after=retry_after)
    with keeper.lightspeed(record.id) as ls:
        with pytest.raises(RateLimited):
            ls.put(ITEM, json={"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 5}}})
        sim.inject_fault("api", "rate_limit", retry_after=retry_after)
        started = time.monotonic()
        ls.set_stock(item_id=1, shop_id=1, qoh=6)  # waits the first hold out, then the second's, then sends
    assert time.monotonic() - started >= 2 * retry_after - 0.5
    assert sim.item(record.account_id, 1)["qoh_by_shop"]["1"] == 6


# -- X-Series ------------------------------------------------------------------------------------------------


@pytest.fixture
def x_store(make_x_keeper: XKeeperFactory, sim: SimulatorControl) -> tuple[Keeper, int]:  # noqa: F811
    keeper = make_x_keeper()
    [connection_id] = seed_x_connections(keeper, sim, 1)
    sim.clear_requests()
    return keeper, connection_id


def test_x_a_booking_past_the_cap_is_rate_limited_at_once_and_sends_nothing(
    x_store: tuple[Keeper, int], sim: SimulatorControl
) -> None:
    """A window of 50 requests per 300 s: once it is spent, the next would wait minutes, past the cap."""
    keeper, connection_id = x_store
    sim.configure(x_window_s=300, x_registers=0)
    with keeper.lightspeed(connection_id) as ls:
        for _ in range(60):
            before, started = sent(sim), time.monotonic()
            try:
                ls.get(RETAILER)
            except RateLimited as exc:
                refused = exc
                break
        else:
            pytest.fail("the window never refused a booking")
    assert time.monotonic() - started < AT_ONCE_S
    assert sent(sim) == before <= 50  # the window, and nothing after it
    assert refused.retry_after is not None and 250 <= refused.retry_after <= 302  # until the window ends
    assert sim.x_stats()["x_rate_limited"] == 0  # X-Series itself never had to refuse anything


def test_x_a_single_429_is_waited_out_and_retried_once(x_store: tuple[Keeper, int], sim: SimulatorControl) -> None:
    keeper, connection_id = x_store
    sim.inject_fault("x_api", "rate_limit", retry_after=1)
    started = time.monotonic()
    with keeper.lightspeed(connection_id) as ls:
        assert ls.get(RETAILER)["data"]["domain_prefix"]
    assert time.monotonic() - started >= 0.5  # the HTTP date (a whole second) was honoured before the retry
    assert sent(sim) == 2


def test_x_a_second_429_is_raised_with_the_stores_retry_after(
    x_store: tuple[Keeper, int], sim: SimulatorControl
) -> None:
    """X-Series' Retry-After is an HTTP date (the window's end): raised in seconds, as it came."""
    keeper, connection_id = x_store
    sim.inject_fault("x_api", "rate_limit", count=2, retry_after=2)
    with keeper.lightspeed(connection_id) as ls, pytest.raises(RateLimited, match="HTTP 429") as caught:
        ls.get(RETAILER)
    assert sent(sim) == 2  # the 429, its one retry's 429, and no third send
    # 2 s from the 429's own Date header: both whole seconds, the date rounded up, the server's Date a second stale.
    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 5

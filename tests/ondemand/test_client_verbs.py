"""The Python client's own verbs (``get``/``post``/``put``/``delete``/``paginate``), sync and async, over real HTTP
against the simulator on both databases: paths relative to the account, one refresh on a 401, every record of
a paginated collection once (including Lightspeed's one-record page), and the bucket shared with the proxy."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lightkeeper import Keeper
from lightkeeper.errors import InvalidPath
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.helpers import connect


@pytest.fixture
def record(keeper: Keeper) -> ConnectionRecord:
    return connect(keeper, "user-1")


def test_get_put_post_delete_under_the_account(keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl) -> None:
    sim.clear_requests()  # the connect flow's own account lookup
    with keeper.lightspeed(record.id) as ls:
        assert ls.get("")["Account"]["accountID"] == record.account_id
        assert ls.get("Item/1.json")["Item"]["itemID"] == "1"
        ls.put("Item/1.json", json={"ItemShops": {"ItemShop": {"shopID": 2, "qoh": 13}}})
        created = ls.post("Item.json", json={"description": "Blue mug"})["Item"]
        archived = ls.delete(f"Item/{created['itemID']}.json")["Item"]
    assert sim.item(record.account_id, 1)["qoh_by_shop"]["2"] == 13
    assert archived["archived"] == "true"
    paths = [r["path"] for r in sim.requests()]
    assert len(paths) == 5
    assert all(p.startswith(f"/API/V3/Account/{record.account_id}") for p in paths)


def test_a_path_that_could_leave_the_account_is_refused(keeper: Keeper, record: ConnectionRecord) -> None:
    with keeper.lightspeed(record.id) as ls, pytest.raises(InvalidPath):
        ls.get("../100002.json")


def test_paginate_yields_every_record_once(keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl) -> None:
    sim.add_items(record.account_id, 96)  # 101 items: the last page of 100 holds one, as an object
    with keeper.lightspeed(record.id) as ls:
        ids = [item["itemID"] for item in ls.paginate("Item.json", {"limit": "100"})]
    assert len(ids) == len(set(ids)) == 101


def test_paginate_refreshes_once_when_a_token_is_refused_midway(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl
) -> None:
    sim.add_items(record.account_id, 15)
    before = sim.stats()["refreshes"]
    with keeper.lightspeed(record.id) as ls:
        pages = ls.pages("Item.json", {"limit": "10"})
        first = next(pages)
        sim.expire_access_tokens(record.account_id)
        rest = [item for page in pages for item in page]
    assert len(first) + len(rest) == 20
    assert sim.stats()["refreshes"] == before + 1
    assert sim.reuse() == 0


def test_async_verbs_and_paginate(keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl) -> None:
    sim.add_items(record.account_id, 20)

    async def main() -> tuple[str, list[str]]:
        async with keeper.lightspeed(record.id) as ls:
            one = await ls.get("Item/2.json")
            await ls.put("Item/2.json", json={"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 4}}})
            ids = [item["itemID"] async for item in ls.paginate("Item.json", {"limit": "7"})]
            return one["Item"]["itemID"], ids

    item_id, ids = asyncio.run(main())
    assert item_id == "2"
    assert len(ids) == len(set(ids)) == 25
    assert sim.item(record.account_id, 2)["qoh_by_shop"]["1"] == 4


def test_the_client_and_a_second_keeper_share_the_accounts_bucket(
    keeper: Keeper, record: ConnectionRecord, sim: SimulatorControl, make_keeper: object
) -> None:
    """A stock batch and generic calls from two Keepers (as two processes would) at once: one bucket, no 429."""
    sim.configure(bucket_size=10, drip_rate=10, burst_limit=8)
    other: Keeper = make_keeper()  # type: ignore[operator]
    errors: list[BaseException] = []

    def reads() -> None:
        try:
            with other.lightspeed(record.id) as ls:
                for _ in range(30):
                    ls.get("Item/3.json")
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=reads)
    thread.start()
    with keeper.lightspeed(record.id) as ls:
        for number in range(20):
            ls.set_stock(item_id=1, shop_id=1, qoh=number)
    thread.join()
    elapsed = time.monotonic() - started
    assert errors == []
    assert sim.stats()["rate_limited"] == 0
    assert elapsed >= (30 + 20 * 1.5 - 10) / 10 - 0.5  # the bucket bound both of them together

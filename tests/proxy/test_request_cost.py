"""``X-LS-API-Request-Cost`` corrects the account's shared bucket row, through the real app and the simulator.

A write is booked at ``LIGHTSPEED_WRITE_COST`` (1.5: one nested entity); the simulator charges 1 plus 0.5 per
``ItemShop`` entry. Each answer's level is within a request of the model here (not news by itself), so only the
cost can tell the row what the write really cost. The row is read from the database (the store's own repo, by
the database's clock) and compared with the answer's ``X-LS-API-Bucket-Level``, which holds the real cost: they
agree but for the header's rounding (0.05) and what dripped away between the two readings (at most ``DRIP``
times the time the test took for the call and the read). A row that kept the booked cost is 0.5 off.
"""

from __future__ import annotations

import time

import httpx2
import pytest

from lightkeeper.lightspeed.bucket import BucketState
from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant, MerchantFactory

#: Slow, so that what the write added is still in the bucket when the row is read, yet shown exactly by the
#: simulator's ``X-LS-API-Drip-Rate`` (one decimal).
DRIP = 0.1
ROUNDING = 0.05  # the simulator's level header has one decimal

TWO_SHOPS = {"ItemShops": {"ItemShop": [{"shopID": 1, "qoh": 4}, {"shopID": 1, "qoh": 5}]}}


def row_level(merchant: Merchant) -> float:
    """The account's bucket level in the shared row, now (the database's clock)."""
    keeper = merchant.server.keeper
    name = keeper.api_pacer.name(merchant.account_id)
    level, _now = keeper.store.api_buckets.transform(
        name, lambda text, now: (None, BucketState.loads(text).level_at(now))
    )
    return level


def reported(answer: httpx2.Response) -> float:
    return float(answer.headers["X-LS-API-Bucket-Level"].partition("/")[0])


@pytest.mark.parametrize(
    ("method", "path", "body", "cost"),
    [
        ("PUT", "Item/1.json", TWO_SHOPS, "2"),  # two nested entities: 0.5 more than booked
        ("DELETE", "Item/2.json", None, "1"),  # none: 0.5 less
    ],
    ids=["costlier", "cheaper"],
)
def test_the_shared_row_counts_a_write_at_its_real_cost(
    merchant_with: MerchantFactory, sim: SimulatorControl, method: str, path: str, body: object, cost: str
) -> None:
    sim.configure(drip_rate=DRIP)  # before the connection's account lookup, whose answer teaches the row
    with merchant_with() as merchant:
        started = time.monotonic()
        answer = merchant.call(method, path, json=body)
        level = row_level(merchant)
        dripped = DRIP * (time.monotonic() - started)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-LS-API-Request-Cost"] == cost  # booked at 1.5
    assert answer.headers["X-LS-API-Drip-Rate"] == str(DRIP)  # the row drips as the simulator does
    expected = reported(answer)
    assert expected - ROUNDING - dripped - 1e-6 <= level <= expected + ROUNDING + 1e-6, (level, expected, dripped)

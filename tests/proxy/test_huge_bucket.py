"""A bucket with room to spare (Lightspeed's limits set out of the way, as the benchmarks do): sequential requests
go straight through. A lateness rule that shrank with the drip alone made every send "late" at a drip of 1e9/s,
and each request rebooked until the caller timed out."""

from __future__ import annotations

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import MerchantFactory


def test_sequential_requests_pass_through_a_bucket_with_room_to_spare(
    merchant_with: MerchantFactory, sim: SimulatorControl
) -> None:
    sim.configure(bucket_size=1e9, drip_rate=1e9, burst_limit=100_000)
    with merchant_with(PROXY_MAX_WAIT_S="60") as merchant:
        answers = [merchant.call("GET", "Item/1.json").status_code for _ in range(200)]
    assert answers == [200] * 200
    assert sim.stats()["rate_limited"] == 0

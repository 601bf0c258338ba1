"""A caller that goes away lets go of Lightspeed too, checked at the simulator: in the middle of a streamed answer
the upstream answer is cut (``api_streams_cut``), and while queued for the account's bucket the request is never
sent. Through the real app over HTTP against the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant, MerchantFactory
from tests.web.conftest import AppServer

ITEM = "Item/1.json"
WAIT_S = 5.0


def _caller(server: AppServer, timeout: float) -> httpx2.Client:
    """A client of its own (the fixture's records every answer whole, which this one must not)."""
    return httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=timeout)


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("fault", "path", "status"),
    [
        # Lightspeed's 404, streamed as it comes, its 4 chunks 10 s apart.
        ({"kind": "slow_body", "seconds": 10}, "Item/424242.json", 404),
        # A 1 GB export: the proxy reads its first 8 MiB (for a Link header), then streams; the caller stops early.
        ({"kind": "large_body", "bytes": 1_000_000_000}, "Export.json", 200),
    ],
)
def test_a_caller_that_leaves_mid_body_cuts_lightspeeds_answer(
    merchant: Merchant, sim: SimulatorControl, fault: dict[str, Any], path: str, status: int
) -> None:
    sim.add_fault("api", **fault)
    with _caller(merchant.server, timeout=30) as caller, caller.stream("GET", f"{merchant.base}/{path}") as answer:
        assert answer.status_code == status
        assert next(answer.iter_raw())  # some bytes came through; then the caller hangs up
    # Long before the slow body's next chunk (10 s) or the export's end: the proxy let go of the upstream answer.
    _wait_until(lambda: sim.stats()["api_streams_cut"] == 1, "the simulator to see its answer cut")
    assert len(sim.requests()) == 1


def test_a_caller_that_leaves_while_queued_for_the_bucket_sends_nothing(
    merchant_with: MerchantFactory, sim: SimulatorControl
) -> None:
    sim.configure(bucket_size=3, drip_rate=0.5, burst_limit=100)
    with merchant_with(PROXY_MAX_WAIT_S="30") as merchant:
        for _ in range(6):  # fill the bucket until a GET had to wait for room: the next one must wait too
            started = time.monotonic()
            assert merchant.call("GET", ITEM).status_code == 200
            if time.monotonic() - started >= 1.0:
                break
        else:
            pytest.fail("the bucket never made a GET wait")
        sent = len(sim.requests())
        with _caller(merchant.server, timeout=0.3) as impatient, pytest.raises(httpx2.TimeoutException):
            impatient.get(f"{merchant.base}/{ITEM}")  # queued for its slot, then gone
        time.sleep(3.5)  # past the moment its slot came (one unit of room drips in 1 / 0.5 = 2 s)
        assert len(sim.requests()) == sent  # never sent
        assert merchant.call("GET", ITEM).status_code == 200  # the account is not stuck behind it
        assert len(sim.requests()) == sent + 1
    assert sim.stats()["rate_limited"] == 0

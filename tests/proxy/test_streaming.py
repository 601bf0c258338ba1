"""Deadlines, disconnects, streaming and pages through the proxy (real app over HTTP, simulator, both databases)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant, MerchantFactory

ITEM = "Item/1.json"


def test_no_answer_within_the_timeout_is_504(merchant_with: MerchantFactory, sim: SimulatorControl) -> None:
    with merchant_with(PROXY_TIMEOUT_S="1") as merchant:
        # One call first: the first request of a process opens its pools and creates the account's bucket row,
        # which on a busy machine took a second of its own; the deadline is what is measured here.
        assert merchant.call("GET", ITEM).status_code == 200
        sim.clear_requests()
        sim.inject_fault("api", "timeout", seconds=8)
        started = time.monotonic()
        answer = merchant.call("GET", ITEM)
        elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert answer.json()["code"] == "provider_timeout"
    # The deadline ends when it says, long before the answer would have come (bounds wide for a busy machine).
    assert 0.95 <= elapsed < 3.0
    assert len(sim.requests()) == 1  # a GET that timed out is not retried either: the caller decides


def test_a_slow_body_within_the_timeout_streams_through(merchant_with: MerchantFactory, sim: SimulatorControl) -> None:
    with merchant_with(PROXY_TIMEOUT_S="2") as merchant:
        direct = merchant.call("GET", ITEM).content
        sim.inject_fault("api", "slow_body", seconds=0.5)  # 4 chunks 0.5 s apart: 1.5 s in all, no pause > 2 s
        answer = merchant.call("GET", ITEM)
    assert answer.status_code == 200
    assert answer.content == direct


def test_a_pause_before_any_byte_went_out_is_504(merchant_with: MerchantFactory, sim: SimulatorControl) -> None:
    """A collection page is read whole (for its Link header) before anything is answered: a pause in it is
    still a 504, with nothing sent to the caller yet."""
    with merchant_with(PROXY_TIMEOUT_S="1") as merchant:
        sim.inject_fault("api", "slow_body", seconds=6)
        started = time.monotonic()
        answer = merchant.call("GET", "Item.json")
        elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert answer.json()["code"] == "provider_timeout"
    assert elapsed < 4.5  # the 1 s deadline, not the 6 s pause (wide for a busy machine)


def test_a_pause_after_bytes_went_out_cuts_the_connection(
    merchant_with: MerchantFactory, sim: SimulatorControl
) -> None:
    """A streamed answer (here Lightspeed's 404, passed on as it comes) that stalls past the deadline: a clean
    end would pass a truncated body as whole, so the connection to the caller is cut."""
    with merchant_with(PROXY_TIMEOUT_S="1") as merchant, httpx2.Client(base_url=merchant.server.url) as plain:
        sim.inject_fault("api", "slow_body", seconds=6)
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {merchant.server.api_key}"}
        with plain.stream("GET", f"{merchant.base}/Item/424242.json", headers=headers) as answer:
            assert answer.status_code == 404  # the headers went out at once
            with pytest.raises(httpx2.HTTPError):
                answer.read()
        elapsed = time.monotonic() - started
    assert elapsed < 4.5  # the 1 s deadline, not the 6 s pause


def test_a_caller_that_disconnects_cancels_the_upstream_request(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.inject_fault("api", "timeout", seconds=10)
    with httpx2.Client(base_url=merchant.server.url, timeout=0.5) as impatient:
        impatient.headers["Authorization"] = f"Bearer {merchant.server.api_key}"
        with pytest.raises(httpx2.TimeoutException):
            impatient.get(f"{merchant.base}/{ITEM}")
    deadline = time.monotonic() + 3
    while sim.stats().get("api_disconnects", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["api_disconnects"] == 1  # the simulator saw us hang up, long before its 10 s


def test_a_pagination_walk_through_link_collects_every_record_once(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.add_items(merchant.account_id, 245)  # 5 demo items + 245 = 250
    seen: list[str] = []
    url: str | None = f"{merchant.base}/Item.json?limit=100"
    pages = 0
    while url is not None:
        answer = merchant.server.client.get(url)
        assert answer.status_code == 200, answer.text
        pages += 1
        items = answer.json().get("Item", [])
        seen += [item["itemID"] for item in (items if isinstance(items, list) else [items])]
        url = answer.links.get("next", {}).get("url")
        assert url is None or url.startswith(f"{merchant.base}/Item.json?")  # relative (RFC 8288 allows it)
    assert pages == 3
    assert len(seen) == len(set(seen)) == 250
    back = merchant.server.client.get(f"{merchant.base}/Item.json?limit=100").links
    assert "prev" not in back  # the first page has no previous one


def test_a_one_record_page_keeps_its_link(merchant: Merchant) -> None:
    answer = merchant.call("GET", "Item.json", params={"limit": "1"})
    assert isinstance(answer.json()["Item"], dict)  # Lightspeed's quirk, passed through as it is
    assert "next" in answer.links


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_200_mb_answer_streams_through_in_bounded_memory(merchant: Merchant, sim: SimulatorControl) -> None:
    """The app, the simulator and this client share this process: its growth bounds the proxy's."""
    size = 200 * 1024 * 1024
    sim.inject_fault("api", "large_body", body_bytes=size)
    peak, baseline, stop = [0.0], _rss_mb(), threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received = 0
    headers = {"Authorization": f"Bearer {merchant.server.api_key}"}
    try:
        with (
            httpx2.Client(base_url=merchant.server.url, headers=headers, timeout=120) as plain,  # no transcript hook
            plain.stream("GET", f"{merchant.base}/Export.json") as answer,
        ):
            assert answer.status_code == 200
            for chunk in answer.iter_raw():
                received += len(chunk)
    finally:
        stop.set()
        sampler.join()
    assert received == size
    assert peak[0] - baseline < 50, f"RSS grew {peak[0] - baseline:.0f} MB"

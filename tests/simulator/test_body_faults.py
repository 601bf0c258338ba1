"""Body faults on the API (``slow_body``, ``large_body``) and clients that hang up while the API waits."""

from __future__ import annotations

import json
import time
import tracemalloc

import httpx2
import pytest

from lightkeeper.simulator.faults import MIN_LARGE_BODY
from tests.simulator.api_support import Sim, module_sim, seed, sim, wait_until

__all__ = ["module_sim", "sim"]

ACCOUNT = "/API/V3/Account.json"


def test_slow_body_sends_the_headers_at_once_and_the_body_late(sim: Sim) -> None:
    account = seed(sim.control)
    expected = sim.http.get(ACCOUNT, headers=account.bearer).json()
    sim.control.inject_fault("api", "slow_body", seconds=0.25)

    started = time.monotonic()
    with sim.http.stream("GET", ACCOUNT, headers=account.bearer) as response:
        headers_after = time.monotonic() - started
        body = response.read()
    body_after = time.monotonic() - started

    assert headers_after < 0.2
    assert body_after >= 0.7  # three pauses of 0.25 s between four chunks
    assert response.status_code == 200
    assert json.loads(body) == expected
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["X-LS-API-Bucket-Level"] == "2/90"  # the real request was charged
    assert response.headers["X-LS-API-Burst-Level"] == "2/10"
    assert sim.control.stats()["faults_served"] == 1


def test_large_body_is_exact_valid_json_with_the_real_headers(sim: Sim) -> None:
    account = seed(sim.control)
    for size in (MIN_LARGE_BODY, 1000, 200_000):
        sim.control.inject_fault("api", "large_body", body_bytes=size)
        response = sim.http.get(ACCOUNT, headers=account.bearer)
        assert response.status_code == 200
        assert len(response.content) == size
        assert "content-length" not in response.headers  # chunked: the size is only known at the end
        assert response.headers["content-type"] == "application/json"
        assert "X-LS-API-Bucket-Level" in response.headers
        body = response.json()
        assert body["@attributes"] == {"next": "", "previous": ""}
        assert set(body["Blob"]) <= {"x"}
    for bad in (MIN_LARGE_BODY - 1, 1_000_000_001, "big"):
        with pytest.raises(httpx2.HTTPStatusError):
            sim.control.add_fault("api", "large_body", bytes=bad)
    with pytest.raises(httpx2.HTTPStatusError):
        sim.control.add_fault("token", "large_body")


def test_a_100_mb_body_is_streamed_without_holding_it(sim: Sim) -> None:
    account = seed(sim.control)
    size = 100_000_000
    listed = sim.control.add_fault("api", "large_body", bytes=size)["faults"]
    assert listed[0]["bytes"] == size
    received = 0
    tracemalloc.start()
    try:
        with sim.http.stream("GET", ACCOUNT, headers=account.bearer) as response:
            for chunk in response.iter_raw():
                received += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < 8_000_000, f"{peak} bytes at peak for a {size}-byte body"  # client and server together


def test_a_client_that_hangs_up_during_api_latency_is_counted_and_its_put_still_happens(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.configure(api_latency_ms=150)
    started = time.monotonic()
    assert sim.http.get(ACCOUNT, headers=account.bearer).status_code == 200  # a patient client: no disconnect
    assert time.monotonic() - started >= 0.15
    sim.control.configure(api_latency_ms=3000)
    update = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 17}}}
    with pytest.raises(httpx2.TimeoutException):
        sim.http.put(account.path("Item/1.json"), json=update, headers=account.bearer, timeout=0.2)

    wait_until(lambda: sim.control.stats()["api_disconnects"] == 1, "the disconnect to be noticed")
    assert sim.control.stats()["api_disconnects"] == 1
    # The wait ended at the disconnect (not after 3 s) and the provider, having the request, carried it out.
    wait_until(lambda: sim.control.item(account.account_id, 1)["qoh_by_shop"]["1"] == 17, "the PUT")


def test_a_client_that_hangs_up_during_an_api_timeout_fault_is_counted(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.inject_fault("api", "timeout", seconds=30)
    started = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        sim.http.get(ACCOUNT, headers=account.bearer, timeout=0.2)
    wait_until(lambda: sim.control.stats()["api_disconnects"] == 1, "the disconnect to be noticed")
    assert time.monotonic() - started < 2
    assert sim.control.stats()["per_account"][account.account_id]["api_requests"] == 1  # charged all the same
    assert sim.http.get(ACCOUNT, headers=account.bearer).status_code == 200

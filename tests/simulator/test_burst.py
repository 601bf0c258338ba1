"""The burst limiter: at most ``burst_limit`` API requests per (account, client) in ANY sliding second.

Sliding, not calendar seconds: a client that paces "10 per clock second" is refused. A refused request
costs nothing (not charged to the leaky bucket, not counted in the window); ``rate_limited`` counts 429s of
both limiters so a test can assert "Lightspeed sent no 429 at all" with one counter.
"""

from __future__ import annotations

import time

import httpx2
import pytest

from tests.simulator.api_support import Seeded, Sim, module_sim, seed, sim

__all__ = ["module_sim", "sim"]

ACCOUNT = "/API/V3/Account.json"


def whoami(sim: Sim, account: Seeded) -> httpx2.Response:
    return sim.http.get(ACCOUNT, headers=account.bearer)


def bucket_used(response: httpx2.Response) -> float:
    return float(response.headers["X-LS-API-Bucket-Level"].split("/")[0])


def fill_window(sim: Sim, account: Seeded, count: int = 10) -> float:
    """``count`` accepted requests; returns when the last answer arrived (client monotonic clock)."""
    for n in range(1, count + 1):
        response = whoami(sim, account)
        assert response.status_code == 200, response.text
        assert response.headers["X-LS-API-Burst-Level"] == f"{n}/10"
    return time.monotonic()


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_the_eleventh_request_in_a_second_is_refused_and_costs_nothing(sim: Sim) -> None:
    account = seed(sim.control)
    started = time.monotonic()
    fill_window(sim, account)
    assert time.monotonic() - started < 0.9, "the loopback is too slow for this test"

    refused = whoami(sim, account)

    assert refused.status_code == 429
    assert refused.headers["X-LS-API-RateLimit-Type"] == "api-burst-limiter"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-LS-API-Burst-Level"] == "10/10"
    assert refused.json()["httpCode"] == "429"
    assert bucket_used(refused) <= 10  # the bucket headers come along, uncharged
    stats = sim.control.stats()
    assert stats["burst_limited"] == 1
    assert stats["rate_limited"] == 1  # one counter for both kinds of 429
    assert stats["per_account"][account.account_id]["burst_limited"] == 1
    assert stats["per_account"][account.account_id]["rate_limited"] == 1


def test_the_window_slides_and_refused_requests_do_not_count_in_it(sim: Sim) -> None:
    account = seed(sim.control)
    last_accepted = fill_window(sim, account)
    refused_until = last_accepted + 0.5
    while time.monotonic() < refused_until:  # hammer for half a second: every one refused, none counted
        assert whoami(sim, account).status_code == 429
        time.sleep(0.05)

    sleep_until(last_accepted + 1.05)  # the ten accepted ones are out of the window; the refused never in

    after = [whoami(sim, account) for _ in range(10)]
    assert [r.status_code for r in after] == [200] * 10
    assert after[0].headers["X-LS-API-Burst-Level"] == "1/10"
    assert bucket_used(after[0]) <= 11  # 10 before + this one, drained a little; the 429s cost nothing
    assert sim.control.stats()["rate_limited"] == sim.control.stats()["burst_limited"] >= 5


def test_a_calendar_second_boundary_does_not_reset_the_window(sim: Sim) -> None:
    account = seed(sim.control)
    while not 0.70 <= time.time() % 1 <= 0.75:  # start late in a clock second
        time.sleep(0.005)
    fill_window(sim, account)
    next_second = time.monotonic() + (1 - time.time() % 1)
    sleep_until(next_second + 0.05)  # a new clock second, well under 1 s since the first request

    refused = whoami(sim, account)

    assert refused.status_code == 429
    assert refused.headers["X-LS-API-RateLimit-Type"] == "api-burst-limiter"


def test_the_window_follows_the_account_clock(sim: Sim) -> None:
    account = seed(sim.control)
    fill_window(sim, account)
    assert whoami(sim, account).status_code == 429
    sim.control.advance(account.account_id, 1.0)
    assert whoami(sim, account).status_code == 200


def test_each_account_has_its_own_window(sim: Sim) -> None:
    first, second = seed(sim.control), seed(sim.control)
    fill_window(sim, first)
    assert whoami(sim, first).status_code == 429
    response = whoami(sim, second)
    assert response.status_code == 200
    assert response.headers["X-LS-API-Burst-Level"] == "1/10"


def test_every_api_route_passes_the_limiter(sim: Sim) -> None:
    account = seed(sim.control)
    fill_window(sim, account, 7)
    item = sim.http.get(account.path("Item/1.json"), headers=account.bearer)
    page = sim.http.get(account.path("Item.json"), headers=account.bearer)
    missing = sim.http.get(account.path("Customer.json"), headers=account.bearer)
    assert [r.headers["X-LS-API-Burst-Level"] for r in (item, page, missing)] == ["8/10", "9/10", "10/10"]
    assert sim.http.put(account.path("Item/1.json"), json={}, headers=account.bearer).status_code == 429


def test_burst_limit_is_a_positive_config_field(sim: Sim) -> None:
    assert sim.control.config()["burst_limit"] == 10
    sim.control.configure(burst_limit=2)
    account = seed(sim.control)
    assert [whoami(sim, account).status_code for _ in range(3)] == [200, 200, 429]
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(httpx2.HTTPStatusError):
            sim.control.configure(burst_limit=bad)


def test_the_leaky_bucket_429_keeps_its_type_and_counts_in_rate_limited(sim: Sim) -> None:
    sim.control.configure(bucket_size=2)
    account = seed(sim.control)
    assert [whoami(sim, account).status_code for _ in range(2)] == [200, 200]

    limited = whoami(sim, account)

    assert limited.status_code == 429
    assert limited.headers["X-LS-API-RateLimit-Type"] == "api-leaky-bucket"
    assert limited.headers["X-LS-API-Burst-Level"] == "3/10"  # it reached the provider: it counts here
    stats = sim.control.stats()
    assert (stats["rate_limited"], stats["burst_limited"]) == (1, 0)

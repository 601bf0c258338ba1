"""Tokens and rate limits through the proxy: one refresh on a 401, expired connections, both 429 kinds, the
wait cap. Through the real app over HTTP against the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx2
from sqlalchemy import update

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store.schema import connections as connections_table
from tests.proxy.conftest import Merchant, MerchantFactory

ITEM = "Item/1.json"
STOCK = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 7}}}


def test_a_refused_token_costs_one_refresh_and_one_retry(merchant: Merchant, sim: SimulatorControl) -> None:
    before = sim.stats()["refreshes"]
    sim.expire_access_tokens(merchant.account_id)  # not near expiry for us: only Lightspeed's 401 says so
    answer = merchant.call("GET", ITEM)
    assert answer.status_code == 200, answer.text
    assert sim.stats()["refreshes"] == before + 1
    assert sim.reuse() == 0
    assert [r["authorization"] if "authorization" in r else r["headers"] for r in sim.requests()]  # two sends
    assert len(sim.requests()) == 2


def test_the_retry_after_a_401_sends_the_same_body(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.inject_fault("api", "status", status=401)
    answer = merchant.call("PUT", ITEM, json=STOCK)
    assert answer.status_code == 200, answer.text
    first, second = sim.requests()
    assert first["method"] == second["method"] == "PUT"
    assert first["body_bytes"] == second["body_bytes"] > 0
    assert sim.item(merchant.account_id, 1)["qoh_by_shop"]["1"] == 7


def test_a_second_401_is_403_lightspeed_access_denied(merchant: Merchant, sim: SimulatorControl) -> None:
    before = sim.stats()["refreshes"]
    sim.inject_fault("api", "status", count=2, status=401)
    answer = merchant.call("GET", ITEM)
    assert answer.status_code == 403
    assert answer.json()["code"] == "lightspeed_access_denied"
    assert sim.stats()["refreshes"] == before + 1  # one refresh, never a loop
    assert len(sim.requests()) == 2


def test_an_expired_connection_is_409_and_sends_nothing(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.revoke_account(merchant.account_id)  # the merchant uninstalled the app: the refresh is invalid_grant
    sim.clear_requests()
    answer = merchant.call("GET", ITEM)  # the stored token is refused, the refresh finds the grant dead
    assert answer.status_code == 409
    assert answer.json()["code"] == "connection_expired"
    again = merchant.call("GET", ITEM)
    assert again.status_code == 409
    assert len(sim.requests()) == 1  # the first call's 401; the second sent nothing


def test_a_burst_429_is_waited_out_and_retried_once(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.inject_fault("api", "rate_limit", retry_after=1)
    started = time.monotonic()
    answer = merchant.call("GET", ITEM)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert elapsed >= 0.95  # Retry-After: 1 was honoured before the retry
    assert len(sim.requests()) == 2


def test_a_429_longer_than_the_cap_is_answered_as_it_came(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.inject_fault("api", "rate_limit", retry_after=3600)
    started = time.monotonic()
    answer = merchant.call("GET", ITEM)
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3600"
    assert answer.headers["x-ls-api-ratelimit-type"] == "api-burst-limiter"
    # The whole deployment holds the account now: the next request is refused at once, nothing sent.
    held = merchant.call("GET", ITEM)
    assert held.status_code == 429
    assert held.json()["code"] == "rate_limited"
    assert 3500 <= int(held.headers["retry-after"]) <= 3600
    assert len(sim.requests()) == 1


def test_a_leaky_bucket_429_from_another_client_is_waited_out(merchant: Merchant, sim: SimulatorControl) -> None:
    """Another app of the merchant spends the same bucket: Lightspeed's 429 (api-leaky-bucket) is the only sign."""
    sim.configure(bucket_size=10, drip_rate=2)
    token = merchant.server.client.post(f"/api/connections/{merchant.connection_id}/token").json()["access_token"]
    url = f"{merchant.server.simulator.url}/API/V3/Account/{merchant.account_id}/{ITEM}"
    with httpx2.Client(headers={"Authorization": f"Bearer {token}"}) as other:
        while other.get(url).status_code != 429:  # fill the bucket behind lightkeeper's back
            pass
    sim.clear_requests()
    answer = merchant.call("GET", ITEM)
    assert answer.status_code == 200
    kinds = [r for r in sim.requests()]
    assert len(kinds) == 2  # the 429 (not processed) and the retry after its Retry-After
    assert answer.headers["x-ls-api-bucket-level"]


def test_a_wait_over_the_cap_is_429_at_once_and_sends_nothing(
    merchant_with: MerchantFactory, sim: SimulatorControl
) -> None:
    sim.configure(bucket_size=5, drip_rate=0.5, burst_limit=100)
    with merchant_with(PROXY_MAX_WAIT_S="1") as merchant:
        for _ in range(6):  # 4 usable units (the connect's account lookup may hold one): 2 s of drip away
            sent = len(sim.requests())
            started = time.monotonic()
            answer = merchant.call("GET", ITEM)
            if answer.status_code != 200:
                break
        assert time.monotonic() - started < 0.5
        assert answer.status_code == 429
        assert answer.json()["code"] == "rate_limited"
        assert int(answer.headers["retry-after"]) >= 1
        assert len(sim.requests()) == sent
        assert sim.stats()["rate_limited"] == 0  # Lightspeed itself never had to refuse anything


def test_a_wait_within_the_cap_is_waited(merchant_with: MerchantFactory, sim: SimulatorControl) -> None:
    sim.configure(bucket_size=5, drip_rate=2, burst_limit=100)
    with merchant_with(PROXY_MAX_WAIT_S="5") as merchant:
        started = time.monotonic()
        statuses = [merchant.call("GET", ITEM).status_code for _ in range(8)]
        elapsed = time.monotonic() - started
    assert statuses == [200] * 8
    assert elapsed >= (8 - 4) / 2 - 0.1  # what did not fit in the bucket dripped at 2/s
    assert sim.stats()["rate_limited"] == 0


def test_a_connection_in_refresh_backoff_is_503_and_sends_nothing(merchant: Merchant, sim: SimulatorControl) -> None:
    """A token that must be refreshed first, and a token endpoint that fails: the proxy answers the existing
    `provider_unavailable`, and while the connection cools down it asks Lightspeed for nothing at all."""
    keeper = merchant.server.keeper
    with keeper.store.engine.begin() as conn:
        expiring = datetime.now(UTC) + timedelta(seconds=30)  # inside TOKEN_REFRESH_LEEWAY_S
        conn.execute(
            update(connections_table)
            .where(connections_table.c.id == merchant.connection_id)
            .values(token_expires_at=expiring)
        )
    sim.inject_fault("token", "status", count=5, status=503)
    before = sim.stats()["token_requests"]
    first = merchant.call("GET", ITEM)
    second = merchant.call("GET", ITEM)
    assert first.status_code == second.status_code == 503
    assert first.json()["code"] == second.json()["code"] == "provider_unavailable"
    assert sim.stats()["token_requests"] == before + 1  # the second call met the cooldown, not Lightspeed
    assert sim.requests() == []

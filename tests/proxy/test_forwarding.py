"""What the proxy sends to Lightspeed and what it answers: every method, the path and query, the header rules.

Through the real app over HTTP, against the simulator, on SQLite and PostgreSQL; the simulator's request log
is what "reached Lightspeed".
"""

from __future__ import annotations

import json

import pytest

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant, header

ITEM = "Item/1.json"


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method_reaches_the_accounts_own_prefix(merchant: Merchant, sim: SimulatorControl, method: str) -> None:
    body = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 4}}} if method in ("POST", "PUT", "PATCH") else None
    answer = merchant.call(method, ITEM, json=body)
    [sent] = sim.requests()
    assert sent["method"] == method
    assert sent["path"] == f"/API/V3/Account/{merchant.account_id}/{ITEM}"
    assert answer.headers.get("x-ls-api-bucket-level")  # Lightspeed's limit headers come back on every answer
    if body is not None:
        assert sent["body_bytes"] == len(json.dumps(body, separators=(",", ":")).encode())
    if method == "HEAD":
        assert answer.content == b""
    assert answer.status_code < 500


def test_the_answer_comes_through_byte_for_byte(merchant: Merchant, sim: SimulatorControl) -> None:
    through = merchant.call("GET", ITEM, params={"load_relations": '["ItemShops"]'})
    direct = sim.item(merchant.account_id, 1)
    assert through.status_code == 200
    assert through.headers["content-type"].startswith("application/json")
    assert through.json()["Item"]["itemID"] == direct["itemID"]
    assert int(through.headers["content-length"]) == len(through.content)


def test_the_query_string_goes_through_unchanged(merchant: Merchant, sim: SimulatorControl) -> None:
    query = "load_relations=%5B%22ItemShops%22%5D&limit=2&timeStamp=%3E%2C2026-01-01"
    merchant.server.client.get(f"{merchant.base}/Item.json?{query}")
    [sent] = sim.requests()
    assert sent["query"] == query


def test_an_empty_path_is_the_account_itself(merchant: Merchant, sim: SimulatorControl) -> None:
    for suffix in ("", "/"):
        answer = merchant.server.client.get(f"{merchant.base}{suffix}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["Account"]["accountID"] == merchant.account_id
    assert [r["path"] for r in sim.requests()] == [f"/API/V3/Account/{merchant.account_id}.json"] * 2


def test_only_allow_listed_headers_reach_lightspeed(merchant: Merchant, sim: SimulatorControl) -> None:
    merchant.call(
        "GET",
        ITEM,
        headers={
            "Accept": "application/json",
            "Accept-Language": "fr",
            "If-None-Match": '"abc"',
            "Cookie": "lk_dashboard=secret-session",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=203.0.113.9",
            "X-Lightkeeper-Anything": "ours",
            "X-Custom": "not on the list",
            "Connection": "keep-alive, X-Custom",
            "User-Agent": "caller/1.0",
        },
    )
    [sent] = sim.requests()
    names = {name for name, _value in sent["headers"]}  # type: ignore[union-attr]
    assert header(sent, "accept") == ["application/json"]
    assert header(sent, "accept-language") == ["fr"]
    assert header(sent, "if-none-match") == ['"abc"']
    for refused in ("cookie", "x-forwarded-for", "x-forwarded-host", "forwarded", "x-lightkeeper-anything", "x-custom"):
        assert refused not in names
    # One Authorization: the merchant's own valid token, never the caller's API key.
    assert header(sent, "authorization") == [f"Bearer <valid token of account {merchant.account_id}>"]
    [agent] = header(sent, "user-agent")
    assert agent.startswith("lightkeeper/")
    assert header(sent, "host")[0].startswith("127.0.0.1:")  # the provider's own host, not the caller's


def test_answer_headers_are_allow_listed(merchant: Merchant) -> None:
    answer = merchant.call("GET", ITEM)
    assert answer.status_code == 200
    for name in ("x-ls-api-bucket-level", "x-ls-api-drip-rate", "x-ls-api-burst-level", "x-ls-api-request-cost"):
        assert name in answer.headers, name
    assert "set-cookie" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"  # the security headers every answer has
    assert answer.headers["cache-control"] == "no-store"


def test_the_caller_needs_our_key_and_that_refusal_stays_401(merchant: Merchant, sim: SimulatorControl) -> None:
    with merchant.server.anonymous() as anonymous:
        answer = anonymous.get(f"{merchant.base}/{ITEM}")
    with merchant.server.anonymous(Authorization="Bearer wrong-key-wrong-key-wrong-key-wrong") as wrong:
        wrong_answer = wrong.get(f"{merchant.base}/{ITEM}")
    assert answer.status_code == wrong_answer.status_code == 401
    assert answer.json()["code"] == wrong_answer.json()["code"] == "unauthorized"
    assert sim.requests() == []


def test_an_unknown_connection_is_404_and_sends_nothing(merchant: Merchant, sim: SimulatorControl) -> None:
    answer = merchant.server.client.get("/api/connections/999999/lightspeed/Item.json")
    assert answer.status_code == 404
    assert answer.json()["code"] == "connection_not_found"
    assert sim.requests() == []


def test_lightspeeds_own_errors_come_through_as_they_are(merchant: Merchant, sim: SimulatorControl) -> None:
    answer = merchant.call("GET", "Item/424242.json")
    assert answer.status_code == 404
    assert answer.json()["httpCode"] == "404"  # Lightspeed's body, not ours
    sim.inject_fault("api", "status", status=503)
    failed = merchant.call("POST", "Item.json", json={"description": "x"})
    assert failed.status_code == 503  # a write that failed upstream is answered as it is, never retried
    assert [r["method"] for r in sim.requests()].count("POST") == 1


def test_a_request_body_is_streamed_whole(merchant: Merchant, sim: SimulatorControl) -> None:
    payload = json.dumps({"description": "Big", "customSku": "x" * 200_000}).encode()
    answer = merchant.call("POST", "Item.json", content=payload, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    [sent] = sim.requests()
    assert sent["body_bytes"] == len(payload)


def test_a_body_over_the_cap_is_refused_and_nothing_is_sent(merchant: Merchant, sim: SimulatorControl) -> None:
    answer = merchant.call("POST", "Item.json", content=b"x" * (1024 * 1024 + 1))
    assert answer.status_code == 413
    assert all(r["method"] != "POST" or r["body_bytes"] <= 1024 * 1024 for r in sim.requests())

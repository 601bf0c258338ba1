"""Proxy rules an audit found untested end to end (issue 17): validators and cookies in answers, conditional
requests, a second 429, the body of a 429 retry, a write that timed out, an unreachable Lightspeed, and a stock
batch sharing the account's bucket with proxied calls.

Through the real app over HTTP against the simulator, on SQLite and PostgreSQL; the simulator's request log
(``sim.requests()``) is what reached "Lightspeed", and ``sim.set_api_headers`` makes its answers carry the
ETag, Last-Modified and Set-Cookie a real answer may.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant, MerchantFactory, header
from tests.web.conftest import AppServer, ServeApp, issued_tokens, new_api_key

ITEM = "Item/1.json"
STOCK = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 7}}}
LAST_MODIFIED = "Wed, 01 Jul 2026 12:00:00 GMT"
ANSWER_EXTRAS = [
    ("ETag", '"v7"'),
    ("Last-Modified", LAST_MODIFIED),
    ("Set-Cookie", "ls_session=s3cr3t-session; Path=/; HttpOnly"),
    ("Set-Cookie", "ls_route=b2; Path=/"),
]


def _compact(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# -- headers answered and sent ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", ITEM, 200),  # a JSON answer read whole (for a Link header) before it is answered
        ("GET", "Item.json", 200),  # a collection page: the Link header is added to the same headers
        ("GET", "Item/424242.json", 404),  # Lightspeed's error, streamed through as it comes
        ("HEAD", ITEM, 200),
        ("PUT", ITEM, 200),
    ],
)
def test_validators_pass_through_and_cookies_never(
    merchant: Merchant, sim: SimulatorControl, method: str, path: str, status: int
) -> None:
    sim.set_api_headers(ANSWER_EXTRAS)
    conditional = (
        {"If-Match": '"v6"'} if method == "PUT" else {"If-None-Match": '"v6"', "If-Modified-Since": LAST_MODIFIED}
    )
    answer = merchant.call(method, path, headers=conditional, json=STOCK if method == "PUT" else None)
    assert answer.status_code == status, answer.text
    assert answer.headers["etag"] == '"v7"'
    assert answer.headers["last-modified"] == LAST_MODIFIED
    assert "set-cookie" not in answer.headers
    assert "ls_session" not in str(answer.headers)
    assert not merchant.server.client.cookies  # nothing for the caller's cookie jar either
    [sent] = sim.requests()
    for name, value in conditional.items():
        assert header(sent, name.lower()) == [value]  # the conditional request reached Lightspeed as sent


# -- 429s -------------------------------------------------------------------------------------------------------


def test_a_second_429_after_the_one_retry_is_passed_on_as_it_came(merchant: Merchant, sim: SimulatorControl) -> None:
    sim.set_api_headers([("Set-Cookie", "ls_session=s3cr3t-session; Path=/")])
    sim.inject_fault("api", "rate_limit", count=2, retry_after=1)
    answer = merchant.call("GET", ITEM)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"  # Lightspeed's own, not one the proxy worked out
    assert answer.headers["x-ls-api-ratelimit-type"] == "api-burst-limiter"
    assert answer.json()["httpCode"] == "429"  # Lightspeed's body, not the proxy's own rate_limited
    assert "code" not in answer.json()
    assert "set-cookie" not in answer.headers
    assert len(sim.requests()) == 2  # the first 429, and its one retry: never a third
    assert merchant.call("GET", ITEM).status_code == 200  # the hold was Retry-After's second, no longer


@pytest.mark.parametrize(
    ("method", "path", "body", "chunked"),
    [
        ("PUT", ITEM, STOCK, False),
        ("POST", "Item.json", {"description": "Retried once"}, False),
        ("PUT", ITEM, STOCK, True),  # no Content-Length: the body the first send streamed is kept for the retry
    ],
)
def test_a_429_retry_resends_the_same_body(
    merchant: Merchant, sim: SimulatorControl, method: str, path: str, body: object, chunked: bool
) -> None:
    payload = _compact(body)
    content: bytes | Iterator[bytes] = iter([payload[:9], payload[9:]]) if chunked else payload
    sim.inject_fault("api", "rate_limit", retry_after=1)
    answer = merchant.call(method, path, content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    first, second = sim.requests(body_digests=True)
    assert first["method"] == second["method"] == method
    assert first["body_bytes"] == second["body_bytes"] == len(payload)
    assert first["body_sha256"] == second["body_sha256"] == hashlib.sha256(payload).hexdigest()
    if method == "PUT":
        assert sim.item(merchant.account_id, 1)["qoh_by_shop"]["1"] == 7


# -- writes that may have been done ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_write_that_timed_out_is_504_and_never_retried(
    merchant_with: MerchantFactory, sim: SimulatorControl, method: str
) -> None:
    path, body = ("Item.json", {"description": "Timed out"}) if method == "POST" else (ITEM, STOCK)
    with merchant_with(PROXY_TIMEOUT_S="1") as merchant:
        assert merchant.call("GET", ITEM).status_code == 200  # the process's pools open outside the deadline
        sim.clear_requests()
        sim.inject_fault("api", "timeout", seconds=6)  # Lightspeed does the write, then answers too late
        answer = merchant.call(method, path, json=body)
        assert answer.status_code == 504
        assert answer.json()["code"] == "provider_timeout"
        time.sleep(1.0)  # room for a retry that must not come
        assert [r["method"] for r in sim.requests()] == [method]


# -- Lightspeed out of reach ----------------------------------------------------------------------------------


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port bound but not listening (connections are refused), kept for the block's duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _assert_nothing_leaks(answer: httpx2.Response, server: AppServer, *, hidden: list[str]) -> None:
    assert answer.status_code == 503, answer.text
    if answer.request.method != "HEAD":  # a HEAD's answer has no body
        assert answer.json()["code"] == "provider_unavailable"
    assert not [name for name in answer.headers if name.lower().startswith("x-ls-")]
    for secret in [*hidden, *issued_tokens(server.simulator), "Bearer", "Authorization"]:
        assert secret not in answer.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unreachable_lightspeed_is_503_provider_unavailable(
    merchant: Merchant, serve_app: ServeApp, sim: SimulatorControl, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """A second app on the same database whose LIGHTSPEED_API_URL is a closed loopback port."""
    caplog.set_level(logging.DEBUG)
    body = {"description": "Never sent"} if method == "POST" else None
    with (
        _closed_port() as port,
        serve_app(LIGHTKEEPER_API_KEY=new_api_key(), LIGHTSPEED_API_URL=f"http://127.0.0.1:{port}") as cut_off,
    ):
        path = f"/api/connections/{merchant.connection_id}/lightspeed/Item.json"
        answer = cut_off.client.request(method, path, json=body)
        _assert_nothing_leaks(answer, cut_off, hidden=[str(port), merchant.account_id, cut_off.api_key])
    assert sim.requests() == []
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for token in issued_tokens(merchant.server.simulator):
        assert token not in logged


# aiohttp resends a request of an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) once, by itself,
# when its reused connection is reset or closed before the answer (``ClientSession._retry_connection``, RFC 9112
# 9.3.1): a second send that no booking paid for, and for a DELETE a write sent twice. Upstream turns it off.
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "Item.json", None),
        ("HEAD", ITEM, None),
        ("DELETE", ITEM, None),
        ("PUT", ITEM, STOCK),
        ("POST", "Item.json", {"description": "Reset"}),
    ],
)
def test_a_connection_reset_is_503_and_not_sent_again(
    merchant: Merchant, sim: SimulatorControl, method: str, path: str, body: object
) -> None:
    assert merchant.call("GET", ITEM).status_code == 200  # a kept-alive connection to Lightspeed, reused below
    sim.clear_requests()
    sim.inject_fault("api", "reset")
    answer = merchant.call(method, path, json=body)
    _assert_nothing_leaks(answer, merchant.server, hidden=[merchant.server.simulator.url])
    assert [r["method"] for r in sim.requests()] == [method]  # the reset request was the only one


# -- one bucket for the stock batch and the proxy ------------------------------------------------------------

BUCKET, DRIP, BURST = 10.0, 5.0, 5
STOCK_ROWS, PROXY_GETS, PROXY_PUTS = 10, 16, 4


def test_a_stock_batch_and_proxied_calls_share_the_accounts_bucket(
    merchant_with: MerchantFactory, sim: SimulatorControl
) -> None:
    """A stock batch (the ``ApiClient``) and two proxy callers at once, against a bucket of 10 that drips 5/s
    with a burst limit of 5: (10 x 1.5 + 16 + 4 x 1.5 - 10) / 5 = 5.4 s of pacing, and Lightspeed answers no 429
    of either kind."""
    sim.configure(bucket_size=BUCKET, drip_rate=DRIP, burst_limit=BURST)
    with merchant_with(PROXY_MAX_WAIT_S="60") as merchant:
        sim.clear_requests()
        updates = [{"item_id": 1 + row % 5, "shop_id": 1, "qoh": 100 + row} for row in range(STOCK_ROWS)]
        calls = [("GET", ITEM, None)] * (PROXY_GETS // 2) + [("PUT", ITEM, STOCK)] * (PROXY_PUTS // 2)

        def proxy_caller() -> list[int]:
            with _client(merchant.server) as own:
                return [own.request(m, f"{merchant.base}/{p}", json=b).status_code for m, p, b in calls]

        def stock_batch() -> httpx2.Response:
            with _client(merchant.server) as own:
                return own.post(f"/api/connections/{merchant.connection_id}/stock", json={"updates": updates})

        with ThreadPoolExecutor(3) as pool:
            batch = pool.submit(stock_batch)
            callers = [pool.submit(proxy_caller) for _ in range(2)]
            statuses = [status for caller in callers for status in caller.result()]
            stocked = batch.result()
    assert stocked.status_code == 200, stocked.text
    assert stocked.json()["done"] == STOCK_ROWS, stocked.json()
    assert statuses == [200] * (PROXY_GETS + PROXY_PUTS)
    stats = sim.stats()
    assert stats["rate_limited"] == 0, stats  # counts both kinds of 429
    assert stats["burst_limited"] == 0, stats
    puts = [r for r in sim.requests() if r["method"] == "PUT"]
    assert len(puts) == STOCK_ROWS + PROXY_PUTS  # nothing retried, nothing lost


def _client(server: AppServer) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=120)

"""Every proxied request is counted and logged once, with the status actually sent: the body caps' 413s (declared
or found mid-stream), a database error while booking, a provider the deployment no longer configures. And
``PROXY_TIMEOUT_S`` bounds the whole wait for a connection, a slow DNS lookup included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from lightkeeper.errors import ProviderTimeout
from lightkeeper.proxy.upstream import Upstream
from tests.proxy.conftest import Merchant
from tests.proxy.test_observability import assert_said_nothing_of, proxied

CAP = 1024 * 1024  # LIGHTKEEPER_MAX_BODY_BYTES' default
CUSTOMER = "jane.doe%40example.com"
BUCKETS = "lightkeeper_api_buckets"


def proxy_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of each proxy log line so far."""
    return [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "lightkeeper.web.proxy_api" and record.getMessage().startswith("proxy ")
    ]


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without a Content-Length (sent chunked), ``total`` bytes long."""
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def test_a_body_declared_over_the_cap_is_counted_and_logged_as_413(
    merchant: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = proxied(merchant, "PUT", "413")
    answer = merchant.call("PUT", f"Item/1.json?email={CUSTOMER}", content=b"x" * (CAP + 1))
    assert answer.status_code == 413 and answer.json()["code"] == "payload_too_large"
    assert proxied(merchant, "PUT", "413") == before + 1
    [line] = proxy_lines(caplog)
    assert line["method"] == "PUT" and line["status"] == 413
    assert line["connection_id"] == merchant.connection_id and line["wait_ms"] is None  # nothing was sent
    assert_said_nothing_of(merchant, caplog)


def test_a_body_cut_off_mid_stream_is_counted_and_logged_as_413_not_499(
    merchant: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = {status: proxied(merchant, "PUT", status) for status in ("413", "4xx")}
    answer = merchant.call("PUT", f"Item/1.json?email={CUSTOMER}", content=chunks(CAP + 64 * 1024))
    assert answer.status_code == 413 and answer.json()["code"] == "payload_too_large"
    assert proxied(merchant, "PUT", "413") == before["413"] + 1
    assert proxied(merchant, "PUT", "4xx") == before["4xx"]  # not also (or instead) as a caller gone (499)
    [line] = proxy_lines(caplog)
    assert line["method"] == "PUT" and line["status"] == 413 and line["path"] == "Item/1.json"
    assert_said_nothing_of(merchant, caplog)


def test_a_database_error_while_booking_is_counted_and_logged_as_500_without_a_traceback(
    merchant: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = proxied(merchant, "GET", "500")
    engine = merchant.server.keeper.store.engine
    with engine.begin() as conn:  # the account's bucket row cannot be booked: every booking fails in the database
        conn.execute(text(f"ALTER TABLE {BUCKETS} RENAME TO {BUCKETS}_away"))
    try:
        answer = merchant.call("GET", f"Item.json?email={CUSTOMER}")
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {BUCKETS}_away RENAME TO {BUCKETS}"))
    assert answer.status_code == 500
    assert answer.json() == {"code": "internal_error", "message": "an unexpected error happened; see the service log"}
    assert proxied(merchant, "GET", "500") == before + 1
    [line] = proxy_lines(caplog)
    assert line["method"] == "GET" and line["status"] == 500 and line["path"] == "Item.json"
    assert_said_nothing_of(merchant, caplog)
    assert merchant.call("GET", "Item.json").status_code == 200  # the table is back: so is the proxy


def test_a_provider_no_longer_configured_is_counted_and_logged_as_500(
    merchant: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = proxied(merchant, "GET", "500")
    with merchant.server.keeper.store.engine.begin() as conn:  # X-Series is not configured in this deployment
        conn.execute(
            text("UPDATE lightspeed_connections SET provider = 'x-series' WHERE id = :id"),
            {"id": merchant.connection_id},
        )
    answer = merchant.call("GET", f"Item.json?email={CUSTOMER}")
    assert answer.status_code == 500 and answer.json()["code"] == "configuration_error"
    assert "Traceback" not in answer.text
    assert proxied(merchant, "GET", "500") == before + 1
    [line] = proxy_lines(caplog)
    assert line["status"] == 500 and line["connection_id"] == merchant.connection_id
    assert_said_nothing_of(merchant, caplog)


def test_no_log_line_holds_a_query_value_whatever_the_answer(
    merchant: Merchant, caplog: pytest.LogCaptureFixture
) -> None:
    """One line a request, answered by Lightspeed, refused by the route, cut by the caps, or not routed at all
    (an unknown method): none holds the query's values."""
    caplog.set_level(logging.DEBUG)
    client, query = merchant.server.client, f"?email={CUSTOMER}&note={CUSTOMER}"
    statuses = [
        client.get(f"{merchant.base}/Item.json{query}").status_code,
        client.get(f"{merchant.base}/..%2fItem.json{query}").status_code,
        client.put(f"{merchant.base}/Item/1.json{query}", content=b"x" * (CAP + 1)).status_code,
        client.request("OPTIONS", f"{merchant.base}/Item.json{query}").status_code,
    ]
    assert statuses == [200, 400, 413, 405]
    lines = proxy_lines(caplog)
    assert [(line["method"], line["status"]) for line in lines] == [
        ("GET", 200),
        ("GET", 400),
        ("PUT", 413),
        ("OTHER", 405),
    ]
    assert_said_nothing_of(merchant, caplog)


class SlowDnsLoop(asyncio.SelectorEventLoop):
    """An event loop whose DNS lookups take a minute (aiohttp's default resolver asks the loop)."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(60)
        return await super().getaddrinfo(*args, **kwargs)


def test_a_slow_dns_lookup_is_bounded_by_the_proxy_timeout() -> None:
    async def send() -> None:
        upstream = Upstream(user_agent="lightkeeper-test", timeout_s=0.5)
        try:  # bounded here too, so that a lookup the proxy does not bound fails the test instead of hanging it
            await asyncio.wait_for(
                upstream.send(
                    "GET",
                    "http://lightspeed.invalid/API/V3/Account/1.json",
                    [],
                    access_token="t",
                    body=None,
                    length=None,
                ),
                timeout=20,
            )
        finally:
            await upstream.aclose()

    started = time.monotonic()
    with asyncio.Runner(loop_factory=SlowDnsLoop) as runner, pytest.raises(ProviderTimeout):
        runner.run(send())
    assert time.monotonic() - started < 10  # the 0.5 s deadline, not the minute (wide for a busy machine)

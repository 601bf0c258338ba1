"""The proxy's metrics (closed label sets) and its one log line a request (never the query, never a token)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant
from tests.web.conftest import issued_tokens


def samples(merchant: Merchant, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = merchant.server.client.get("/metrics").text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def proxied(merchant: Merchant, method: str, status: str) -> float:
    found = samples(merchant, "lightkeeper_proxy_requests_total")
    return found.get((("method", method), ("status", status)), 0.0)


def test_requests_are_counted_by_method_and_a_closed_set_of_statuses(merchant: Merchant, sim: SimulatorControl) -> None:
    before = {key: proxied(merchant, *key) for key in [("GET", "200"), ("GET", "404"), ("GET", "400"), ("PUT", "4xx")]}
    waits_before = samples(merchant, "lightkeeper_proxy_wait_seconds_count").get((), 0.0)
    merchant.call("GET", "Item/1.json")
    merchant.call("GET", "Item/999.json")
    merchant.server.client.get(f"{merchant.base}/..%2fx")
    sim.inject_fault("api", "status", status=418)
    merchant.call("PUT", "Item/1.json", json={})
    assert proxied(merchant, "GET", "200") == before[("GET", "200")] + 1
    assert proxied(merchant, "GET", "404") == before[("GET", "404")] + 1
    assert proxied(merchant, "GET", "400") == before[("GET", "400")] + 1  # refused here, never sent
    assert proxied(merchant, "PUT", "4xx") == before[("PUT", "4xx")] + 1  # an odd status counts by its class
    assert samples(merchant, "lightkeeper_proxy_wait_seconds_count")[()] == waits_before + 3
    assert samples(merchant, "lightkeeper_proxy_upstream_seconds_count")[()] >= 3
    statuses = {dict(labels)["status"] for labels in samples(merchant, "lightkeeper_proxy_requests_total")}
    assert statuses <= {"200", "201", "204", "304", "400", "401", "403", "404", "409", "413", "422", "429"} | {
        "500",
        "502",
        "503",
        "504",
        "499",
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
    }


def test_one_log_line_a_request_without_query_values_or_tokens(
    merchant: Merchant, sim: SimulatorControl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    customer = "jane.doe%40example.com"
    merchant.server.client.get(f"{merchant.base}/Item.json?email={customer}&limit=2")
    merchant.call("PUT", "Item/1.json", json={"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 3}}})
    lines = [r for r in caplog.records if r.name == "lightkeeper.web.proxy_api" and r.getMessage().startswith("proxy")]
    assert len(lines) == 2
    first = lines[0].fields  # type: ignore[attr-defined]
    assert first["method"] == "GET" and first["path"] == "Item.json" and first["status"] == 200
    assert first["connection_id"] == merchant.connection_id
    assert first["wait_ms"] is not None and first["duration_ms"] >= first["upstream_ms"]
    assert_said_nothing_of(merchant, caplog)


def assert_said_nothing_of(merchant: Merchant, caplog: pytest.LogCaptureFixture) -> None:
    ours = [r for r in caplog.records if not r.name.startswith(("httpcore", "httpx"))]  # not this test's client
    everything = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in ours)
    assert "jane.doe" not in everything
    assert merchant.server.api_key not in everything
    for token in issued_tokens(merchant.server.simulator):
        assert token not in everything

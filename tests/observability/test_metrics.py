"""Prometheus metrics: refresh outcomes counted once when committed, route templates as labels, and gauges
read from the database that every process on one database agrees on."""

from __future__ import annotations

from datetime import timedelta

import httpx2
import pytest
from sqlalchemy import update

from lightkeeper import Keeper
from lightkeeper.errors import ProviderUnavailable
from lightkeeper.metrics import OUTCOME_REASONS, DatabaseCollector, DatabaseSummary
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import Status, dialect
from lightkeeper.store.schema import connections as connections_table
from tests.conftest import FakeClock
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory
from tests.web.conftest import AppServer

from .conftest import local, parse, sample

ATTEMPTS = "lightkeeper_refresh_attempts_total"
REQUESTS = "lightkeeper_http_requests_total"


def attempts(outcome: str, reason: str) -> float:
    return local(ATTEMPTS, {"outcome": outcome, "reason": reason})


def every_attempt() -> dict[tuple[str, str], float]:
    return {(o, r.value): attempts(o, r.value) for o, reasons in OUTCOME_REASONS.items() for r in reasons}


def delta(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The outcome/reason series that moved since ``before``, and by how much."""
    return {key: value - before[key] for key, value in every_attempt().items() if value != before[key]}


# -- refresh outcomes --------------------------------------------------------------------------------------


def test_a_run_counts_each_committed_outcome_once_with_its_reason(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="1")
    for user in ("a", "b", "c", "d"):
        connect(keeper, user)
    sim.inject_fault("token", "invalid_grant_401")
    sim.inject_fault("token", "status", status=503)
    before = every_attempt()
    latency_before = local("lightkeeper_refresh_request_seconds_count")
    runs_before = local("lightkeeper_run_duration_seconds_count")

    run = keeper.refresh(trigger="manual")

    assert (run.refreshed, run.expired, run.errors) == (2, 1, 1)
    assert delta(before) == {("refreshed", "none"): 2, ("expired", "invalid_grant"): 1, ("error", "server_error"): 1}
    assert local("lightkeeper_refresh_request_seconds_count") - latency_before == 4  # one per token request
    assert local("lightkeeper_run_duration_seconds_count") - runs_before == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "timeout", "seconds": 3.0}, "timeout"),
        ({"kind": "reset"}, "unreachable"),
        ({"kind": "garbage"}, "bad_response"),
        ({"kind": "rate_limit", "retry_after": 3600}, "rate_limited"),
    ],
    ids=["timeout", "reset", "garbage", "rate_limit"],
)
def test_each_failure_is_counted_under_its_reason(
    make_keeper: KeeperFactory, sim: SimulatorControl, fault: dict[str, object], reason: str
) -> None:
    keeper = make_keeper(HTTP_TIMEOUT_S="1", REFRESH_MAX_RETRY_AFTER_S="1")
    record = connect(keeper, "a")
    sim.inject_fault("token", **fault)  # type: ignore[arg-type]
    before = every_attempt()
    run = keeper.refresh(connection_id=record.id)
    assert run.errors == 1
    assert delta(before) == {("error", reason): 1}


def test_an_on_demand_refresh_is_counted_and_a_cached_token_is_not(
    make_keeper: KeeperFactory, clock: FakeClock
) -> None:
    keeper = make_keeper(clock=clock)
    record = connect(keeper, "a")
    before = every_attempt()
    keeper.fresh_token(record.id)  # still valid: no refresh, nothing counted
    assert delta(before) == {}
    clock.advance(hours=2)
    keeper.fresh_token(record.id)
    keeper.fresh_token(record.id)  # the pair just committed serves the second call
    assert delta(before) == {("refreshed", "none"): 1}


class _LeaseTakenOver(httpx2.BaseTransport):
    """While the token request is in flight, our lease runs out and another process takes the connection,
    as when this process is paused past its lease: the answer arrives, but the write must land nowhere."""

    def __init__(self, inner: httpx2.BaseTransport, other: Keeper, connection_id: int) -> None:
        self.inner, self.other, self.connection_id = inner, other, connection_id
        self.armed = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        if self.armed and request.url.path.endswith("/oauth/token"):
            self.armed = False
            connections = self.other.store.connections
            with self.other.store.engine.begin() as conn:  # the lease ran out while we were paused
                conn.execute(
                    update(connections_table)
                    .where(connections_table.c.id == self.connection_id)
                    .values(acquired_until=dialect.now_plus(conn, -1.0))
                )
            assert connections.acquire(self.connection_id, owner="other", lease=timedelta(seconds=60)) is not None
        return response


def test_a_write_that_lost_its_lease_is_counted_skipped_never_refreshed(
    make_keeper: KeeperFactory, clock: FakeClock
) -> None:
    other = make_keeper(clock=clock)
    record = connect(other, "a")
    transport = _LeaseTakenOver(httpx2.HTTPTransport(), other, record.id)
    paused = make_keeper(transport=transport, clock=clock, TOKEN_WAIT_S="1")
    clock.advance(hours=2)
    transport.armed = True
    before = every_attempt()
    # Its pair landed nowhere, and the stored token is the expired one: the caller waits for the new holder
    # (which, here, never finishes) instead of being handed a token that no longer works.
    with pytest.raises(ProviderUnavailable, match="another caller is refreshing it"):
        paused.fresh_token(record.id)
    assert delta(before) == {("skipped", "lease_lost"): 1}
    saved = other.connection(record.id)
    assert saved.token_version == record.token_version  # nothing of ours landed


# -- API requests ------------------------------------------------------------------------------------------


def requests(route: str, method: str, status: str) -> float:
    return local(REQUESTS, {"route": route, "method": method, "status": status})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_requests_are_labelled_by_route_template_never_the_path(app_server: AppServer) -> None:
    record = app_server.connect("alice")
    template = "/api/connections/{connection_id}"
    series = [(template, "200"), (template, "404"), ("<unmatched>", "404"), ("<unmatched>", "401")]
    before = [requests(route, "GET", status) for route, status in series]
    app_server.client.get(f"/api/connections/{record.id}")
    app_server.client.get("/api/connections/987654")  # routed, then not found: its template
    app_server.client.get("/no/such/page/987654")
    app_server.anonymous().get(f"/api/connections/{record.id}")  # refused before routing
    after = [requests(route, "GET", status) for route, status in series]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]

    page = parse(app_server.client.get("/metrics").text)
    routes = {dict(labels).get("route") for name, labels in page if name == REQUESTS}
    assert template in routes and "/oauth/callback" in routes
    assert not [route for route in routes if route and ("987654" in route or str(record.id) in route.split("/"))]


# -- gauges read from the database ---------------------------------------------------------------------


def gauges(keeper: Keeper) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for family in keeper.gauges.collect() for s in family.samples
    }


def test_two_processes_on_one_database_export_the_same_gauges(make_keeper: KeeperFactory, clock: FakeClock) -> None:
    first, second = make_keeper(clock=clock), make_keeper(clock=clock)
    records = [connect(first, user) for user in ("a", "b", "c")]
    with first.store.engine.begin() as conn:  # one connection needs its merchant; one was refreshed long ago
        conn.execute(update(connections_table).where(connections_table.c.id == records[0].id).values(status="expired"))
        conn.execute(
            update(connections_table)
            .where(connections_table.c.id == records[1].id)
            .values(last_token_refresh_at=clock() - timedelta(days=20))
        )
    clock.advance(hours=1)

    seen = gauges(first)
    assert seen == gauges(second)
    r_series = {"provider": "r-series"}
    assert sample(seen, "lightkeeper_connections", status="connected", **r_series) == 2
    assert sample(seen, "lightkeeper_connections", status="expired", **r_series) == 1
    assert {sample(seen, "lightkeeper_connections", status=s, **r_series) for s in ("error", "disconnected")} == {0}
    # Every known provider is a label value, zeros included: a closed set.
    assert {sample(seen, "lightkeeper_connections", status=s.value, provider="x-series") for s in Status} == {0}
    assert sample(seen, "lightkeeper_oldest_refresh_token_age_seconds") == (timedelta(days=20, hours=1)).total_seconds()
    assert sample(seen, "lightkeeper_refresh_token_max_age_seconds") == timedelta(days=30).total_seconds()


def test_database_gauges_are_read_once_per_cache_period() -> None:
    reads: list[int] = []
    now = [100.0]

    def read() -> DatabaseSummary:
        reads.append(1)
        return DatabaseSummary({"connected": len(reads)}, None, {("r-series", "connected"): len(reads)})

    collector = DatabaseCollector(
        read,
        statuses=[s.value for s in Status],
        providers=["r-series"],
        now=FakeClock(),
        cache_s=5.0,
        monotonic=lambda: now[0],
    )
    assert list(collector.describe()) and not reads  # registering reads nothing

    def connected() -> float:
        [family, *_] = list(collector.collect())
        return next(s.value for s in family.samples if s.labels == {"provider": "r-series", "status": "connected"})

    assert (connected(), connected()) == (1, 1)
    now[0] += 4.9
    assert connected() == 1
    now[0] += 0.1
    assert connected() == 2 and len(reads) == 2


def test_an_unreadable_database_drops_its_gauges_not_the_whole_page() -> None:
    def read() -> DatabaseSummary:
        raise ConnectionRefusedError("database down")

    collector = DatabaseCollector(read, statuses=["connected"], providers=["r-series"], now=FakeClock())
    assert list(collector.collect()) == []

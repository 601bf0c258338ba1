"""The proxy and the Python client's verbs for X-Series stores: the store's own ``api/``, nothing else, pages by
``version.max``, the fixed window shared by every keeper of a deployment, HTTP-date ``Retry-After`` holds, and the
same token behaviour as R-Series (one refresh on a 401, 403 after a second, 409 once the grant is dead).

Through the real app over loopback against the simulator's X-Series mode (``/x/{domain_prefix}``), on SQLite and
PostgreSQL; the deployment configures both providers. Stores are seeded as the callback stores them (account id
= domain prefix, strict rotation), or connected through the real consent flow.
"""

from __future__ import annotations

import asyncio
import posixpath
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.errors import InvalidPath, StockUnsupported
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.web.browser import continue_to_lightspeed
from tests.proxy.conftest import AppServer, Merchant, ServeApp, new_api_key
from tests.proxy.test_confinement import PIECES, raw_get
from tests.xseries.support import seed_x_connections, x_env

PRODUCTS = "api/2.0/products"
RETAILER = "api/2.0/retailer"
#: The first two stores the reset simulator seeds.
FIRST, SECOND = "store100001", "store100002"


@pytest.fixture
def x_app(serve_app: ServeApp, simulator_server: SimulatorServer) -> Iterator[AppServer]:
    """The app of a deployment with both providers, X-Series pointed at the simulator's ``/x``."""
    with serve_app(LIGHTKEEPER_API_KEY=new_api_key(), **x_env(simulator_server.url)) as server:
        yield server


def seeded(server: AppServer, sim: SimulatorControl, count: int = 1) -> list[Merchant]:
    ids = seed_x_connections(server.keeper, sim, count)
    sim.clear_requests()
    return [Merchant(cid, server.keeper.connection(cid).account_id, server) for cid in ids]


@pytest.fixture
def store(x_app: AppServer, sim: SimulatorControl) -> Merchant:
    """One X-Series store's connection (``account_id`` is its domain prefix)."""
    [merchant] = seeded(x_app, sim)
    return merchant


def reached(sim: SimulatorControl) -> list[str]:
    return [str(entry["path"]) for entry in sim.requests()]


def in_store(path: str, prefix: str) -> bool:
    """Whether a path the simulator received stays in the store's ``api/``, read as a server would (decoded,
    normalised)."""
    for candidate in (path, unquote(path), unquote(unquote(path))):
        if "\\" in candidate or not posixpath.normpath(candidate).startswith(f"/x/{prefix}/api/"):
            return False
    return True


# -- forwarding ---------------------------------------------------------------------------------------------


def test_requests_reach_the_stores_own_api_and_its_window_headers_come_back(
    store: Merchant, sim: SimulatorControl
) -> None:
    answer = store.call("GET", f"{RETAILER}?fields=name")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["domain_prefix"] == store.account_id
    assert answer.headers["x-ratelimit-limit"] == "350"  # the simulator's default store: one register
    assert answer.headers["x-ratelimit-remaining"] == "349"
    assert int(answer.headers["x-ratelimit-reset"]) > time.time()
    [sent] = sim.requests()
    assert (sent["method"], sent["path"], sent["query"]) == ("GET", f"/x/{store.account_id}/{RETAILER}", "fields=name")
    products = store.call("GET", PRODUCTS).json()["data"]
    outlet = sim.x_stores()[0]["outlet_ids"][0]
    stock = {"details": {"inventory": [{"outlet_id": outlet, "current_amount": 21}]}}
    put = store.call("PUT", f"api/2.1/products/{products[0]['id']}", json=stock)
    assert put.status_code == 200, put.text
    inventory = sim.x_product(store.account_id, products[0]["id"])["inventory"]
    assert {"outlet_id": outlet, "current_amount": 21} in inventory


def test_a_store_connected_by_the_consent_flow_beside_an_r_series_account(
    x_app: AppServer, sim: SimulatorControl
) -> None:
    made = x_app.client.post("/api/connect-sessions", json={"user_id": "x-merchant", "provider": "x-series"})
    assert made.status_code == 201, made.text
    with httpx2.Client(timeout=10) as browser:
        to_lightspeed = continue_to_lightspeed(browser, made.json()["url"])
        back = browser.get(to_lightspeed.headers["location"])  # the simulator's /x/connect approves
        assert back.status_code == 302, back.text
        assert browser.get(back.headers["location"]).status_code == 200  # our callback
    [x_record] = x_app.keeper.connections(user_id="x-merchant")
    r_record = x_app.connect("r-merchant")
    sim.clear_requests()
    x_answer = x_app.client.get(f"/api/connections/{x_record.id}/lightspeed/{RETAILER}")
    r_answer = x_app.client.get(f"/api/connections/{r_record.id}/lightspeed/Item/1.json")
    assert (x_answer.status_code, r_answer.status_code) == (200, 200)
    assert "x-ratelimit-limit" not in r_answer.headers and "x-ls-api-bucket-level" in r_answer.headers
    assert reached(sim) == [
        f"/x/{x_record.account_id}/{RETAILER}",
        f"/API/V3/Account/{r_record.account_id}/Item/1.json",
    ]


# -- confinement --------------------------------------------------------------------------------------------

ATTACKS = [
    "",
    "2.0/products",
    "API/2.0/products",
    "api",
    "apix/2.0/products",
    "api;x/2.0/products",
    "./api/2.0/products",
    "api//2.0/products",
    "api/../api/2.0/products",
    "api/%2e%2e/%2e%2e/store100002/api/2.0/products",
    "..%2f..%2fstore100002%2fapi%2f2.0%2fproducts",
    "api%2F2.0%2Fproducts",
    "api/2.0/products/..%5c..%5c",
    "%252e%252e/store100002/api/2.0/products",
    "..",
    "../store100002/api/2.0/products",
    "https://evil.example/api/2.0/products",
    "//evil.example/api/2.0/products",
    "@evil.example/api/2.0/products",
    "api\\2.0\\products",
    "api/2.0/products%00",
]


@pytest.mark.parametrize("path", ATTACKS)
def test_paths_outside_the_stores_api_are_refused_and_send_nothing(
    x_app: AppServer, sim: SimulatorControl, path: str
) -> None:
    own, _other = seeded(x_app, sim, 2)
    assert own.account_id == FIRST
    status = raw_get(own, f"{own.base}/{path}".encode())
    assert status == 400, path
    assert reached(sim) == []


def test_paths_under_api_are_sent_re_encoded_to_the_store(store: Merchant, sim: SimulatorControl) -> None:
    for path in (PRODUCTS, "api/2.0/%70roducts", "api/2.0/products?page_size=2"):
        sim.clear_requests()
        assert store.call("GET", path).status_code == 200, path
        assert reached(sim) == [f"/x/{store.account_id}/{PRODUCTS}"]


def test_the_account_route_itself_is_invalid_path(store: Merchant, sim: SimulatorControl) -> None:
    for url in (store.base, f"{store.base}/"):
        answer = store.server.client.get(url)
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_path"
        assert "api/" in answer.json()["message"]
    assert reached(sim) == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from([*PIECES, "api", "2.0", "products", FIRST, SECOND, "x"]), min_size=1, max_size=7))
def test_no_accepted_path_reaches_another_store_or_host(
    x_app: AppServer, sim: SimulatorControl, pieces: list[str]
) -> None:
    own = Merchant(1, FIRST, x_app)
    if not x_app.keeper.connections():
        seeded(x_app, sim, 2)
    for path in ("/".join(pieces), "api/" + "/".join(pieces), "".join(pieces)):
        sim.clear_requests()
        status = raw_get(own, f"{own.base}/{path}".encode("utf-8", "surrogateescape"))
        sent = reached(sim)
        assert all(in_store(p, FIRST) for p in sent), (path, sent)
        if status == 400:
            assert sent == [], (path, sent)
    assert sim.x_stats()["x_api_foreign_store"] == 0


# -- pages --------------------------------------------------------------------------------------------------


def test_link_follows_version_max_until_a_page_has_no_data(store: Merchant, sim: SimulatorControl) -> None:
    total = sim.add_products(store.account_id, 12)  # and the store's demo products
    url: str | None = f"{store.base}/{PRODUCTS}?page_size=5&fields=id"
    seen: list[str] = []
    afters: list[int] = []
    pages = 0
    while url is not None:
        answer = store.server.client.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += [product["id"] for product in body["data"]]
        pages += 1
        link = answer.headers.get("link")
        if not body["data"]:
            assert link is None  # an empty page is the end
            url = None
            continue
        assert link is not None and link.endswith('>; rel="next"')
        target = link[1 : link.index(">")]
        assert target.startswith(f"{store.base}/{PRODUCTS}?")
        query = parse_qs(urlsplit(target).query)
        assert query["page_size"] == ["5"] and query["fields"] == ["id"]  # the caller's parameters are kept
        assert query["after"] == [str(body["version"]["max"])]
        afters.append(body["version"]["max"])
        url = target
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 5) + 1
    assert afters == sorted(afters)


# -- pacing -------------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_keepers_share_a_stores_window_without_a_429(
    serve_app: ServeApp, simulator_server: SimulatorServer, sim: SimulatorControl
) -> None:
    """Two keepers (as two processes: own engines, pacers and bookings) on one PostgreSQL database, one store
    with a window of 50 requests per 3 s: 110 requests at once go out in three windows, none over."""
    window_s, requests, callers = 3, 110, 8
    sim.configure(x_window_s=window_s, x_registers=0)  # 300 x 0 + 50 = 50 a window
    env = {"LIGHTKEEPER_API_KEY": new_api_key(), "PROXY_MAX_WAIT_S": "60", **x_env(simulator_server.url)}
    with ExitStack() as stack:
        first = stack.enter_context(serve_app(**env))
        second = stack.enter_context(serve_app(**env))
        [store] = seeded(first, sim)
        clients = [
            stack.enter_context(httpx2.Client(base_url=server.url, headers=dict(server.client.headers), timeout=60))
            for server in (first, second)
        ]
        started = time.monotonic()
        # The first answer teaches the store's limit (below the documented minimum the model assumes until then).
        assert clients[0].get(f"{store.base}/{RETAILER}").status_code == 200
        with ThreadPoolExecutor(callers) as pool:
            statuses = list(
                pool.map(lambda n: clients[n % 2].get(f"{store.base}/{RETAILER}").status_code, range(requests))
            )
        elapsed = time.monotonic() - started
    assert statuses == [200] * requests
    assert sim.x_stats(store.account_id)["x_window_violations"] == 0
    assert sim.x_stats()["x_rate_limited"] == 0
    assert sim.x_stats(store.account_id)["api_requests"] == requests + 1
    assert elapsed >= 2 * window_s - 0.2  # 111 requests of 50 a window: two windows had to end first
    assert elapsed < 6 * window_s


def test_a_wait_past_the_cap_is_429_at_once_and_sends_nothing(store: Merchant, sim: SimulatorControl) -> None:
    sim.configure(x_window_s=300, x_registers=0)
    first = store.call("GET", RETAILER)  # the first answer: 50 a window, 49 left
    assert first.headers["x-ratelimit-remaining"] == "49"
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _n: store.call("GET", RETAILER).status_code, range(49)))
    assert statuses == [200] * 49
    sim.clear_requests()
    started = time.monotonic()
    refused = store.call("GET", RETAILER)
    assert time.monotonic() - started < 2.0
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 250 <= int(refused.headers["retry-after"]) <= 302  # until the window ends
    assert reached(sim) == []
    assert sim.x_stats(store.account_id)["x_window_violations"] == 0


def test_an_http_date_retry_after_holds_the_store_for_the_whole_deployment(
    x_app: AppServer, serve_app: ServeApp, simulator_server: SimulatorServer, sim: SimulatorControl
) -> None:
    [store] = seeded(x_app, sim)
    sim.inject_fault("x_api", "rate_limit", retry_after=3600)
    started = time.monotonic()
    answer = store.call("GET", RETAILER)
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 429  # too long to wait out: answered as it came
    until = parsedate_to_datetime(answer.headers["retry-after"]).timestamp()  # an HTTP date, passed through
    assert 3590 < until - time.time() <= 3601
    with serve_app(LIGHTKEEPER_API_KEY=x_app.api_key, **x_env(simulator_server.url)) as other:
        refused = other.client.get(f"{store.base}/{RETAILER}")  # another keeper: held too, nothing sent
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 3500 < int(refused.headers["retry-after"]) <= 3602
    assert len(sim.requests()) == 1


def test_a_short_http_date_retry_after_is_waited_out_and_retried_once(store: Merchant, sim: SimulatorControl) -> None:
    sim.inject_fault("x_api", "rate_limit", retry_after=2)
    started = time.monotonic()
    answer = store.call("GET", RETAILER)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started >= 1.5  # the date (rounded up to its second) was honoured
    assert len(sim.requests()) == 2


# -- tokens -------------------------------------------------------------------------------------------------


def test_a_refused_token_costs_one_refresh_and_one_retry(store: Merchant, sim: SimulatorControl) -> None:
    before = sim.x_stats()["x_refreshes"]
    sim.expire_access_tokens(store.account_id)  # not near expiry for us: only X-Series' 401 says so
    answer = store.call("GET", RETAILER)
    assert answer.status_code == 200, answer.text
    assert sim.x_stats()["x_refreshes"] == before + 1
    assert sim.reuse() == 0  # strict rotation: one exchange of each refresh token, ever
    assert len(sim.requests()) == 2


def test_a_second_401_is_403_and_a_dead_grant_is_409(store: Merchant, sim: SimulatorControl) -> None:
    before = sim.x_stats()["x_refreshes"]
    sim.inject_fault("x_api", "status", count=2, status=401)
    denied = store.call("GET", RETAILER)
    assert denied.status_code == 403
    assert denied.json()["code"] == "lightspeed_access_denied"
    assert sim.x_stats()["x_refreshes"] == before + 1  # one refresh, never a loop
    sim.revoke_account(store.account_id)
    sim.clear_requests()
    expired = store.call("GET", RETAILER)  # the token is refused, the refresh finds the grant dead
    assert expired.status_code == 409
    assert expired.json()["code"] == "connection_expired"
    assert store.call("GET", RETAILER).status_code == 409
    assert len(sim.requests()) == 1  # the first call's 401; the second sent nothing


# -- the Python client's verbs -------------------------------------------------------------------------------


def test_the_client_verbs_speak_the_stores_api(store: Merchant, sim: SimulatorControl) -> None:
    sim.add_products(store.account_id, 10)
    outlet = sim.x_stores()[0]["outlet_ids"][0]
    with store.server.keeper.lightspeed(store.connection_id) as ls:
        assert ls.get(RETAILER)["data"]["domain_prefix"] == store.account_id
        products = list(ls.paginate(PRODUCTS, {"page_size": "4"}))
        one = products[3]["id"]
        assert ls.get(f"api/2.0/products/{one}")["data"]["id"] == one
        stock = {"details": {"inventory": [{"outlet_id": outlet, "current_amount": 9}]}}
        ls.put(f"api/2.1/products/{one}", json=stock)
        sim.clear_requests()
        for refused in ("", "2.0/products", "api/../store100002/api/2.0/products"):
            with pytest.raises(InvalidPath):
                ls.get(refused)
        with pytest.raises(StockUnsupported):
            ls.set_stock(item_id=1, shop_id=1, qoh=3)  # R-Series' Item API: not for a store
    assert len(products) == len({p["id"] for p in products}) == 15
    assert {"outlet_id": outlet, "current_amount": 9} in sim.x_product(store.account_id, one)["inventory"]
    assert reached(sim) == []  # the refusals sent nothing


def test_pages_refresh_once_when_a_token_is_refused_midway(store: Merchant, sim: SimulatorControl) -> None:
    sim.add_products(store.account_id, 10)
    before = sim.x_stats()["x_refreshes"]
    with store.server.keeper.lightspeed(store.connection_id) as ls:
        pages = ls.pages(PRODUCTS, "page_size=4")  # parameters as a query string, as a Link gives them
        first = next(pages)
        sim.expire_access_tokens(store.account_id)
        rest = [product for page in pages for product in page]
    assert len(first) + len(rest) == 15
    assert sim.x_stats()["x_refreshes"] == before + 1
    assert sim.reuse() == 0
    afters = [parse_qs(str(entry["query"])).get("after") for entry in sim.requests()]
    assert afters[0] is None and all(after is not None for after in afters[1:])


def test_async_client_verbs_paginate_a_store(store: Merchant, sim: SimulatorControl) -> None:
    sim.add_products(store.account_id, 6)

    async def main() -> tuple[dict[str, Any], list[str]]:
        async with store.server.keeper.lightspeed(store.connection_id) as ls:
            retailer = await ls.get(RETAILER)
            ids = [product["id"] async for product in ls.paginate(PRODUCTS, {"page_size": "5"})]
            return retailer, ids

    retailer, ids = asyncio.run(main())
    assert retailer["data"]["domain_prefix"] == store.account_id
    assert len(ids) == len(set(ids)) == 11


def test_the_client_and_the_proxy_book_the_same_window(store: Merchant, sim: SimulatorControl) -> None:
    """Client calls in this process and proxied calls at once, 60 into a window of 50: neither side goes over."""
    sim.configure(x_window_s=2, x_registers=0)
    assert store.call("GET", RETAILER).status_code == 200  # the first answer teaches the limit
    errors: list[BaseException] = []

    def client_calls() -> None:
        try:
            with store.server.keeper.lightspeed(store.connection_id) as ls:
                for _ in range(30):
                    ls.get(RETAILER)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client_calls)
    thread.start()
    headers = dict(store.server.client.headers)
    with (
        httpx2.Client(base_url=store.server.url, headers=headers, timeout=30) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        statuses = list(pool.map(lambda _n: client.get(f"{store.base}/{RETAILER}").status_code, range(30)))
    thread.join()
    assert errors == []
    assert statuses == [200] * 30
    assert sim.x_stats(store.account_id)["x_window_violations"] == 0

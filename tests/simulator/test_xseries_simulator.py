"""The X-Series (formerly Vend) simulator under ``/x``: connect, strict rotation, the window limit, products.

Real HTTP against a real simulator on loopback (``api_support``'s module server, reset to the default config
before each test). The wire contract pinned here is what the production X-Series client is written against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.simulator import SimulatorConfig
from tests.simulator.api_support import Sim, module_sim, sim

__all__ = ["module_sim", "sim"]

DEFAULTS = SimulatorConfig()
CLIENT = {"client_id": DEFAULTS.client_id, "client_secret": DEFAULTS.client_secret}
CALLBACK = "http://127.0.0.1:8765/x/callback"
STATE = "state-0123456789"


@dataclass
class Pair:
    prefix: str
    account_id: str
    access: str
    refresh: str
    body: dict[str, Any]

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


@pytest.fixture
def x(sim: Sim) -> Sim:
    """The simulator with ``CALLBACK`` registered for the default client (so others are refused)."""
    sim.control.register_redirect_uri(CALLBACK)
    return sim


# ----------------------------------------------------------------- helpers


def connect(sim: Sim, **params: str | None) -> httpx2.Response:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT["client_id"],
        "redirect_uri": CALLBACK,
        "state": STATE,
    }
    query |= params
    return sim.http.get("/x/connect", params={k: v for k, v in query.items() if v is not None})


def callback_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{CALLBACK}?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def token(sim: Sim, prefix: str, **fields: str) -> httpx2.Response:
    return sim.http.post(f"/x/{prefix}/api/1.0/token", data={**CLIENT, **fields})


def exchange(sim: Sim, prefix: str, code: str, **extra: str) -> httpx2.Response:
    fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, **extra}
    return token(sim, prefix, **fields)


def refresh(sim: Sim, prefix: str, refresh_token: str) -> httpx2.Response:
    return token(sim, prefix, grant_type="refresh_token", refresh_token=refresh_token)


def pair_of(response: httpx2.Response, account_id: str = "") -> Pair:
    assert response.status_code == 200, response.text
    body = response.json()
    return Pair(body["domain_prefix"], account_id, body["access_token"], body["refresh_token"], body)


def connected(sim: Sim) -> Pair:
    params = callback_params(connect(sim))
    pair = pair_of(exchange(sim, params["domain_prefix"], params["code"]))
    store = next(s for s in sim.control.x_stores() if s["domain_prefix"] == pair.prefix)
    pair.account_id = store["account_id"]
    return pair


def seeded(sim: Sim) -> Pair:
    first = sim.control.seed_x(1)[0]
    return Pair(first["domain_prefix"], first["account_id"], first["access_token"], first["refresh_token"], first)


def refreshed(sim: Sim, pair: Pair) -> Pair:
    new = pair_of(refresh(sim, pair.prefix, pair.refresh), pair.account_id)
    assert new.prefix == pair.prefix
    return new


def api(sim: Sim, pair: Pair, path: str, prefix: str | None = None, **kwargs: Any) -> httpx2.Response:
    method = kwargs.pop("method", "GET")
    headers = {**pair.bearer, **kwargs.pop("headers", {})}
    return sim.http.request(method, f"/x/{prefix or pair.prefix}/api/{path}", headers=headers, **kwargs)


def assert_invalid_grant(response: httpx2.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def retry_after_epoch(response: httpx2.Response) -> float:
    value = response.headers["retry-after"]
    assert not value.strip().isdigit(), f"Retry-After must be an HTTP date, got {value!r}"
    assert value.endswith(" GMT")
    return parsedate_to_datetime(value).timestamp()


# ----------------------------------------------------------------- connect


def test_connect_approves_a_new_store_and_redirects_with_code_prefix_and_state(x: Sim) -> None:
    params = callback_params(connect(x))
    assert set(params) == {"code", "domain_prefix", "state"}
    assert params["state"] == STATE
    prefix = params["domain_prefix"]
    assert prefix == prefix.lower() and prefix.startswith("store")
    [store] = x.control.x_stores()
    assert store["domain_prefix"] == prefix
    assert prefix == f"store{store['account_id']}"
    assert store["name"]


def test_connect_for_a_given_existing_store(x: Sim) -> None:
    first = seeded(x)
    x.control.authorize_mode("approve", first.prefix)
    assert callback_params(connect(x))["domain_prefix"] == first.prefix
    x.control.authorize_mode("approve", first.account_id)
    assert callback_params(connect(x))["domain_prefix"] == first.prefix
    assert len(x.control.x_stores()) == 1


def test_connect_never_hands_an_r_series_account_to_x_series(x: Sim) -> None:
    r_account = x.control.seed(1)[0]["account_id"]
    x.control.authorize_mode("approve", r_account)
    prefix = callback_params(connect(x))["domain_prefix"]
    assert prefix != f"store{r_account}"
    assert [s["domain_prefix"] for s in x.control.x_stores()] == [prefix]


def test_connect_deny_redirects_with_access_denied_and_state(x: Sim) -> None:
    x.control.authorize_mode("deny")
    assert callback_params(connect(x)) == {"error": "access_denied", "state": STATE}
    assert x.control.x_stores() == []


@pytest.mark.parametrize("state", [None, "", "1234567"])
def test_connect_needs_a_state_of_eight_characters(x: Sim, state: str | None) -> None:
    response = connect(x, state=state)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert connect(x, state="12345678").status_code == 302


@pytest.mark.parametrize(
    "params",
    [
        {"redirect_uri": "http://127.0.0.1:9999/elsewhere"},
        {"redirect_uri": None},
        {"client_id": "nobody"},
    ],
)
def test_connect_refuses_unregistered_redirects_and_clients(x: Sim, params: dict[str, Any]) -> None:
    response = connect(x, **params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert x.control.x_stores() == []


# ----------------------------------------------------------- code exchange


def test_code_exchange_answers_expires_as_the_truth_and_a_skewed_expires_in(x: Sim) -> None:
    params = callback_params(connect(x))
    response = exchange(x, params["domain_prefix"], params["code"])
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {"access_token", "token_type", "expires", "expires_in", "refresh_token", "domain_prefix", "scope"}
    assert set(body) == expected
    assert body["token_type"] == "Bearer"
    assert body["domain_prefix"] == params["domain_prefix"]
    assert isinstance(body["scope"], str)
    assert isinstance(body["expires"], int) and isinstance(body["expires_in"], int)
    assert abs(body["expires"] - (time.time() + 86400)) < 10
    assert body["expires_in"] == 86400 + 518400  # 7 days claimed, 1 day real
    assert "." not in body["access_token"]  # opaque, not a JWT
    assert body["access_token"] != body["refresh_token"]
    assert x.control.x_stats()["x_code_exchanges"] == 1


def test_expires_follows_the_knobs(x: Sim) -> None:
    x.control.configure(x_access_token_ttl=120, x_expires_in_skew_s=-60)
    body = seeded(x).body
    assert abs(body["expires"] - (time.time() + 120)) < 10
    assert body["expires_in"] == 60


def test_a_code_is_single_use(x: Sim) -> None:
    params = callback_params(connect(x))
    pair_of(exchange(x, params["domain_prefix"], params["code"]))
    assert_invalid_grant(exchange(x, params["domain_prefix"], params["code"]))


def test_a_code_is_bound_to_its_store_prefix(x: Sim) -> None:
    other = seeded(x)
    params = callback_params(connect(x))
    assert_invalid_grant(exchange(x, other.prefix, params["code"]))
    # A refused attempt does not use the code up.
    pair_of(exchange(x, params["domain_prefix"], params["code"]))


def test_a_code_needs_its_redirect_uri_and_expires(x: Sim) -> None:
    params = callback_params(connect(x))
    prefix, code = params["domain_prefix"], params["code"]
    missing = token(x, prefix, grant_type="authorization_code", code=code)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert_invalid_grant(exchange(x, prefix, code, redirect_uri="http://127.0.0.1:8765/other"))
    x.control.advance(prefix, 601)
    assert_invalid_grant(exchange(x, prefix, code))


def test_a_json_body_is_refused(x: Sim) -> None:
    params = callback_params(connect(x))
    fields = {**CLIENT, "grant_type": "authorization_code", "code": params["code"], "redirect_uri": CALLBACK}
    response = x.http.post(f"/x/{params['domain_prefix']}/api/1.0/token", json=fields)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    pair_of(exchange(x, params["domain_prefix"], params["code"]))  # still unused


def test_client_credentials_are_checked(x: Sim) -> None:
    pair = seeded(x)
    wrong = x.http.post(
        f"/x/{pair.prefix}/api/1.0/token",
        data={"client_id": CLIENT["client_id"], "client_secret": "nope", "grant_type": "refresh_token"}
        | {"refresh_token": pair.refresh},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    unknown = x.http.post(
        f"/x/{pair.prefix}/api/1.0/token",
        data={
            "client_id": "nobody",
            "client_secret": "x",
            "grant_type": "refresh_token",
            "refresh_token": pair.refresh,
        },
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    # Basic auth alone is not read: the credentials belong in the body.
    basic = x.http.post(
        f"/x/{pair.prefix}/api/1.0/token",
        data={"grant_type": "refresh_token", "refresh_token": pair.refresh},
        auth=(CLIENT["client_id"], CLIENT["client_secret"]),
    )
    assert basic.status_code == 401
    assert x.control.x_stats()["x_invalid_client"] == 3
    refreshed(x, pair)  # none of that touched the token


# ---------------------------------------------------------- strict rotation


def test_rotation_is_strict_and_a_reuse_revokes_the_connection(x: Sim) -> None:
    first = connected(x)
    second = refreshed(x, first)
    assert second.refresh != first.refresh and second.access != first.access
    assert api(x, first, "2.0/retailer").status_code == 401  # the old access token died with its pair
    assert api(x, second, "2.0/retailer").status_code == 200

    assert_invalid_grant(refresh(x, first.prefix, first.refresh))  # at once, no grace window
    assert x.control.reuse(first.account_id) == 1
    assert x.control.reuse(first.prefix) == 1
    assert x.control.reuse() == 1
    stats = x.control.x_stats()
    assert stats["x_reuse"] == 1 and stats["x_family_revocations"] == 1 and stats["x_refreshes"] == 1
    # The reuse also ended the live pair.
    assert api(x, second, "2.0/retailer").status_code == 401
    assert_invalid_grant(refresh(x, second.prefix, second.refresh))
    assert x.control.reuse() == 1  # never exchanged: refused, but no reuse
    store = x.control.x_stats(first.prefix)
    assert store["refreshes"] == 1 and store["reuse"] == 1 and store["invalid_grant"] == 2
    assert x.control.account(first.account_id)["refreshes"] == 1


def test_without_family_revocation_the_live_pair_survives_a_reuse(x: Sim) -> None:
    x.control.configure(x_reuse_revokes_family=False)
    first = seeded(x)
    second = refreshed(x, first)
    assert_invalid_grant(refresh(x, first.prefix, first.refresh))
    assert x.control.reuse(first.prefix) == 1
    assert api(x, second, "2.0/retailer").status_code == 200
    refreshed(x, second)


def test_a_refresh_token_of_another_store_is_invalid_here(x: Sim) -> None:
    one, two = seeded(x), seeded(x)
    assert_invalid_grant(refresh(x, two.prefix, one.refresh))
    refreshed(x, one)  # still good at its own store
    assert x.control.reuse() == 0


def test_series_do_not_mix(x: Sim) -> None:
    x_pair = seeded(x)
    r_pair = x.control.seed(1)[0]
    r_bearer = {"Authorization": f"Bearer {r_pair['access_token']}"}
    assert x.http.get(f"/x/{x_pair.prefix}/api/2.0/retailer", headers=r_bearer).status_code == 401
    assert x.http.get("/API/V3/Account.json", headers=x_pair.bearer).status_code == 401
    assert_invalid_grant(refresh(x, x_pair.prefix, r_pair["refresh_token"]))
    r_refresh = x.http.post(
        "/auth/oauth/token", data={**CLIENT, "grant_type": "refresh_token", "refresh_token": x_pair.refresh}
    )
    assert r_refresh.status_code == 400 and r_refresh.json()["error"] == "invalid_grant"
    refreshed(x, x_pair)


def test_an_idle_refresh_token_expires_on_the_simulator_clock(x: Sim) -> None:
    x.control.configure(x_refresh_idle_s=1000)
    pair = seeded(x)
    x.control.advance(pair.prefix, 990)
    pair = refreshed(x, pair)  # idle 990 s: alive; its successor starts a new idle time
    x.control.advance_all(1001)
    assert_invalid_grant(refresh(x, pair.prefix, pair.refresh))
    assert x.control.reuse() == 0


def test_the_default_idle_limit_is_30_days(x: Sim) -> None:
    pair = seeded(x)
    x.control.advance(pair.account_id, 30 * 86400 + 1)
    assert_invalid_grant(refresh(x, pair.prefix, pair.refresh))


def test_revoke_account_kills_a_store_s_tokens(x: Sim) -> None:
    pair = seeded(x)
    x.control.revoke_account(pair.prefix)
    assert api(x, pair, "2.0/retailer").status_code == 401
    assert_invalid_grant(refresh(x, pair.prefix, pair.refresh))


def test_an_expired_access_token_is_refused(x: Sim) -> None:
    pair = seeded(x)
    x.control.advance(pair.prefix, 86400)
    response = api(x, pair, "2.0/retailer")
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    refreshed(x, pair)


# -------------------------------------------------------------------- API


def test_retailer(x: Sim) -> None:
    pair = seeded(x)
    response = api(x, pair, "2.0/retailer")
    assert response.status_code == 200
    data = response.json()["data"]
    store = x.control.x_stores()[0]
    assert data == {"id": store["retailer_id"], "name": store["name"], "domain_prefix": pair.prefix}


def test_a_token_of_another_store_is_refused_on_the_api(x: Sim) -> None:
    one, two = seeded(x), seeded(x)
    response = api(x, one, "2.0/retailer", prefix=two.prefix)
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    assert "x-ratelimit-limit" not in response.headers  # refused before it is counted
    assert api(x, one, "2.0/retailer", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert x.http.get(f"/x/{one.prefix}/api/2.0/retailer").status_code == 401
    assert x.control.x_stats()["x_api_foreign_store"] == 1


def test_products_page_by_version_max_until_empty_data(x: Sim) -> None:
    pair = seeded(x)
    assert x.control.add_products(pair.prefix, 120) == 125
    seen: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        response = api(x, pair, "2.0/products", params={"after": after, "page_size": 50})
        assert response.status_code == 200
        body = response.json()
        if not body["data"]:
            assert body["version"] is None
            break
        pages += 1
        versions = [product["version"] for product in body["data"]]
        assert versions == sorted(versions) and versions[0] > after
        assert body["version"] == {"min": versions[0], "max": versions[-1]}
        assert all(set(product) == {"id", "name", "version"} for product in body["data"])
        seen += body["data"]
        after = body["version"]["max"]
    assert pages == 3 and len(seen) == 125
    assert len({product["id"] for product in seen}) == 125
    default = api(x, pair, "2.0/products").json()
    assert len(default["data"]) == 50
    for bad in ({"page_size": 201}, {"page_size": 0}, {"after": "x"}, {"after": -1}):
        assert api(x, pair, "2.0/products", params=bad).status_code == 400


def test_a_stock_put_sets_inventory_and_bumps_the_version(x: Sim) -> None:
    pair = seeded(x)
    outlet = x.control.x_stores()[0]["outlet_ids"][0]
    listing = api(x, pair, "2.0/products").json()
    product, top = listing["data"][0], listing["version"]["max"]
    body = {"details": {"inventory": [{"outlet_id": outlet, "current_amount": 21}]}}
    response = api(x, pair, f"2.1/products/{product['id']}", method="PUT", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["version"] > top
    stored = x.control.x_product(pair.prefix, product["id"])
    assert {"outlet_id": outlet, "current_amount": 21} in stored["inventory"]
    assert api(x, pair, f"2.0/products/{product['id']}").json()["data"] == stored
    changed = api(x, pair, "2.0/products", params={"after": top}).json()["data"]
    assert [p["id"] for p in changed] == [product["id"]]
    bad_outlet = {"details": {"inventory": [{"outlet_id": "nope", "current_amount": 1}]}}
    assert api(x, pair, f"2.1/products/{product['id']}", method="PUT", json=bad_outlet).status_code == 400
    bad_amount = {"details": {"inventory": [{"outlet_id": outlet, "current_amount": "1"}]}}
    assert api(x, pair, f"2.1/products/{product['id']}", method="PUT", json=bad_amount).status_code == 400
    assert api(x, pair, f"2.0/products/{product['id']}", method="PUT", json=body).status_code == 404
    assert api(x, pair, "2.1/products/unknown", method="PUT", json=body).status_code == 404


def test_other_api_paths_are_404_and_still_counted(x: Sim) -> None:
    pair = seeded(x)
    for path in ("2.0/customers", "2.1/retailer", "3.0/products", "register"):
        response = api(x, pair, path)
        assert response.status_code == 404
        assert isinstance(response.json()["error"], str)
        assert "x-ratelimit-remaining" in response.headers
    assert x.control.x_stats(pair.prefix)["api_requests"] == 4
    assert api(x, pair, "2.0/retailer").headers["x-ratelimit-remaining"] == str(350 - 5)


# ------------------------------------------------------------- rate limits


def test_the_window_limit_headers_and_its_429(x: Sim) -> None:
    x.control.configure(x_window_s=60, x_registers=0)
    pair = seeded(x)
    resets = set()
    for number in range(1, 51):
        response = api(x, pair, "2.0/retailer")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "50"
        assert response.headers["x-ratelimit-remaining"] == str(50 - number)
        resets.add(int(response.headers["x-ratelimit-reset"]))
    [reset] = resets
    assert time.time() < reset <= time.time() + 61
    over = api(x, pair, "2.0/retailer")
    assert over.status_code == 429
    assert over.headers["x-ratelimit-remaining"] == "0"
    assert retry_after_epoch(over) == reset
    stats = x.control.x_stats()
    assert stats["x_rate_limited"] == 1
    assert x.control.x_stats(pair.prefix)["x_window_violations"] == 1
    # Another store has its own window; the next window starts fresh.
    assert api(x, seeded(x), "2.0/retailer").status_code == 200
    x.control.advance(pair.prefix, 60)
    again = api(x, pair, "2.0/retailer")
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining"] == "49"


def test_the_default_window_allows_350(x: Sim) -> None:
    response = api(x, seeded(x), "2.0/retailer")
    assert response.headers["x-ratelimit-limit"] == "350"
    assert response.headers["x-ratelimit-remaining"] == "349"
    assert int(response.headers["x-ratelimit-reset"]) <= time.time() + 301


def test_the_token_endpoint_limit_answers_an_http_date(x: Sim) -> None:
    x.control.configure(x_token_limit_per_min=2)
    pair = seeded(x)
    pair = refreshed(x, pair)
    assert_invalid_grant(refresh(x, pair.prefix, "bogus"))  # refused, but counted
    limited = refresh(x, pair.prefix, pair.refresh)
    assert limited.status_code == 429
    assert time.time() + 50 < retry_after_epoch(limited) <= time.time() + 62
    assert x.control.x_stats()["x_token_rate_limited"] == 1
    assert x.control.x_stats(pair.prefix)["x_token_rate_limited"] == 1
    assert x.control.reuse() == 0
    x.control.advance(pair.prefix, 61)
    refreshed(x, pair)  # the refused request did not use the token


def test_an_injected_429_on_the_token_endpoint_has_an_http_date(x: Sim) -> None:
    pair = seeded(x)
    x.control.inject_fault("x_token", "rate_limit", retry_after=30)
    limited = refresh(x, pair.prefix, pair.refresh)
    assert limited.status_code == 429
    assert time.time() + 20 < retry_after_epoch(limited) <= time.time() + 32
    refreshed(x, pair)


def test_plain_token_and_api_faults_also_hit_x_series(x: Sim) -> None:
    pair = seeded(x)
    x.control.inject_fault("token", "status", status=503)
    assert refresh(x, pair.prefix, pair.refresh).status_code == 503
    x.control.inject_fault("token", "rate_limit")
    retry_after_epoch(refresh(x, pair.prefix, pair.refresh))
    x.control.inject_fault("x_api", "status", status=401)
    denied = api(x, pair, "2.0/retailer")
    assert denied.status_code == 401 and denied.json()["error"] == "invalid_token"
    x.control.inject_fault("api", "status", status=500)
    assert api(x, pair, "2.0/retailer").status_code == 500
    assert x.control.faults() == {"faults": []}
    assert x.control.stats()["faults_served"] == 4
    refreshed(x, pair)


def test_x_faults_skip_r_series(x: Sim) -> None:
    r_pair = x.control.seed(1)[0]
    x.control.inject_fault("x_token", "status", status=503)
    r_refresh = x.http.post(
        "/auth/oauth/token", data={**CLIENT, "grant_type": "refresh_token", "refresh_token": r_pair["refresh_token"]}
    )
    assert r_refresh.status_code == 200
    assert len(x.control.faults()["faults"]) == 1


def test_stall_after_issue_rotates_before_the_hold(x: Sim) -> None:
    pair = seeded(x)
    x.control.inject_fault("x_token", "stall_after_issue", seconds=5)
    with pytest.raises(httpx2.ReadTimeout):
        x.http.post(
            f"/x/{pair.prefix}/api/1.0/token",
            data={**CLIENT, "grant_type": "refresh_token", "refresh_token": pair.refresh},
            timeout=0.5,
        )
    assert x.control.x_stats()["x_refreshes"] == 1
    x.control.clear_faults()
    assert_invalid_grant(refresh(x, pair.prefix, pair.refresh))  # the lost answer lost the chain


# ------------------------------------------------------- routes and knobs


def test_unknown_prefix_is_404(x: Sim) -> None:
    pair = seeded(x)
    assert token(x, "nostore", grant_type="refresh_token", refresh_token=pair.refresh).status_code == 404
    assert api(x, pair, "2.0/retailer", prefix="nostore").status_code == 404
    assert api(x, pair, "2.0/retailer", prefix=pair.prefix.upper()).status_code == 404


def test_there_is_no_revoke_endpoint(x: Sim) -> None:
    pair = seeded(x)
    form = {**CLIENT, "token": pair.refresh, "refresh_token": pair.refresh}
    for path in ("1.0/revoke", "1.0/token/revoke", "1.0/oauth/revoke"):
        response = x.http.post(f"/x/{pair.prefix}/api/{path}", data=form)
        assert response.status_code == 404, path
        assert isinstance(response.json()["error"], str)
    # Under the API versions a revoke is just another unknown path: authenticated, counted, 404.
    assert x.http.post(f"/x/{pair.prefix}/api/2.0/revoke", data=form).status_code == 401
    assert api(x, pair, "2.0/revoke", method="POST", data=form).status_code == 404
    assert x.http.get(f"/x/{pair.prefix}/api/1.0/token").status_code == 405
    refreshed(x, pair)


def test_api_requests_are_logged_redacted(x: Sim) -> None:
    pair = seeded(x)
    refreshed_pair = refreshed(x, pair)
    x.control.clear_requests()
    api(x, refreshed_pair, "2.0/products", params={"page_size": 2, "x": refreshed_pair.refresh})
    [entry] = x.control.requests()
    assert entry["method"] == "GET"
    assert entry["path"] == f"/x/{pair.prefix}/api/2.0/products"
    assert entry["query"] == f"page_size=2&x=<refresh token of account {pair.account_id}>"
    assert entry["account_id"] == pair.account_id
    assert ["authorization", f"Bearer <valid token of account {pair.account_id}>"] in entry["headers"]
    assert refreshed_pair.access not in str(entry)


def test_seed_x_and_stores(x: Sim) -> None:
    seeded_stores = x.control.seed_x(3)
    assert len({s["domain_prefix"] for s in seeded_stores}) == 3
    for entry in seeded_stores:
        assert {"account_id", "domain_prefix", "name", "access_token", "refresh_token", "expires"} <= set(entry)
        assert isinstance(entry["expires"], int)
    stores = x.control.x_stores()
    assert [s["account_id"] for s in stores] == [s["account_id"] for s in seeded_stores]
    assert all(s["active_refresh_tokens"] == 1 and s["products"] == 5 for s in stores)
    per_account = x.control.stats()["per_account"][seeded_stores[0]["account_id"]]
    assert per_account["x_window_violations"] == 0 and per_account["reuse"] == 0
    assert x.control.account(seeded_stores[0]["domain_prefix"])["domain_prefix"] == seeded_stores[0]["domain_prefix"]


def test_configure_checks_the_new_knobs(x: Sim) -> None:
    config = x.control.configure(
        x_token_limit_per_min=None, x_reuse_revokes_family=False, x_expires_in_skew_s=-5, x_registers=0
    )
    assert config["x_reuse_revokes_family"] is False and config["x_expires_in_skew_s"] == -5
    for bad in ({"x_reuse_revokes_family": 1}, {"x_window_s": 0}, {"x_registers": -1}, {"x_code_ttl": "9"}):
        with pytest.raises(httpx2.HTTPStatusError):
            x.control.configure(**bad)


def test_reset_forgets_x_series(x: Sim) -> None:
    pair = seeded(x)
    refreshed(x, pair)
    x.control.reset()
    assert x.control.x_stores() == []
    assert x.control.x_stats()["x_refreshes"] == 0
    assert token(x, pair.prefix, grant_type="refresh_token", refresh_token=pair.refresh).status_code == 404

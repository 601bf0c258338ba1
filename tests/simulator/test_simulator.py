"""The Lightspeed simulator, exercised over real HTTP on loopback (as lightkeeper's client will be)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer

REDIRECT = "http://127.0.0.1:9/callback"
CLIENT = {"client_id": "lightkeeper-demo", "client_secret": "demo-secret"}
DAY = 86400
INVALID_REFRESH = {
    "error": "invalid_grant",
    "error_description": "The refresh token is invalid.",
    "hint": "Token has been revoked",
}
ACCESS_DENIED = {
    "error": "access_denied",
    "error_description": "The resource owner or authorization server denied the request.",
    "hint": "Access token could not be verified",
}


@dataclass
class Tokens:
    access: str
    refresh: str
    account_id: str


@dataclass
class Sim:
    server: SimulatorServer
    control: SimulatorControl
    http: httpx2.Client


@pytest.fixture(scope="module")
def module_sim() -> Iterator[Sim]:
    """One server and one pair of clients per module: building httpx2 clients costs ~0.1 s each."""
    with (
        SimulatorServer() as server,
        server.control() as control,
        httpx2.Client(base_url=server.url, timeout=5.0) as http,
    ):
        yield Sim(server, control, http)


@pytest.fixture
def sim(module_sim: Sim) -> Iterator[Sim]:
    """Every test starts from empty state and the default config."""
    module_sim.control.reset()
    module_sim.control.configure(**asdict(SimulatorConfig()))
    yield module_sim
    module_sim.control.clear_faults()


# ----------------------------------------------------------------- helpers


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(http: httpx2.Client, **params: str) -> httpx2.Response:
    query = {
        "response_type": "code",
        "client_id": CLIENT["client_id"],
        "scope": "employee:inventory employee:reports",
        "state": "csrf-123",
        "redirect_uri": REDIRECT,
        **params,
    }
    return http.get("/auth/oauth/authorize", params=query, follow_redirects=False)


def callback_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(http: httpx2.Client, code: str, **extra: str) -> httpx2.Response:
    data = {**CLIENT, "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **extra}
    return http.post("/auth/oauth/token", data=data)


def connect(http: httpx2.Client) -> Tokens:
    verifier, challenge = pkce_pair()
    params = callback_params(authorize(http, code_challenge=challenge, code_challenge_method="S256"))
    body = exchange(http, params["code"], code_verifier=verifier).json()
    return Tokens(body["access_token"], body["refresh_token"], jwt_claims(body["access_token"])["acct"])


def refresh(http: httpx2.Client, refresh_token: str) -> httpx2.Response:
    data = {**CLIENT, "grant_type": "refresh_token", "refresh_token": refresh_token}
    return http.post("/auth/oauth/token", data=data)


def refreshed(http: httpx2.Client, tokens: Tokens) -> Tokens:
    response = refresh(http, tokens.refresh)
    assert response.status_code == 200, response.text
    body = response.json()
    return Tokens(body["access_token"], body["refresh_token"], tokens.account_id)


def whoami(http: httpx2.Client, access: str) -> httpx2.Response:
    return http.get("/API/V3/Account.json", headers={"Authorization": f"Bearer {access}"})


def item_url(tokens: Tokens, item_id: int = 1) -> str:
    return f"/API/V3/Account/{tokens.account_id}/Item/{item_id}.json"


def bearer(tokens: Tokens) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access}"}


def jwt_claims(token: str) -> dict[str, Any]:
    header, claims, _signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "RS256", "typ": "JWT"}
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(claims + "=="))
    return decoded


# --------------------------------------------------------- authorization code


def test_code_flow_with_pkce(sim: Sim) -> None:
    verifier, challenge = pkce_pair()
    params = callback_params(authorize(sim.http, code_challenge=challenge, code_challenge_method="S256"))
    assert params["state"] == "csrf-123"

    response = exchange(sim.http, params["code"], code_verifier=verifier)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "access_token", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"].startswith("def50")
    claims = jwt_claims(body["access_token"])
    assert claims["acct"] == "100001"
    assert claims["aud"] == "lightkeeper-demo"
    assert claims["scope"] == "employee:inventory employee:reports"
    assert claims["exp"] - claims["iat"] == 3600
    assert {"sub", "nbf", "jti"} <= set(claims)
    assert whoami(sim.http, body["access_token"]).json()["Account"] == {
        "accountID": "100001",
        "name": "Demo Store 1",
        "link": {"@attributes": {"href": "/API/V3/Account/100001"}},
    }


def test_each_authorization_creates_a_new_account(sim: Sim) -> None:
    first, second = connect(sim.http), connect(sim.http)
    assert (first.account_id, second.account_id) == ("100001", "100002")
    assert [a["name"] for a in sim.control.accounts()] == ["Demo Store 1", "Demo Store 2"]


def test_wrong_pkce_verifier_is_invalid_grant(sim: Sim) -> None:
    _, challenge = pkce_pair()
    params = callback_params(authorize(sim.http, code_challenge=challenge, code_challenge_method="S256"))
    response = exchange(sim.http, params["code"], code_verifier="not-the-verifier")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_plain_pkce_and_missing_verifier(sim: Sim) -> None:
    params = callback_params(authorize(sim.http, code_challenge="plain-secret-value", code_challenge_method="plain"))
    missing = exchange(sim.http, params["code"])
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    assert "code_verifier" in missing.json()["hint"]
    assert exchange(sim.http, params["code"], code_verifier="plain-secret-value").status_code == 200


def test_code_is_single_use(sim: Sim) -> None:
    code = callback_params(authorize(sim.http))["code"]
    assert exchange(sim.http, code).status_code == 200
    again = exchange(sim.http, code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_expires_after_code_ttl(sim: Sim) -> None:
    code = callback_params(authorize(sim.http))["code"]
    sim.control.advance_all(61)
    response = exchange(sim.http, code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_exchange_needs_the_same_redirect_uri(sim: Sim) -> None:
    code = callback_params(authorize(sim.http))["code"]
    response = exchange(sim.http, code, redirect_uri="http://127.0.0.1:9/other")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(sim: Sim) -> None:
    code = callback_params(authorize(sim.http))["code"]
    response = exchange(sim.http, code, client_secret="wrong")
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
        "hint": "",
    }
    assert sim.control.stats()["invalid_client"] == 1


def test_missing_field_and_wrong_method(sim: Sim) -> None:
    response = sim.http.post("/auth/oauth/token", data={**CLIENT, "grant_type": "refresh_token"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "refresh_token" in response.json()["hint"]
    not_post = sim.http.get("/auth/oauth/token")
    assert not_post.status_code == 405
    assert not_post.json()["error"] == "invalid_request"


def test_authorize_rejects_unknown_client_and_foreign_redirect(sim: Sim) -> None:
    unknown = authorize(sim.http, client_id="nobody")
    assert unknown.status_code == 400
    assert "location" not in unknown.headers
    sim.control.register_client("other-app", "other-secret", "https://other.example/cb")
    mismatch = authorize(sim.http, client_id="other-app")
    assert mismatch.status_code == 400
    assert "location" not in mismatch.headers


def test_registered_client_redirects_to_its_redirect_uri(sim: Sim) -> None:
    sim.control.register_client("other-app", "other-secret", "https://other.example/cb")
    query = {"response_type": "code", "client_id": "other-app", "scope": "employee:all", "state": "s1"}
    response = sim.http.get("/auth/oauth/authorize", params=query, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"].startswith("https://other.example/cb?code=")


def test_deny_mode_redirects_with_access_denied(sim: Sim) -> None:
    sim.control.authorize_mode("deny")
    params = callback_params(authorize(sim.http))
    assert params["error"] == "access_denied"
    assert params["state"] == "csrf-123"
    assert "error_description" in params
    assert "code" not in params
    assert sim.control.accounts() == []


# ------------------------------------------------------------ refresh/rotation


def test_every_refresh_rotates_the_pair(sim: Sim) -> None:
    first = connect(sim.http)
    second = refreshed(sim.http, first)
    assert second.access != first.access
    assert second.refresh != first.refresh
    assert whoami(sim.http, second.access).status_code == 200
    third = refreshed(sim.http, second)
    assert third.refresh not in {first.refresh, second.refresh}


def test_old_refresh_token_works_until_new_access_token_is_used(sim: Sim) -> None:
    first = connect(sim.http)
    assert whoami(sim.http, first.access).status_code == 200
    lost = refreshed(sim.http, first)  # pretend this response never reached us

    retried = refreshed(sim.http, first)  # still in the grace window

    assert sim.control.stats()["refreshes_in_grace"] == 1
    # The pair issued before the retry is discarded ...
    assert whoami(sim.http, lost.access).status_code == 401
    assert refresh(sim.http, lost.refresh).json() == INVALID_REFRESH
    # ... and once the newest access token is used, the old refresh token is revoked.
    assert whoami(sim.http, retried.access).status_code == 200
    response = refresh(sim.http, first.refresh)
    assert response.status_code == 400
    assert response.json() == INVALID_REFRESH
    assert refreshed(sim.http, retried).refresh


def test_concurrent_refreshes_leave_only_the_last_pair(sim: Sim) -> None:
    first = connect(sim.http)
    winner, loser = refreshed(sim.http, first), refreshed(sim.http, first)
    # The "winner" stored the first response, but the second refresh discarded it: connection broken.
    assert whoami(sim.http, winner.access).status_code == 401
    assert refresh(sim.http, winner.refresh).status_code == 400
    assert whoami(sim.http, loser.access).status_code == 200


def test_unused_refresh_token_expires_after_30_days(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.advance(tokens.account_id, 29 * DAY)
    tokens = refreshed(sim.http, tokens)  # refreshed within 30 days: lives on
    sim.control.advance(tokens.account_id, 29 * DAY)
    tokens = refreshed(sim.http, tokens)
    sim.control.advance(tokens.account_id, 31 * DAY)
    response = refresh(sim.http, tokens.refresh)
    assert response.status_code == 400
    assert response.json() == INVALID_REFRESH
    assert sim.control.account(tokens.account_id)["active_refresh_tokens"] == 0


def test_json_refresh_with_scope_is_invalid_grant(sim: Sim) -> None:
    tokens = connect(sim.http)
    body = {**CLIENT, "grant_type": "refresh_token", "refresh_token": tokens.refresh, "scope": "employee:all"}
    response = sim.http.post("/auth/oauth/token", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    del body["scope"]
    assert sim.http.post("/auth/oauth/token", json=body).status_code == 200


def test_unknown_refresh_token_is_invalid_grant(sim: Sim) -> None:
    response = refresh(sim.http, "def50" + "0" * 64)
    assert response.status_code == 400
    assert response.json() == INVALID_REFRESH


def test_expired_access_token_gets_401_but_refresh_still_works(sim: Sim) -> None:
    tokens = connect(sim.http)
    assert sim.control.expire_access_tokens(tokens.account_id) == {"expired": 1}
    response = whoami(sim.http, tokens.access)
    assert response.status_code == 401
    assert response.json() == ACCESS_DENIED
    assert whoami(sim.http, refreshed(sim.http, tokens).access).status_code == 200


# ----------------------------------------------------------------- revocation


def test_revoke_kills_refresh_and_access_token(sim: Sim) -> None:
    tokens = connect(sim.http)
    response = sim.http.post("/auth/oauth/revoke", data={**CLIENT, "refresh_token": tokens.refresh})
    assert response.status_code == 200
    assert response.json() == {}
    assert whoami(sim.http, tokens.access).json() == ACCESS_DENIED
    assert refresh(sim.http, tokens.refresh).json() == INVALID_REFRESH
    assert sim.control.stats()["revokes"] == 1


def test_revoke_with_bad_client_is_invalid_client(sim: Sim) -> None:
    tokens = connect(sim.http)
    data = {**CLIENT, "client_secret": "nope", "refresh_token": tokens.refresh}
    response = sim.http.post("/auth/oauth/revoke", data=data)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert whoami(sim.http, tokens.access).status_code == 200


def test_merchant_uninstall_revokes_everything(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.revoke_account(tokens.account_id)
    assert whoami(sim.http, tokens.access).status_code == 401
    assert refresh(sim.http, tokens.refresh).status_code == 400
    account = sim.control.account(tokens.account_id)
    assert account["revoked"] is True
    assert account["active_refresh_tokens"] == 0


# --------------------------------------------------------------------- API


def test_bucket_headers_and_429_when_spent(sim: Sim) -> None:
    sim.control.configure(bucket_size=3, drip_rate=0.5)
    tokens = connect(sim.http)
    levels = [whoami(sim.http, tokens.access).headers["X-LS-API-Bucket-Level"] for _ in range(3)]
    assert levels == ["1/3", "2/3", "3/3"]

    limited = whoami(sim.http, tokens.access)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.headers["X-LS-API-RateLimit-Type"] == "api-leaky-bucket"
    assert limited.headers["X-LS-API-Drip-Rate"] == "0.5"
    assert limited.headers["X-LS-Acct-Id"] == tokens.account_id
    stats = sim.control.stats()
    assert stats["rate_limited"] == 1
    assert stats["per_account"][tokens.account_id]["rate_limited"] == 1
    sim.control.advance(tokens.account_id, 2)  # the bucket drains on the account's clock
    assert whoami(sim.http, tokens.access).status_code == 200


def test_item_read_and_stock_update(sim: Sim) -> None:
    tokens = connect(sim.http)
    response = sim.http.get(item_url(tokens), params={"load_relations": '["ItemShops"]'}, headers=bearer(tokens))
    assert response.status_code == 200
    rows = {row["shopID"]: row for row in response.json()["Item"]["ItemShops"]["ItemShop"]}
    assert set(rows) == {"0", "1", "2"}
    assert int(rows["0"]["qoh"]) == int(rows["1"]["qoh"]) + int(rows["2"]["qoh"])

    by_id = {"ItemShops": {"ItemShop": {"itemShopID": int(rows["1"]["itemShopID"]), "qoh": 3}}}
    put = sim.http.put(item_url(tokens), json=by_id, headers=bearer(tokens))
    assert put.status_code == 200
    assert put.headers["X-LS-API-Request-Cost"] == "1.5"
    by_shop = {"ItemShops": {"ItemShop": [{"shopID": 2, "qoh": "4"}]}}
    assert sim.http.put(item_url(tokens), json=by_shop, headers=bearer(tokens)).status_code == 200

    assert sim.control.item(tokens.account_id, 1)["qoh_by_shop"] == {"0": 7, "1": 3, "2": 4}


def test_item_errors(sim: Sim) -> None:
    tokens = connect(sim.http)
    assert sim.http.get(item_url(tokens, 999), headers=bearer(tokens)).status_code == 404
    other = item_url(tokens).replace(tokens.account_id, "100099")
    assert sim.http.get(other, headers=bearer(tokens)).status_code == 403
    bad = sim.http.put(
        item_url(tokens), json={"ItemShops": {"ItemShop": {"shopID": 0, "qoh": 1}}}, headers=bearer(tokens)
    )
    assert bad.status_code == 400
    not_json = sim.http.put(item_url(tokens), content=b"nope", headers=bearer(tokens))
    assert not_json.status_code == 400
    no_token = sim.http.get(item_url(tokens))
    assert no_token.status_code == 401


def test_api_latency_overlaps(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.configure(api_latency_ms=300)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda _: whoami(sim.http, tokens.access).status_code, range(6)))
    assert statuses == [200] * 6
    assert time.monotonic() - started < 1.2


# ----------------------------------------------------------------- faults


def test_fault_status_answers_then_recovers(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.inject_fault("token", "status", count=2, status=503, retry_after=7)
    for _ in range(2):
        failed = refresh(sim.http, tokens.refresh)
        assert failed.status_code == 503
        assert failed.headers["Retry-After"] == "7"
        assert "text/html" in failed.headers["content-type"]
    assert refresh(sim.http, tokens.refresh).status_code == 200


def test_fault_garbage_and_rate_limit(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.inject_fault("token", "garbage")
    garbage = refresh(sim.http, tokens.refresh)
    assert garbage.status_code == 200
    with pytest.raises(ValueError):
        garbage.json()
    sim.control.inject_fault("api", "rate_limit", retry_after=3)
    limited = whoami(sim.http, tokens.access)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"


def test_fault_reset_drops_the_connection(sim: Sim) -> None:
    tokens = connect(sim.http)
    sim.control.inject_fault("api", "reset")
    with pytest.raises(httpx2.TransportError):
        whoami(sim.http, tokens.access)
    assert whoami(sim.http, tokens.access).status_code == 200


def test_fault_timeout_loses_the_response_but_grace_recovers(sim: Sim) -> None:
    tokens = connect(sim.http)
    assert whoami(sim.http, tokens.access).status_code == 200
    sim.control.inject_fault("token", "timeout")
    data = {**CLIENT, "grant_type": "refresh_token", "refresh_token": tokens.refresh}
    with pytest.raises(httpx2.TimeoutException):
        sim.http.post("/auth/oauth/token", data=data, timeout=0.3)
    sim.control.clear_faults()  # also releases the held request
    assert sim.control.stats()["refreshes"] == 1  # the server did rotate
    assert refresh(sim.http, tokens.refresh).status_code == 200  # the old token is still in grace
    assert sim.control.stats()["refreshes_in_grace"] == 1


def test_bad_fault_and_config_are_rejected(sim: Sim) -> None:
    with pytest.raises(httpx2.HTTPStatusError):
        sim.control.inject_fault("token", "explode")
    with pytest.raises(httpx2.HTTPStatusError):
        sim.control.configure(no_such_field=1)
    with pytest.raises(httpx2.HTTPStatusError):
        sim.control.account(424242)


# ------------------------------------------------------------------ stats


def test_stats_counters(sim: Sim) -> None:
    tokens = connect(sim.http)
    tokens = refreshed(sim.http, tokens)
    whoami(sim.http, tokens.access)
    refresh(sim.http, "def50bogus")
    stats = sim.control.stats()
    assert stats["token_requests"] == 3
    assert stats["code_exchanges"] == 1
    assert stats["refreshes"] == 1
    assert stats["invalid_grant"] == 1
    assert stats["api_requests"] == 1
    assert stats["per_account"][tokens.account_id] == {
        "refreshes": 1,
        "invalid_grant": 0,
        "api_requests": 1,
        "rate_limited": 0,
        "burst_limited": 0,
        "reuse": 0,
    }
    assert sim.control.account(tokens.account_id)["refreshes"] == 1
    sim.control.reset()
    assert sim.control.stats()["token_requests"] == 0
    assert sim.control.accounts() == []

"""The strict simulator (issue 8): reuse counting, 401 fault kinds, no ``expires_in``, redirect URI enforcement.

Runs against the session simulator from ``tests/conftest.py`` (the one every other layer uses), so these
tests also pin what that fixture enforces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI

CLIENT = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
OTHER_CALLBACK = "http://127.0.0.1:8123/oauth/callback"


@dataclass
class Tokens:
    access: str
    refresh: str
    account_id: str


@pytest.fixture
def http(simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[httpx2.Client]:
    """A plain HTTP client on the session simulator (``sim`` resets its state first)."""
    with httpx2.Client(base_url=simulator_server.url, timeout=5.0) as client:
        yield client


# ----------------------------------------------------------------- helpers


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(http: httpx2.Client, **params: str) -> httpx2.Response:
    query = {"response_type": "code", "client_id": CLIENT_ID, "scope": "employee:all", "state": "s-1"}
    query |= {"redirect_uri": REDIRECT_URI} | params
    return http.get("/auth/oauth/authorize", params={k: v for k, v in query.items() if v}, follow_redirects=False)


def code_from(response: httpx2.Response, redirect_uri: str = REDIRECT_URI) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{redirect_uri}?")
    return parse_qs(urlsplit(location).query)["code"][0]


def exchange(http: httpx2.Client, code: str, **extra: str) -> httpx2.Response:
    data = {**CLIENT, "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, **extra}
    return http.post("/auth/oauth/token", data={k: v for k, v in data.items() if v})


def tokens_of(response: httpx2.Response) -> Tokens:
    assert response.status_code == 200, response.text
    body = response.json()
    return Tokens(body["access_token"], body["refresh_token"], jwt_claims(body["access_token"])["acct"])


def connect(http: httpx2.Client) -> Tokens:
    verifier, challenge = pkce_pair()
    code = code_from(authorize(http, code_challenge=challenge, code_challenge_method="S256"))
    return tokens_of(exchange(http, code, code_verifier=verifier))


def refresh(http: httpx2.Client, refresh_token: str) -> httpx2.Response:
    return http.post(
        "/auth/oauth/token", data={**CLIENT, "grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def refreshed(http: httpx2.Client, tokens: Tokens) -> Tokens:
    return tokens_of(refresh(http, tokens.refresh))


def use(http: httpx2.Client, tokens: Tokens) -> None:
    """An API call with the access token: ends the grace window of the refresh token before it."""
    response = http.get("/API/V3/Account.json", headers={"Authorization": f"Bearer {tokens.access}"})
    assert response.status_code == 200, response.text


def jwt_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return claims


# -------------------------------------------------------------------- reuse


def test_a_normal_chain_of_refreshes_is_no_reuse(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    for _ in range(3):
        tokens = refreshed(http, tokens)
        use(http, tokens)
    stats = sim.stats()
    assert stats["refreshes"] == 3
    assert stats["reuse"] == 0
    assert stats["per_account"][tokens.account_id]["reuse"] == 0
    assert sim.reuse() == 0


def test_a_grace_replay_counts_one_reuse(http: httpx2.Client, sim: SimulatorControl) -> None:
    first = connect(http)
    refreshed(http, first)  # the answer is "lost"
    retried = refreshed(http, first)  # still in the grace window: succeeds
    stats = sim.stats()
    assert stats["refreshes_in_grace"] == 1
    assert stats["reuse"] == 1
    assert sim.reuse(retried.account_id) == 1


def test_a_revoked_token_replay_counts_as_reuse(http: httpx2.Client, sim: SimulatorControl) -> None:
    first = connect(http)
    second = refreshed(http, first)
    use(http, second)  # the old refresh token is revoked now
    replay = refresh(http, first.refresh)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert sim.reuse() == 1
    assert sim.stats()["per_account"][first.account_id] == {
        "refreshes": 1,
        "invalid_grant": 1,
        "api_requests": 1,
        "rate_limited": 0,
        "burst_limited": 0,
        "reuse": 1,
    }
    refresh(http, first.refresh)
    assert sim.reuse() == 2  # every presentation counts


def test_refused_tokens_never_exchanged_are_no_reuse(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    revoked = http.post("/auth/oauth/revoke", data={**CLIENT, "refresh_token": tokens.refresh})
    assert revoked.status_code == 200
    assert refresh(http, tokens.refresh).status_code == 400  # revoked, but never exchanged
    assert refresh(http, "def50unknown").status_code == 400
    assert sim.reuse() == 0


def test_a_code_exchanged_twice_is_no_reuse(http: httpx2.Client, sim: SimulatorControl) -> None:
    code = code_from(authorize(http))
    assert exchange(http, code).status_code == 200
    assert exchange(http, code).status_code == 400
    assert sim.reuse() == 0


# ------------------------------------------------------------------- faults


def test_html_401_is_a_gateway_page_and_changes_nothing(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    listed = sim.inject_fault("token", "html_401")
    assert listed["faults"][0]["status"] == 401
    response = refresh(http, tokens.refresh)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text
    assert sim.stats()["refreshes"] == 0
    refreshed(http, tokens)  # the token was never consumed
    assert sim.reuse() == 0


def test_invalid_grant_401_is_oauth_json(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    sim.inject_fault("token", "invalid_grant_401")
    response = refresh(http, tokens.refresh)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_grant"
    assert {"error_description", "hint"} <= response.json().keys()
    refreshed(http, tokens)


def test_invalid_client_json_is_what_a_wrong_secret_gets(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    wrong_secret = http.post(
        "/auth/oauth/token",
        data={**CLIENT, "client_secret": "wrong", "grant_type": "refresh_token", "refresh_token": tokens.refresh},
    )
    sim.inject_fault("token", "invalid_client_json")
    injected = refresh(http, tokens.refresh)
    assert injected.status_code == wrong_secret.status_code == 401
    assert injected.json() == wrong_secret.json()
    assert injected.json()["error"] == "invalid_client"


def test_a_plain_status_401_stays_some_other_401(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    sim.inject_fault("token", "status", status=401)
    response = refresh(http, tokens.refresh)
    assert response.status_code == 401
    assert response.json()["error"] == "simulated_fault"


def test_no_expires_in_still_rotates_the_pair(http: httpx2.Client, sim: SimulatorControl) -> None:
    first = connect(http)
    sim.inject_fault("token", "no_expires_in")
    response = refresh(http, first.refresh)
    assert response.status_code == 200
    body = response.json()
    assert "expires_in" not in body
    assert body["token_type"] == "Bearer"
    claims = jwt_claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == 3600  # the JWT still says when it expires
    assert sim.stats()["refreshes"] == 1
    second = tokens_of(response)
    use(http, second)  # a real rotation: the new pair works and retires the old refresh token
    assert refresh(http, first.refresh).status_code == 400
    assert sim.reuse() == 1
    assert "expires_in" in refresh(http, second.refresh).json()  # one request only


def test_no_expires_in_on_a_code_exchange(http: httpx2.Client, sim: SimulatorControl) -> None:
    code = code_from(authorize(http))
    sim.inject_fault("token", "no_expires_in")
    response = exchange(http, code)
    assert response.status_code == 200
    assert "expires_in" not in response.json()
    use(http, tokens_of(response))
    assert sim.stats()["code_exchanges"] == 1


def test_no_expires_in_passes_errors_through(http: httpx2.Client, sim: SimulatorControl) -> None:
    sim.inject_fault("token", "no_expires_in")
    response = refresh(http, "def50unknown")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("endpoint", "kind", "status"),
    [
        ("api", "no_expires_in", None),
        ("revoke", "no_expires_in", None),
        ("api", "html_401", None),
        ("api", "invalid_client_json", None),
        ("token", "html_401", 500),
        ("token", "invalid_grant_401", 400),
    ],
)
def test_fault_kinds_refuse_the_wrong_endpoint_or_status(
    sim: SimulatorControl, endpoint: str, kind: str, status: int | None
) -> None:
    with pytest.raises(httpx2.HTTPStatusError) as raised:
        sim.inject_fault(endpoint, kind, status=status)
    assert raised.value.response.status_code == 400
    assert sim.faults() == {"faults": []}


def test_401_kinds_also_apply_to_revoke(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    sim.inject_fault("revoke", "html_401")
    response = http.post("/auth/oauth/revoke", data={**CLIENT, "refresh_token": tokens.refresh})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert sim.stats()["revokes"] == 0


def test_token_latency_slows_the_token_endpoint_only(http: httpx2.Client, sim: SimulatorControl) -> None:
    tokens = connect(http)
    sim.configure(token_latency_ms=400)

    def timed(send: Any) -> float:
        started = time.monotonic()
        send()
        return time.monotonic() - started

    assert timed(lambda: use(http, tokens)) < 0.3
    assert timed(lambda: refreshed(http, tokens)) >= 0.4
    assert timed(lambda: http.post("/auth/oauth/revoke", data={**CLIENT, "refresh_token": tokens.refresh})) < 0.3


# ------------------------------------------------------------ redirect URIs


def test_session_simulator_registers_the_default_redirect_uri(sim: SimulatorControl) -> None:
    assert sim.config()["redirect_uri"] == REDIRECT_URI


def test_authorize_refuses_an_unregistered_redirect_uri(http: httpx2.Client) -> None:
    response = authorize(http, redirect_uri=OTHER_CALLBACK)
    assert response.status_code == 400
    assert "location" not in response.headers  # an error page, never a redirect to that URI
    assert response.headers["content-type"].startswith("text/html")


def test_authorize_without_redirect_uri_goes_to_the_registered_one(http: httpx2.Client) -> None:
    code_from(authorize(http, redirect_uri=""))


def test_registered_redirect_uris_are_all_accepted(http: httpx2.Client, sim: SimulatorControl) -> None:
    assert sim.register_redirect_uri(OTHER_CALLBACK) == [REDIRECT_URI, OTHER_CALLBACK]
    assert sim.register_redirect_uri(OTHER_CALLBACK) == [REDIRECT_URI, OTHER_CALLBACK]  # idempotent
    code = code_from(authorize(http, redirect_uri=OTHER_CALLBACK), OTHER_CALLBACK)
    assert exchange(http, code, redirect_uri=OTHER_CALLBACK).status_code == 200
    code_from(authorize(http))  # the configured one still works
    # With several registered, the request must say which (RFC 6749 3.1.2.3).
    ambiguous = authorize(http, redirect_uri="")
    assert ambiguous.status_code == 400
    assert "location" not in ambiguous.headers


def test_reset_forgets_registered_redirect_uris(http: httpx2.Client, sim: SimulatorControl) -> None:
    sim.register_redirect_uri(OTHER_CALLBACK)
    sim.reset()
    assert authorize(http, redirect_uri=OTHER_CALLBACK).status_code == 400
    code_from(authorize(http))  # the configured one survives: it is config


@pytest.mark.parametrize("sent", [OTHER_CALLBACK, "http://127.0.0.1:9/unregistered", ""])
def test_exchange_needs_the_redirect_uri_of_the_authorize_request(
    http: httpx2.Client, sim: SimulatorControl, sent: str
) -> None:
    sim.register_redirect_uri(OTHER_CALLBACK)
    code = code_from(authorize(http))
    response = exchange(http, code, redirect_uri=sent)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert exchange(http, code).status_code == 200  # the refused attempts did not use the code up


def test_exchange_of_a_code_sent_to_the_default_uri(http: httpx2.Client) -> None:
    """Authorize without redirect_uri: the exchange may omit it, or name the URI the code went to."""
    assert exchange(http, code_from(authorize(http, redirect_uri="")), redirect_uri="").status_code == 200
    refused = exchange(http, code_from(authorize(http, redirect_uri="")), redirect_uri=OTHER_CALLBACK)
    assert refused.status_code == 400


def test_redirect_uris_of_a_registered_client(http: httpx2.Client, sim: SimulatorControl) -> None:
    sim.register_client("other-app", "other-secret", "https://other.example/cb")
    uris = sim.register_redirect_uri("https://other.example/cb2", client_id="other-app")
    assert uris == ["https://other.example/cb", "https://other.example/cb2"]
    response = authorize(http, client_id="other-app", redirect_uri="https://other.example/cb2")
    assert response.headers["location"].startswith("https://other.example/cb2?code=")
    assert authorize(http, client_id="other-app", redirect_uri=REDIRECT_URI).status_code == 400


@pytest.mark.parametrize(
    ("uri", "client_id", "status"),
    [
        ("/oauth/callback", None, 400),
        ("ftp://127.0.0.1/cb", None, 400),
        ("http://127.0.0.1:8000/cb#frag", None, 400),
        (OTHER_CALLBACK, "nobody", 404),
    ],
)
def test_bad_redirect_registrations_are_refused(
    sim: SimulatorControl, uri: str, client_id: str | None, status: int
) -> None:
    with pytest.raises(httpx2.HTTPStatusError) as raised:
        sim.register_redirect_uri(uri, client_id=client_id)
    assert raised.value.response.status_code == status


def test_a_token_request_waiting_out_its_latency_across_a_reset_touches_nothing(
    http: httpx2.Client, sim: SimulatorControl
) -> None:
    """A request from before a reset belongs to a world that is gone: it is answered 503 and changes and counts
    nothing in the new one (a test's slow request must not show up in the next test's counters)."""
    import threading

    tokens = connect(http)
    sim.configure(token_latency_ms=600)
    answers: list[httpx2.Response] = []
    form = {**CLIENT, "grant_type": "refresh_token", "refresh_token": tokens.refresh}
    slow = threading.Thread(target=lambda: answers.append(http.post("/auth/oauth/token", data=form)))
    slow.start()
    time.sleep(0.2)  # the request is in, waiting out its latency
    sim.reset()
    slow.join()
    assert answers[0].status_code == 503, answers[0].text
    stats = sim.stats()
    assert (stats["refreshes"], stats["invalid_grant"], stats["reuse"]) == (0, 0, 0)

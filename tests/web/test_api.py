"""The JSON API over real HTTP: the key check, every route, every error code, and no token in any answer.

Tests that touch stored data run on SQLite and PostgreSQL (``app_server`` is parametrized by ``database_url``);
the few that involve no database behaviour (the key check, the schema, metrics) run on SQLite only. The
``app_server`` fixture also checks, after every test, that no answer but the token route's held a token.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import text

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import head_revision
from lightkeeper.views import ConnectionView, RunView
from lightkeeper.web.browser import continue_to_lightspeed
from lightkeeper.web.proxy_api import METHODS as PROXY_METHODS
from tests.web.conftest import AppServer, ServeApp

# No database behaviour involved: one dialect is enough (the fixture's params are overridden).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LEEWAY = timedelta(seconds=300)  # TOKEN_REFRESH_LEEWAY_S default
EXPIRING_SOON = 3600 - 200  # seconds after a connect when the hour-long access token is inside the leeway
UNKNOWN = 424242
STOCK = {"updates": [{"item_id": 1, "qoh": 1, "shop_id": 1}]}

# Every route under /api/, with a request that passes validation (any answer but 401 means the key was let in).
API_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/connect-sessions", {"user_id": "user-1"}),
    ("GET", "/api/connections", None),
    ("GET", "/api/connections/1", None),
    ("DELETE", "/api/connections/1", None),
    ("POST", "/api/connections/1/token", None),
    ("POST", "/api/connections/1/stock", STOCK),
    ("POST", "/api/refresh", None),
    ("GET", "/api/runs", None),
    *[(method, "/api/connections/1/lightspeed/Item.json", None) for method in PROXY_METHODS],
]
WRONG_AUTHORIZATIONS: dict[str, str | None] = {
    "no header": None,
    "wrong key": "Bearer wrong-key",
    "scheme only": "Bearer",
    "key without scheme": "{key}",
    "basic scheme": "Basic {key}",
    "token scheme": "Token {key}",
    "key plus a character": "Bearer {key}x",
    "key minus a character": "Bearer {short}",
    "two spaces": "Bearer  {key}",
}
CONNECTION_FIELDS = {
    "id",
    "user_id",
    "provider",
    "account_id",
    "account_name",
    "status",
    "token_expires_at",
    "last_token_refresh_at",
    "last_error",
    "consecutive_failures",
    "next_attempt_at",
}
RUN_FIELDS = {
    "run_id",
    "job_name",
    "trigger",
    "status",
    "connection_id",
    "started_at",
    "finished_at",
    "total",
    "refreshed",
    "expired",
    "errors",
    "skipped",
    "message",
    "due_before",
}
TIME_FIELDS = ("token_expires_at", "last_token_refresh_at", "next_attempt_at", "started_at", "finished_at")
#: The one timestamp format of the API and the CLI (CHANGELOG, issue 10): RFC 3339, UTC, microseconds.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def call(client: httpx2.Client, method: str, path: str, body: Any = None) -> httpx2.Response:
    return client.request(method, path, json=body)


def assert_error(response: httpx2.Response, status: int, code: str, case: object = "") -> dict[str, Any]:
    where = f"{response.request.method} {response.request.url.path} {case}".strip()
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    if response.request.method == "HEAD":  # the same answer without its body
        assert response.headers["content-type"].startswith("application/json"), where
        return {}
    assert response.headers["content-type"].startswith("application/json"), where
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"], f"{where}: {body}"
    return body


def when(value: str) -> datetime:
    """A timestamp of an answer, which must be in the documented format."""
    assert RFC3339.fullmatch(value), f"not the documented RFC 3339 form: {value!r}"
    return datetime.fromisoformat(value)


def assert_times_documented(document: dict[str, Any]) -> None:
    """Every timestamp of a connection or run document is in the documented format."""
    for key in TIME_FIELDS:
        if document.get(key) is not None:
            when(document[key])


# -- the key -----------------------------------------------------------------------------------------


@sqlite_only
def test_every_api_route_refuses_a_missing_or_wrong_key_with_a_json_401(app_server: AppServer) -> None:
    key = app_server.api_key
    for case, authorization in WRONG_AUTHORIZATIONS.items():
        headers = {} if authorization is None else {"Authorization": authorization.format(key=key, short=key[:-1])}
        with app_server.anonymous(**headers) as client:
            for method, path, body in API_ROUTES:
                response = call(client, method, path, body)
                assert_error(response, 401, "unauthorized", case)
                assert key not in response.text
    with app_server.anonymous(Authorization=f"bearer {key}") as client:  # the scheme is case-insensitive
        assert client.get("/api/connections").status_code == 200


def test_a_refused_request_changes_nothing(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("user-1")
    with app_server.anonymous(Authorization="Bearer wrong-key") as client:
        assert_error(client.delete(f"/api/connections/{record.id}"), 401, "unauthorized")
        assert_error(client.post("/api/refresh"), 401, "unauthorized")
        assert_error(client.post("/api/connect-sessions", json={"user_id": "user-2"}), 401, "unauthorized")
    assert app_server.keeper.store.connections.get(record.id) == record
    assert sim.account(record.account_id)["active_refresh_tokens"] == 1
    assert app_server.client.get("/api/runs").json() == []


@sqlite_only
def test_api_is_disabled_without_a_key_and_opened_by_dev_mode(serve_app: ServeApp) -> None:
    with serve_app() as server, server.anonymous() as client:
        for method, path, body in API_ROUTES:
            assert_error(call(client, method, path, body), 503, "api_disabled")
        assert client.get("/healthz").status_code == 200  # the rest of the app still works
    with serve_app(LIGHTKEEPER_DEV="1") as server, server.anonymous() as client:
        assert client.get("/api/connections").json() == []
        assert client.post("/api/connect-sessions", json={"user_id": "user-1"}).status_code == 201


@sqlite_only
def test_health_and_pages_need_no_key_but_metrics_and_the_schema_do(app_server: AppServer) -> None:
    with app_server.anonymous() as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/metrics"), 401, "unauthorized")  # issue 19: a key with the read scope
        assert_error(client.get("/openapi.json"), 401, "unauthorized")
        assert client.get("/docs").status_code == 404  # off unless LIGHTKEEPER_DOCS=1
        assert client.get("/connect-lightspeed").status_code == 401  # a page: it needs the browser session
    assert app_server.client.get("/metrics").status_code == 200
    assert app_server.client.get("/openapi.json").status_code == 200


# -- connect sessions --------------------------------------------------------------------------------


def test_connect_session_returns_a_one_time_link_valid_for_an_hour(app_server: AppServer) -> None:
    response = app_server.client.post("/api/connect-sessions", json={"user_id": "user-1"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"url", "expires_at"}
    assert body["url"].startswith(f"{app_server.url}/connect-lightspeed/start?session=")
    assert when(body["expires_at"]) == app_server.clock() + timedelta(hours=1)
    with httpx2.Client(timeout=10) as browser:
        first = continue_to_lightspeed(browser, body["url"])  # the confirm page, then its button
        assert first.status_code == 303
        assert first.headers["location"].startswith(f"{app_server.simulator.url}/auth/oauth/authorize?")
        assert browser.get(body["url"]).status_code == 400  # used up


def test_connect_session_allows_return_to_only_on_the_allow_list(app_server: AppServer) -> None:
    def create(return_to: str) -> httpx2.Response:
        return app_server.client.post("/api/connect-sessions", json={"user_id": "user-1", "return_to": return_to})

    assert create(f"{app_server.url}/settings?tab=pos").status_code == 201  # the public origin
    for refused in [
        "https://evil.example/after",
        "http://127.0.0.1:1/after",  # the same host on another port is another origin
        "javascript:alert(1)",
        "//evil.example/after",
        "/relative/path",
        "http://[bad-ipv6/after",
        "ftp://127.0.0.1/after",
        f"{app_server.url}\x00/after",
    ]:
        assert_error(create(refused), 422, "validation_error", repr(refused))
    assert app_server.keeper.connections() == []


@sqlite_only
def test_connect_session_allows_return_to_on_an_extra_allow_listed_origin(serve_app: ServeApp) -> None:
    with serve_app(LIGHTKEEPER_API_KEY="k" * 32, LIGHTKEEPER_RETURN_TO_ORIGINS="https://shop.example") as server:

        def create(return_to: str) -> httpx2.Response:
            return server.client.post("/api/connect-sessions", json={"user_id": "user-1", "return_to": return_to})

        assert create("https://shop.example/back").status_code == 201
        assert create(f"{server.url}/back").status_code == 201
        assert_error(create("https://evil.example/back"), 422, "validation_error")


def test_connect_session_refuses_a_malformed_request(app_server: AppServer) -> None:
    bodies: list[Any] = [
        {},
        {"user_id": ""},
        {"user_id": "   "},
        {"user_id": "a\x00b"},
        {"user_id": 5},
        {"user_id": "x" * 201},
        {"user_id": "u", "return_to": "x" * 2001},
        ["user-1"],
        None,
    ]
    for body in bodies:
        response = app_server.client.post("/api/connect-sessions", json=body)
        assert_error(response, 422, "validation_error", repr(body)[:40])
    not_json = app_server.client.post(
        "/api/connect-sessions", content=b"user_id=1", headers={"Content-Type": "application/json"}
    )
    assert_error(not_json, 422, "validation_error")


# -- connections -------------------------------------------------------------------------------------


def test_connections_have_the_status_json_fields_and_no_token(app_server: AppServer) -> None:
    record = app_server.connect("user-1")
    listed = app_server.client.get("/api/connections")
    one = app_server.client.get(f"/api/connections/{record.id}")
    assert listed.status_code == 200 and one.status_code == 200
    [first] = listed.json()
    assert first == one.json()
    assert set(first) == CONNECTION_FIELDS
    assert first == ConnectionView.model_validate(record).document()  # what `lightkeeper status --json` prints
    assert_times_documented(first)
    assert first["status"] == "connected" and first["account_name"] and first["user_id"] == "user-1"
    for body in (listed.text, one.text):
        assert "access_token" not in body and "refresh_token" not in body


def test_connections_list_filters_by_user_and_status(app_server: AppServer) -> None:
    first = app_server.connect("user-1")
    second = app_server.connect("user-2")
    assert app_server.client.delete(f"/api/connections/{second.id}").status_code == 200

    def ids(**params: str) -> list[int]:
        response = app_server.client.get("/api/connections", params=params)
        assert response.status_code == 200, response.text
        return sorted(c["id"] for c in response.json())

    assert ids() == sorted([first.id, second.id])
    assert ids(user_id="user-1") == [first.id]
    assert ids(user_id="user-2") == [second.id]
    assert ids(user_id="nobody") == []
    assert ids(status="connected") == [first.id]
    assert ids(status="disconnected") == [second.id]
    assert ids(status="expired") == []
    assert ids(user_id="user-1", status="disconnected") == []
    assert ids(user_id="user-2", status="disconnected") == [second.id]
    for bad in [{"status": "gone"}, {"user_id": "x" * 201}, {"user_id": "a\x00"}]:
        assert_error(app_server.client.get("/api/connections", params=bad), 422, "validation_error", bad)


def test_unknown_connection_is_404_connection_not_found_on_every_route(app_server: AppServer) -> None:
    client = app_server.client
    assert_error(client.get(f"/api/connections/{UNKNOWN}"), 404, "connection_not_found")
    assert_error(client.delete(f"/api/connections/{UNKNOWN}"), 404, "connection_not_found")
    assert_error(client.post(f"/api/connections/{UNKNOWN}/token"), 404, "connection_not_found")
    assert_error(client.post(f"/api/connections/{UNKNOWN}/stock", json=STOCK), 404, "connection_not_found")
    assert_error(client.post("/api/refresh", json={"connection_id": UNKNOWN}), 404, "connection_not_found")
    assert client.get("/api/runs").json() == []  # the refresh of nothing started no run


def test_malformed_connection_id_is_422_on_every_route(app_server: AppServer) -> None:
    client = app_server.client
    for connection_id in ["0", "-1", "abc", "1.5", str(2**31), str(2**70)]:
        for method, path, body in API_ROUTES:
            if "/1" in path:
                response = call(client, method, path.replace("/1", f"/{connection_id}"), body)
                assert_error(response, 422, "validation_error", connection_id)


@sqlite_only
def test_unknown_route_and_wrong_method_are_json_errors(app_server: AppServer) -> None:
    assert_error(app_server.client.get("/api/nothing-here"), 404, "not_found")
    assert_error(app_server.client.put("/api/connections/1"), 405, "method_not_allowed")


# -- disconnect --------------------------------------------------------------------------------------


def test_delete_revokes_at_lightspeed_and_deletes_the_tokens(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("user-1")
    assert sim.account(record.account_id)["active_refresh_tokens"] == 1

    response = app_server.client.delete(f"/api/connections/{record.id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CONNECTION_FIELDS and body["status"] == "disconnected" and body["id"] == record.id
    assert sim.account(record.account_id)["active_refresh_tokens"] == 0
    row = app_server.row(record.id)
    assert row["access_token"] is None and row["refresh_token"] is None and row["status"] == "disconnected"
    assert_error(app_server.client.post(f"/api/connections/{record.id}/token"), 409, "connection_expired")

    revokes = sim.stats()["revoke_requests"]
    again = app_server.client.delete(f"/api/connections/{record.id}")  # harmless the second time
    assert again.status_code == 200 and again.json()["status"] == "disconnected"
    assert sim.stats()["revoke_requests"] == revokes  # nothing left to revoke


def test_delete_of_a_token_lightspeed_already_killed_still_disconnects(
    app_server: AppServer, sim: SimulatorControl
) -> None:
    record = app_server.connect("user-1")
    sim.revoke_account(record.account_id)  # the merchant uninstalled the app in Lightspeed
    response = app_server.client.delete(f"/api/connections/{record.id}")
    assert response.status_code == 200 and response.json()["status"] == "disconnected"
    assert app_server.row(record.id)["refresh_token"] is None


def test_delete_when_lightspeed_cannot_revoke_is_503_and_changes_nothing(
    app_server: AppServer, sim: SimulatorControl
) -> None:
    record = app_server.connect("user-1")
    before = app_server.row(record.id)
    sim.inject_fault("revoke", "status", status=503)

    assert_error(app_server.client.delete(f"/api/connections/{record.id}"), 503, "provider_unavailable")

    after = app_server.row(record.id)
    kept = ("status", "access_token", "refresh_token", "token_version", "token_expires_at", "last_error")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert after["acquired_by"] is None  # the lease taken for the revoke was given back
    assert sim.account(record.account_id)["active_refresh_tokens"] == 1
    assert app_server.client.delete(f"/api/connections/{record.id}").status_code == 200  # a retry works


# -- fresh token -------------------------------------------------------------------------------------


def test_token_route_returns_a_token_that_works_at_lightspeed(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("user-1")
    response = app_server.client.post(f"/api/connections/{record.id}/token")
    assert response.status_code == 200, response.text
    grant = response.json()
    assert set(grant) == {"access_token", "expires_at", "account_id"}
    assert grant["account_id"] == record.account_id
    assert when(grant["expires_at"]) >= app_server.clock() + LEEWAY
    account = httpx2.get(
        f"{app_server.simulator.url}/API/V3/Account.json",
        headers={"Authorization": f"Bearer {grant['access_token']}"},
        timeout=10,
    )
    assert account.status_code == 200, account.text
    assert account.json()["Account"]["accountID"] == record.account_id
    assert sim.account(record.account_id)["refreshes"] == 0  # still fresh: no refresh was needed


def test_token_route_refreshes_an_expiring_token_exactly_once(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("user-1")
    old = app_server.client.post(f"/api/connections/{record.id}/token").json()["access_token"]
    app_server.clock.advance(seconds=EXPIRING_SOON)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: app_server.client.post(f"/api/connections/{record.id}/token"), range(8)))

    assert [a.status_code for a in answers] == [200] * 8
    tokens = {a.json()["access_token"] for a in answers}
    assert len(tokens) == 1 and old not in tokens  # every caller got the one new token
    assert sim.account(record.account_id)["refreshes"] == 1
    [expires_at] = {a.json()["expires_at"] for a in answers}
    assert when(expires_at) >= app_server.clock() + LEEWAY
    again = app_server.client.post(f"/api/connections/{record.id}/token").json()
    assert again["access_token"] in tokens and sim.account(record.account_id)["refreshes"] == 1


def test_expired_connection_is_409_connection_expired(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("user-1")
    sim.revoke_account(record.account_id)
    app_server.clock.advance(seconds=EXPIRING_SOON)

    assert_error(app_server.client.post(f"/api/connections/{record.id}/token"), 409, "connection_expired")
    assert app_server.row(record.id)["status"] == "expired"
    assert app_server.client.get(f"/api/connections/{record.id}").json()["status"] == "expired"
    invalid_grants = sim.stats()["invalid_grant"]
    assert_error(app_server.client.post(f"/api/connections/{record.id}/token"), 409, "connection_expired")
    assert_error(app_server.client.post("/api/refresh", json={"connection_id": record.id}), 409, "connection_expired")
    stock = app_server.client.post(f"/api/connections/{record.id}/stock", json=STOCK)
    assert_error(stock, 409, "connection_expired")
    assert sim.stats()["invalid_grant"] == invalid_grants  # an expired connection is not tried again


def test_token_route_says_provider_unavailable_and_keeps_the_tokens_on_a_lightspeed_outage(
    app_server: AppServer, sim: SimulatorControl
) -> None:
    record = app_server.connect("user-1")
    before = app_server.row(record.id)
    app_server.clock.advance(seconds=EXPIRING_SOON)
    sim.inject_fault("token", "status", status=503)

    assert_error(app_server.client.post(f"/api/connections/{record.id}/token"), 503, "provider_unavailable")
    after = app_server.row(record.id)
    assert after["status"] == "error" and after["last_error"]
    assert after["refresh_token"] == before["refresh_token"]  # a failure never destroys a token
    assert app_server.client.get(f"/api/connections/{record.id}").json()["status"] == "error"


# -- refresh runs ------------------------------------------------------------------------------------


def test_refresh_answers_at_once_and_the_run_completes_in_the_background(
    app_server: AppServer, sim: SimulatorControl
) -> None:
    first = app_server.connect("user-1")
    second = app_server.connect("user-2")
    sim.configure(token_latency_ms=800)  # each refresh takes a while at Lightspeed

    started = time.monotonic()
    response = app_server.client.post("/api/refresh")
    elapsed = time.monotonic() - started

    assert response.status_code == 202, response.text
    assert set(response.json()) == {"run_id"}
    assert elapsed < 0.5, f"POST /api/refresh took {elapsed:.2f} s: the run must go on in the background"
    run_id = response.json()["run_id"]
    [listed] = app_server.client.get("/api/runs").json()
    assert listed["run_id"] == run_id and listed["status"] == "running" and listed["trigger"] == "api"

    run = app_server.wait_for_run(run_id)
    assert run["status"] == "completed", run
    assert (run["total"], run["refreshed"], run["errors"], run["connection_id"]) == (2, 2, 0, None)
    for record in (first, second):
        assert sim.account(record.account_id)["refreshes"] == 1


def test_refresh_of_one_connection_refreshes_only_it(app_server: AppServer, sim: SimulatorControl) -> None:
    first = app_server.connect("user-1")
    second = app_server.connect("user-2")
    response = app_server.client.post("/api/refresh", json={"connection_id": first.id})
    assert response.status_code == 202
    run = app_server.wait_for_run(response.json()["run_id"])
    assert run["status"] == "completed" and run["connection_id"] == first.id and run["refreshed"] == 1
    assert sim.account(first.account_id)["refreshes"] == 1
    assert sim.account(second.account_id)["refreshes"] == 0


def test_refresh_and_runs_refuse_malformed_input(app_server: AppServer) -> None:
    bodies: list[Any] = [{"connection_id": 0}, {"connection_id": "x"}, {"connection_id": 2**40}, [1], "1"]
    for body in bodies:
        assert_error(app_server.client.post("/api/refresh", json=body), 422, "validation_error", repr(body))
    for limit in ["0", "1001", "x", "-5"]:
        assert_error(app_server.client.get("/api/runs", params={"limit": limit}), 422, "validation_error", limit)
    assert app_server.client.get("/api/runs").json() == []


def test_runs_lists_the_history_as_runs_json(app_server: AppServer) -> None:
    app_server.connect("user-1")
    app_server.wait_for_run(app_server.client.post("/api/refresh").json()["run_id"])
    app_server.keeper.refresh(trigger="manual")

    response = app_server.client.get("/api/runs")
    assert response.status_code == 200
    runs = response.json()
    assert [set(r) for r in runs] == [RUN_FIELDS, RUN_FIELDS]
    cli = [RunView.model_validate(run).document() for run in app_server.keeper.run_history()]  # `runs --json`
    assert runs == cli
    for run in runs:
        assert_times_documented(run)
    assert [r["trigger"] for r in runs] == ["manual", "api"]  # newest first
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert len(app_server.client.get("/api/runs", params={"limit": 1}).json()) == 1


# -- no token in any answer --------------------------------------------------------------------------


def test_no_answer_but_the_token_routes_holds_a_token(app_server: AppServer, sim: SimulatorControl) -> None:
    """Drive every route, to success and to failure, then look for every token the simulator issued."""
    first = app_server.connect("user-1")
    second = app_server.connect("user-2")
    client = app_server.client
    client.post(f"/api/connections/{first.id}/token")
    client.post("/api/connect-sessions", json={"user_id": "user-3"})
    client.get("/api/connections")
    client.get(f"/api/connections/{first.id}")
    app_server.wait_for_run(client.post("/api/refresh").json()["run_id"])
    client.post(f"/api/connections/{first.id}/stock", json=STOCK)
    client.get("/api/runs")
    app_server.clock.advance(seconds=EXPIRING_SOON)
    sim.inject_fault("token", "status", status=500)
    client.post(f"/api/connections/{second.id}/token")
    client.get(f"/api/connections/{second.id}")
    sim.inject_fault("revoke", "status", status=503)
    client.delete(f"/api/connections/{first.id}")
    client.delete(f"/api/connections/{first.id}")
    client.get("/api/connections")
    client.get("/healthz")
    client.get("/metrics")

    tokens = app_server.issued_tokens()
    assert len(tokens) >= 8  # two connects and two refreshes, each a pair
    assert len(app_server.transcript.bodies) >= 16
    leaks = app_server.transcript.leaks(tokens)
    assert not leaks, leaks


# -- health and metrics ------------------------------------------------------------------------------


def test_healthz_is_ok_when_the_schema_is_current(app_server: AppServer) -> None:
    response = app_server.client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("status", "database", "schema")} == {
        "status": "ok",
        "database": "ok",
        "schema": head_revision(),
    }
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "migrations": True,
        "scheduler": True,
    }


def test_healthz_is_503_when_the_schema_is_not_the_codes(app_server: AppServer) -> None:
    with app_server.keeper.store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    response = app_server.client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["schema"] == "ffffffffffff"
    assert body["expected_schema"] == head_revision()

    with app_server.keeper.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    missing = app_server.client.get("/healthz")
    assert missing.status_code == 503 and missing.json()["status"] == "unavailable"


@sqlite_only
def test_metrics_speaks_the_prometheus_text_format(app_server: AppServer) -> None:
    response = app_server.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    lines = response.text.splitlines()
    assert any(line.startswith("# HELP ") for line in lines)
    assert any(line.startswith("# TYPE ") for line in lines)
    samples = [line for line in lines if line and not line.startswith("#")]
    assert samples and all(len(line.split(" ")) >= 2 for line in samples)


# -- the schema --------------------------------------------------------------------------------------


@sqlite_only
def test_openapi_describes_every_api_route_its_key_and_its_errors(app_server: AppServer) -> None:
    schema = app_server.client.get("/openapi.json").json()
    api_operations = {
        (method.upper(), path) for path, item in schema["paths"].items() if path.startswith("/api/") for method in item
    }
    documented = {(method, path.replace("/1", "/{connection_id}")) for method, path, _ in API_ROUTES}
    documented = {(m, p.replace("lightspeed/Item.json", "lightspeed/{path}")) for m, p in documented}
    assert api_operations == documented
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, item in schema["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("security") == [{"apiKey": []}], where
            responses = operation["responses"]
            assert {"401", "422", "503"} <= set(responses), where
            assert any(code.startswith("2") and "content" in answer for code, answer in responses.items()), where
            if "{connection_id}" in path:
                assert "404" in responses, where
                [parameter] = [p for p in operation["parameters"] if p["name"] == "connection_id"]
                assert parameter["schema"]["minimum"] == 1 and parameter["schema"]["maximum"] == 2**31 - 1, where
    refresh = schema["paths"]["/api/refresh"]["post"]
    assert "requestBody" in refresh and {"202", "404", "409"} <= set(refresh["responses"])
    assert "requestBody" in schema["paths"]["/api/connect-sessions"]["post"]
    assert "409" in schema["paths"]["/api/connections/{connection_id}/token"]["post"]["responses"]
    assert "503" in schema["paths"]["/healthz"]["get"]["responses"]

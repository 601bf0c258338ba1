"""Issue 19, keys with names and scopes (``LIGHTKEEPER_API_KEYS``), from outside: over HTTP against the app on
loopback, and through the real ``lightkeeper`` command.

Each route needs one scope; a known key without it gets 403 ``insufficient_scope`` naming the scope, before the
body is read. Two keys of one name both work (rotation without downtime). Logs and metrics name keys, never their
values. A malformed entry stops every command (exit 2) naming its position. Dashboard sessions belong to an
``admin`` key: removing or rotating that key, or signing out, ends them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx2
import pytest

from lightkeeper.apikeys import Scope
from tests.acceptance.conftest import Lightkeeper, describe
from tests.acceptance.test_cli import error_line
from tests.dashboard.conftest import Operator, form
from tests.security.conftest import raw_http, request_head, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key

STOCK = {"updates": [{"item_id": 1, "shop_id": 1, "qoh": 3}]}
#: Every /api/ route (and /metrics) with the scope it needs.
ROUTES: list[tuple[str, str, Any, Scope]] = [
    ("GET", "/api/connections", None, Scope.READ),
    ("GET", "/api/connections/1", None, Scope.READ),
    ("GET", "/api/runs", None, Scope.READ),
    ("GET", "/metrics", None, Scope.READ),
    ("POST", "/api/connect-sessions", {"user_id": "user-1"}, Scope.CONNECT),
    ("DELETE", "/api/connections/1", None, Scope.CONNECT),
    ("POST", "/api/connections/1/token", None, Scope.TOKENS),
    ("GET", "/api/connections/1/lightspeed/Item.json", None, Scope.PROXY),
    ("PUT", "/api/connections/1/lightspeed/Item/1.json", {"qoh": 1}, Scope.PROXY),
    ("GET", "/api/connections/1/lightspeed", None, Scope.PROXY),
    ("POST", "/api/connections/1/stock", STOCK, Scope.PROXY),
    ("POST", "/api/refresh", {"connection_id": 1}, Scope.REFRESH),
]
KEYS = {scope: new_api_key() for scope in Scope}


def keys_setting(keys: dict[Scope, str]) -> str:
    return ";".join(f"{scope.value}-key:{scope.value}:{key}" for scope, key in keys.items())


def call(client: httpx2.Client, method: str, path: str, body: Any) -> httpx2.Response:
    return client.request(method, path, json=body) if body is not None else client.request(method, path)


@sqlite_only
def test_each_route_takes_the_keys_with_its_scope_and_refuses_the_others_with_403(serve_app: ServeApp) -> None:
    with serve_app(LIGHTKEEPER_API_KEYS=keys_setting(KEYS)) as server:
        for scope, key in KEYS.items():
            with server.anonymous(Authorization=f"Bearer {key}") as client:
                for method, path, body, needed in ROUTES:
                    answer = call(client, method, path, body)
                    if scope in (needed, Scope.ADMIN):
                        assert answer.status_code not in (401, 403), (scope, method, path, answer.text)
                    else:
                        assert answer.status_code == 403, (scope, method, path, answer.text)
                        assert answer.json()["code"] == "insufficient_scope"
                        assert f"'{needed.value}'" in answer.json()["message"], answer.text
                        assert f'scope="{needed.value}"' in answer.headers["www-authenticate"]
        with server.anonymous(Authorization=f"Bearer {new_api_key()}") as stranger:
            assert stranger.get("/api/connections").status_code == 401


@sqlite_only
def test_the_single_key_keeps_every_scope_next_to_named_keys(serve_app: ServeApp) -> None:
    single = new_api_key()
    with serve_app(LIGHTKEEPER_API_KEY=single, LIGHTKEEPER_API_KEYS=f"web:read:{KEYS[Scope.READ]}") as server:
        for method, path, body, _ in ROUTES:
            assert call(server.client, method, path, body).status_code not in (401, 403), (method, path)
        with server.anonymous(Authorization=f"Bearer {KEYS[Scope.READ]}") as web:
            assert web.get("/api/connections").status_code == 200
            assert web.post("/api/refresh").status_code == 403


@sqlite_only
def test_a_key_outside_its_scope_is_refused_before_the_body_is_read(serve_app: ServeApp) -> None:
    with serve_app(LIGHTKEEPER_API_KEYS=keys_setting(KEYS)) as server:
        headers = {
            "Authorization": f"Bearer {KEYS[Scope.READ]}",
            "Content-Type": "application/json",
            "Content-Length": "100000",  # promised, never sent: only an answer from the headers can come back
        }
        status, answer = raw_http(
            server.url, request_head("POST", f"{server.url}/api/connect-sessions", headers), read_timeout=5
        )
    assert status == 403 and b"insufficient_scope" in answer


@sqlite_only
def test_two_keys_of_one_name_both_work_so_a_key_rotates_without_downtime(serve_app: ServeApp) -> None:
    old, new = new_api_key(), new_api_key()
    with serve_app(LIGHTKEEPER_API_KEYS=f"web:read,connect:{old};web:read,connect:{new}") as server:
        for key in (old, new):
            with server.anonymous(Authorization=f"Bearer {key}") as client:
                assert client.get("/api/connections").status_code == 200
                assert client.post("/api/connect-sessions", json={"user_id": "u"}).status_code == 201
    removed = f"web:read,connect:{new}"  # the old one removed
    with serve_app(LIGHTKEEPER_API_KEYS=removed) as server, server.anonymous(Authorization=f"Bearer {old}") as client:
        assert client.get("/api/connections").status_code == 401


@sqlite_only
def test_logs_and_metrics_name_the_key_never_its_value(serve_app: ServeApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serve_app(LIGHTKEEPER_API_KEYS=keys_setting(KEYS)) as server:
        with server.anonymous(Authorization=f"Bearer {KEYS[Scope.TOKENS]}") as worker:
            assert worker.get("/api/connections").status_code == 403
        with server.anonymous(Authorization=f"Bearer {KEYS[Scope.PROXY]}") as proxy:
            assert proxy.get("/api/connections/1/lightspeed/Item.json").status_code == 404
        with server.anonymous(Authorization=f"Bearer {KEYS[Scope.READ]}") as prometheus:
            metrics = prometheus.get("/metrics").text

    assert "API request refused (insufficient_scope): GET /api/connections from 127.0.0.1 with key 'tokens-key'" in (
        caplog.text
    )
    proxied = [r for r in caplog.records if getattr(r, "event", None) == "proxy"]
    assert proxied and {r.fields["key"] for r in proxied} == {"proxy-key"}  # type: ignore[attr-defined]
    refused = re.search(
        r'lightkeeper_api_key_requests_total\{key="tokens-key",result="insufficient_scope"\} (\S+)', metrics
    )
    assert refused is not None and float(refused.group(1)) >= 1
    assert 'lightkeeper_api_key_requests_total{key="admin-key",result="allowed"}' in metrics  # from 0
    for key in KEYS.values():
        assert key not in caplog.text and key not in metrics


# -- the command line ----------------------------------------------------------------------------------


def test_a_malformed_entry_stops_every_command_naming_its_position_never_its_key(cli: Lightkeeper) -> None:
    good, bad = new_api_key(), "short-key-" + "s" * 12
    for setting, problem in [
        (f"web:read:{good};worker:tokens:{bad};ops:admin:{new_api_key()}", "entry 2 of 3 (worker): KEY must be"),
        (f"web:read:{good};Ops:admin:{new_api_key()}", "entry 2 of 2: NAME must be"),
        (f"web:read,write:{good}", "entry 1 of 1 (web): each SCOPE must be one of"),
        (f"web:{good}", "entry 1 of 1 is not NAME:SCOPE[,SCOPE...]:KEY"),
        (f"web:read:{good};ops:admin:{good}", "entry 2 of 2 repeats the key of entry 1"),
    ]:
        results = cli.many(
            ["check-config"],
            ["status"],
            ["runs"],
            ["serve", "--host", "127.0.0.1", "--port", str(cli.port)],
            env_extra={"LIGHTKEEPER_API_KEYS": setting},
        )
        for result in results:
            assert result.returncode == 2, describe(result)
            assert f"LIGHTKEEPER_API_KEYS ({problem}" in error_line(result), describe(result)
            assert good not in result.stdout + result.stderr and bad not in result.stdout + result.stderr


def test_gen_api_key_prints_a_key_that_fits_an_entry(cli: Lightkeeper) -> None:
    keys = {cli("gen-api-key", check=0).stdout.strip() for _ in range(2)}
    assert len(keys) == 2
    for key in keys:
        assert len(key) >= 32 and ":" not in key and ";" not in key and key.isprintable() and " " not in key
    setting = ";".join(f"ops{n}:admin:{key}" for n, key in enumerate(keys))
    cli("check-config", env_extra={"LIGHTKEEPER_API_KEYS": setting}, check=0)


# -- dashboard sessions --------------------------------------------------------------------------------


def signed_in(server: AppServer, browser: httpx2.Client, key: str) -> str:
    operator = Operator(server, browser)
    answer = operator.sign_in(key)
    assert answer.status_code == 303, answer.text
    return browser.cookies["lk_dashboard"]


def dashboard_with(server: AppServer, session: str) -> httpx2.Response:
    return httpx2.get(f"{server.url}/dashboard", cookies={"lk_dashboard": session}, timeout=10)


@sqlite_only
def test_only_an_admin_key_opens_the_dashboard(serve_app: ServeApp) -> None:
    ops, web = new_api_key(), new_api_key()
    with serve_app(LIGHTKEEPER_API_KEYS=f"ops:admin:{ops};web:read,connect,tokens,proxy,refresh:{web}") as server:
        with httpx2.Client(base_url=server.url, timeout=10) as browser:
            refused = Operator(server, browser).sign_in(web)
            assert refused.status_code == 403 and "lk_dashboard" not in browser.cookies
            session = signed_in(server, browser, ops)
        with server.anonymous(Authorization=f"Bearer {web}") as script:
            assert script.get("/dashboard").status_code == 403
        with server.anonymous(Authorization=f"Bearer {ops}") as script:
            assert script.get("/dashboard").status_code == 200
    assert ops not in session and web not in session and ".ops." in session


@sqlite_only
def test_a_session_ends_when_its_key_is_removed_or_rotated_and_outlives_other_keys(serve_app: ServeApp) -> None:
    ops, rotated, web = new_api_key(), new_api_key(), new_api_key()
    with serve_app(LIGHTKEEPER_API_KEYS=f"ops:admin:{ops};web:read:{web}") as first:
        with httpx2.Client(base_url=first.url, timeout=10) as browser:
            session = signed_in(first, browser, ops)
        clock = first.clock.current

    for setting, accepted in [
        (f"ops:admin:{ops}", True),  # another key removed: this session stays
        (f"ops:admin:{ops};ops:admin:{rotated}", True),  # rotation under way: both keys of "ops" work
        (f"ops:admin:{rotated}", False),  # rotated: the old key's sessions end
        (f"web:read:{web};other:admin:{ops}", False),  # the same key under another name is another key
        (f"ops:read:{ops}", False),  # no longer admin
    ]:
        with serve_app(LIGHTKEEPER_API_KEYS=setting) as other:  # another process on the same database
            other.clock.current = clock
            page = dashboard_with(other, session)
            assert ("Connections" in page.text) is accepted, setting
            assert page.status_code == (200 if accepted else 401), setting
    with serve_app(LIGHTKEEPER_API_KEY=new_api_key()) as other:  # only the single key: "ops" is gone
        other.clock.current = clock
        assert dashboard_with(other, session).status_code == 401


@sqlite_only
def test_sign_out_ends_the_session_on_the_server_side(app_server: AppServer) -> None:
    with httpx2.Client(base_url=app_server.url, timeout=10) as browser:
        operator = Operator(app_server, browser)
        page = operator.signed_in_page()
        copied = browser.cookies["lk_dashboard"]
        assert "Connections" in dashboard_with(app_server, copied).text
        out = browser.post("/dashboard/logout", data=form(page, "/dashboard/logout"))
        assert out.status_code == 303

    replayed = dashboard_with(app_server, copied)  # a copy of the cookie, kept by someone else
    assert replayed.status_code == 401 and "Connections" not in replayed.text

"""The JSON API's door: the bearer key is checked before a body is read, bodies are capped as they stream,
dev mode opens nothing beyond this machine, and every refusal is logged without the presented key.

The body tests talk raw HTTP over a socket: they promise a large body, send only part of it (or none), and
wait for the answer. A server that reads before it decides never answers; one that decides first does.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import httpx2
import pytest

from lightkeeper.web import BackgroundServer, create_app
from tests.security.conftest import raw_http, request_head, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key

MIB = 1024 * 1024
STOCK_ROW = {"item_id": 1, "qoh": 1, "shop_id": 1}


def error_code(answer: bytes) -> str:
    code: str = json.loads(answer.partition(b"\r\n\r\n")[2])["code"]
    return code


# -- the key before the body -------------------------------------------------------------------------


@sqlite_only
def test_an_unauthenticated_12_mb_post_is_refused_before_its_body_is_read(app_server: AppServer) -> None:
    for authorization in ({}, {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}):
        head = request_head(
            "POST",
            f"{app_server.url}/api/connect-sessions",
            {"Content-Type": "application/json", "Content-Length": str(12 * MIB), **authorization},
        )
        status, answer = raw_http(app_server.url, head, b'{"user_id": "' + b"x" * 1000, read_timeout=5)
        assert status == 401 and error_code(answer) == "unauthorized", answer[:300]
    assert app_server.client.get("/api/connections").json() == []


@sqlite_only
def test_a_disabled_api_refuses_before_the_body_too(serve_app: ServeApp) -> None:
    with serve_app() as server:
        head = request_head("POST", f"{server.url}/api/refresh", {"Content-Length": str(12 * MIB)})
        status, answer = raw_http(server.url, head, read_timeout=5)
    assert status == 503 and error_code(answer) == "api_disabled"


@sqlite_only
def test_every_refusal_is_logged_with_route_and_address_never_the_key(
    app_server: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    presented = "Bearer not-the-key-but-a-secret-nonetheless-1234"
    with (
        caplog.at_level(logging.WARNING, logger="lightkeeper.web.auth"),
        app_server.anonymous(Authorization=presented) as client,
    ):
        assert client.post("/api/connections/7/token").status_code == 401
    [record] = [r for r in caplog.records if r.name == "lightkeeper.web.auth"]
    assert "POST /api/connections/7/token" in record.getMessage()
    assert "127.0.0.1" in record.getMessage()
    assert "not-the-key" not in caplog.text and app_server.api_key not in caplog.text


# -- body caps ---------------------------------------------------------------------------------------


@sqlite_only
def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(app_server: AppServer) -> None:
    auth = {"Authorization": f"Bearer {app_server.api_key}", "Content-Type": "application/json"}
    head = request_head("POST", f"{app_server.url}/api/connect-sessions", {**auth, "Content-Length": str(MIB + 1)})
    status, answer = raw_http(app_server.url, head, read_timeout=5)
    assert status == 413 and error_code(answer) == "payload_too_large", answer[:300]


@sqlite_only
def test_a_chunked_body_is_cut_off_where_it_crosses_the_cap(app_server: AppServer) -> None:
    auth = {"Authorization": f"Bearer {app_server.api_key}", "Content-Type": "application/json"}
    head = request_head("POST", f"{app_server.url}/api/connect-sessions", {**auth, "Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    # 17 chunks of 64 KiB: just over 1 MiB, and no final chunk (the client would go on and on).
    status, answer = raw_http(app_server.url, head, chunk * 17, read_timeout=5)
    assert status == 413 and error_code(answer) == "payload_too_large", answer[:300]

    below = app_server.client.post(
        "/api/connect-sessions",
        content=iter([b'{"user_id": "u-1"}', b" " * (MIB - 100)]),  # chunked, under 1 MiB
        headers={"Content-Type": "application/json"},
    )
    assert below.status_code == 201, below.text


@sqlite_only
def test_the_stock_route_has_its_own_larger_cap(app_server: AppServer) -> None:
    padded = json.dumps({"updates": [STOCK_ROW]}).encode() + b" " * (2 * MIB)  # 2 MiB: over 1 MiB, under 4 MiB
    accepted = app_server.client.post(
        "/api/connections/424242/stock", content=padded, headers={"Content-Type": "application/json"}
    )
    assert accepted.status_code == 404 and accepted.json()["code"] == "connection_not_found"  # read and parsed
    elsewhere = app_server.client.post("/api/refresh", content=padded, headers={"Content-Type": "application/json"})
    assert elsewhere.status_code == 413 and elsewhere.json()["code"] == "payload_too_large"

    auth = {"Authorization": f"Bearer {app_server.api_key}", "Content-Type": "application/json"}
    head = request_head("POST", f"{app_server.url}/api/connections/1/stock", {**auth, "Content-Length": str(5 * MIB)})
    status, answer = raw_http(app_server.url, head, read_timeout=5)
    assert status == 413 and error_code(answer) == "payload_too_large"


@sqlite_only
def test_the_caps_follow_the_settings(serve_app: ServeApp) -> None:
    env = {"LIGHTKEEPER_API_KEY": new_api_key(), "LIGHTKEEPER_MAX_BODY_BYTES": "2048"}
    with serve_app(**env) as server:
        json_type = {"Content-Type": "application/json"}
        small = server.client.post(
            "/api/connect-sessions", content=b'{"user_id": "u"}' + b" " * 1000, headers=json_type
        )
        large = server.client.post(
            "/api/connect-sessions", content=b'{"user_id": "u"}' + b" " * 3000, headers=json_type
        )
    assert small.status_code == 201 and large.status_code == 413


@sqlite_only
def test_a_page_form_over_the_cap_gets_a_page(app_server: AppServer) -> None:
    answer = httpx2.post(
        f"{app_server.url}/connect-lightspeed/disconnect", data={"connection_id": "1", "csrf": "x" * (2 * MIB)}
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html") and "too large" in answer.text


# -- dev mode ----------------------------------------------------------------------------------------


@sqlite_only
def test_dev_mode_answers_this_machine_only_and_never_through_a_proxy(serve_app: ServeApp) -> None:
    with serve_app(LIGHTKEEPER_DEV="1") as server:
        with server.anonymous() as local:
            assert local.get("/api/connections").status_code == 200
        for proxy in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-For": "127.0.0.1"},
            {"Forwarded": "for=127.0.0.1"},
            {"X-Real-IP": "127.0.0.1"},
        ):
            with server.anonymous(**proxy) as proxied:
                answer = proxied.get("/api/connections")
                assert answer.status_code == 401 and answer.json()["code"] == "unauthorized", proxy


def _outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def on_every_interface(serve_app: ServeApp) -> Iterator[str]:
    """A dev-mode app listening on 0.0.0.0, reached through this machine's non-loopback address."""
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the server from")
    with serve_app(LIGHTKEEPER_DEV="1") as server, BackgroundServer(create_app(server.keeper), host="0.0.0.0") as wide:
        yield wide.url.replace("0.0.0.0", address)


@sqlite_only
def test_dev_mode_refuses_a_client_that_is_not_this_machine(on_every_interface: str) -> None:
    answer = httpx2.get(f"{on_every_interface}/api/connections", timeout=10)
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    assert httpx2.get(f"{on_every_interface}/healthz", timeout=10).status_code == 200  # the rest still works

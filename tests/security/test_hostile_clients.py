"""Issue 19, hostile clients: from outside, over HTTP, against the app served on loopback.

Label values of /metrics come from closed sets, and /metrics on the app port needs a key with the ``read`` scope;
the interactive docs are off and the schema needs a key; a malformed dashboard cookie is a 401, never a 500;
a plain-http public URL on another host is refused. (The dashboard's: tests/dashboard/test_hardening.py.)
"""

from __future__ import annotations

import logging
import time

import pytest

from lightkeeper.web import BackgroundServer, create_app
from tests.acceptance.conftest import Lightkeeper, describe
from tests.acceptance.test_cli import error_line
from tests.security.conftest import raw_http, request_head, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key

REQUESTS = 2000
METHOD_BYTES = 8192


def metrics_text(server: AppServer) -> str:
    answer = server.client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


# -- /metrics ------------------------------------------------------------------------------------------


@sqlite_only
def test_any_method_name_counts_as_other_and_never_grows_the_scrape(app_server: AppServer) -> None:
    # httptools answers 400 to a method it does not know; h11 (uvicorn --http h11, or without httptools) passes any
    # token on to the app: that server is the one a hostile client can use.
    before = metrics_text(app_server)
    started = time.monotonic()
    with BackgroundServer(create_app(app_server.keeper), http="h11") as h11:
        for number in range(REQUESTS):
            method = (f"X{number}" + "A" * METHOD_BYTES)[:METHOD_BYTES]
            status, _ = raw_http(h11.url, request_head(method, f"{h11.url}/healthz", {"Connection": "close"}))
            assert status == 405, status  # it reached the app
    after = metrics_text(app_server)  # the same process: the same registry

    assert len(after) - len(before) < 10_000, f"/metrics grew by {len(after) - len(before)} bytes"
    assert max(len(line) for line in after.splitlines()) < 1000
    assert 'method="OTHER"' in after or "X0AAAA" not in after
    assert "AAAAAAAA" not in after
    assert time.monotonic() - started < 120


@sqlite_only
def test_metrics_on_the_app_port_need_a_key_with_the_read_scope(serve_app: ServeApp) -> None:
    reader, tokens = new_api_key(), new_api_key()
    keys = f"prometheus:read:{reader};worker:tokens,proxy:{tokens}"
    with serve_app(LIGHTKEEPER_API_KEYS=keys) as server:
        with server.anonymous() as anonymous:
            refused = anonymous.get("/metrics")
        with server.anonymous(Authorization=f"Bearer {tokens}") as worker:
            no_scope = worker.get("/metrics")
        with server.anonymous(Authorization=f"Bearer {reader}") as prometheus:
            scraped = prometheus.get("/metrics")

    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert "lightkeeper_" not in refused.text
    assert no_scope.status_code == 403 and no_scope.json()["code"] == "insufficient_scope"
    assert "'read'" in no_scope.json()["message"] and "lightkeeper_" not in no_scope.text
    assert scraped.status_code == 200 and "lightkeeper_http_requests_total" in scraped.text
    assert reader not in scraped.text and tokens not in scraped.text


# -- the interactive docs and the schema ---------------------------------------------------------------


@sqlite_only
def test_the_docs_are_off_unless_asked_for_and_the_schema_needs_a_key(serve_app: ServeApp) -> None:
    key = new_api_key()
    with serve_app(LIGHTKEEPER_API_KEY=key) as server, server.anonymous() as anonymous:
        assert anonymous.get("/docs").status_code == 404
        assert anonymous.get("/redoc").status_code == 404
        assert anonymous.get("/docs/oauth2-redirect").status_code == 404
        assert anonymous.get("/openapi.json").status_code == 401
        assert server.client.get("/openapi.json").json()["info"]["title"] == "lightkeeper"
    with serve_app(LIGHTKEEPER_API_KEY=key, LIGHTKEEPER_DOCS="1") as server, server.anonymous() as anonymous:
        assert anonymous.get("/docs").status_code == 200
        assert anonymous.get("/redoc").status_code == 200


# -- a malformed dashboard cookie ----------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    "value",
    [
        b"\xb2.x",  # a superscript two (latin-1): str.isdigit() says yes, int() says no
        "².x".encode(),
        b"9" * 5000 + b".x",  # more digits than int() converts
        b"1." + b"9" * 5000,
        b"." * 300,
        b"99999999999999999999.ops.0123456789abcdef.aaaaaaaaaaaaaaaaaaaa." + b"0" * 64,
    ],
    ids=["latin1-superscript", "utf8-superscript", "5000-digits", "5000-digit-mac", "dots", "forged"],
)
def test_a_malformed_session_cookie_is_a_401_never_a_500(
    app_server: AppServer, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    head = request_head("GET", f"{app_server.url}/dashboard", {"Connection": "close"})
    head = head[:-2] + b"Cookie: lk_dashboard=" + value + b"\r\n\r\n"

    status, answer = raw_http(app_server.url, head)

    assert status == 401, answer[:500]
    assert b"Sign in" in answer and b"Traceback" not in answer
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


# -- a plain-http public URL ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://lightkeeper.example.com", "http://10.0.0.5:8000", "HTTP://app.example"])
def test_a_plain_http_public_url_on_another_host_is_refused(cli: Lightkeeper, url: str) -> None:
    results = cli.many(
        ["check-config"],
        ["serve", "--host", "127.0.0.1", "--port", str(cli.port)],
        env_extra={"LIGHTKEEPER_PUBLIC_URL": url},
    )
    for result in results:
        assert result.returncode == 2, describe(result)
        assert "LIGHTKEEPER_PUBLIC_URL (must be an https:// URL" in error_line(result), describe(result)


def test_a_plain_http_public_url_on_this_machine_and_https_anywhere_are_accepted(cli: Lightkeeper) -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "https://lightkeeper.example.com"):
        cli("check-config", env_extra={"LIGHTKEEPER_PUBLIC_URL": url}, check=0)

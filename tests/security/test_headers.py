"""Security headers on every answer: pages cannot be framed, leak no Referer, run no script; nothing that
holds a token (or a merchant's page) is cached."""

from __future__ import annotations

import httpx2

from lightkeeper.simulator import SimulatorControl
from tests.security.conftest import Flow, consent, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key

FIXED = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def assert_secure(answer: httpx2.Response, lightspeed: str) -> None:
    where = f"{answer.request.method} {answer.request.url.path} ({answer.status_code})"
    for name, value in FIXED.items():
        assert answer.headers.get(name) == value, f"{where}: {name} is {answer.headers.get(name)!r}"
    policy = [part.strip() for part in answer.headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in policy, where
    assert "default-src 'none'" in policy, where
    assert f"form-action 'self' {lightspeed}" in policy, where  # the confirm POST's redirect goes there
    assert not any("script-src" in part or "unsafe-inline" in part for part in policy), where


def test_every_page_and_every_answer_carries_the_headers(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    lightspeed = app_server.simulator.url
    merchant = flows["merchant"]
    link = app_server.link("merchant-1")
    confirm, fields = merchant.confirm_page(link)
    started = merchant.post_confirm(fields)
    connected = merchant.browser.get(consent(started.headers["location"]))
    assert connected.status_code == 200
    [connection] = app_server.client.get("/api/connections").json()
    token = app_server.client.post(f"/api/connections/{connection['id']}/token")
    assert token.status_code == 200 and "access_token" in token.json()

    answers = [
        confirm,
        started,
        connected,
        merchant.browser.get(f"{app_server.url}/connect-lightspeed"),
        httpx2.get(link, timeout=10),  # the used link's page
        httpx2.get(f"{app_server.url}/oauth/callback?state=x&code=y", timeout=10),
        httpx2.get(f"{app_server.url}/connect-lightspeed", timeout=10),  # no session
        token,
        app_server.client.get("/api/connections"),
        httpx2.get(f"{app_server.url}/api/connections", timeout=10),  # 401
        httpx2.get(f"{app_server.url}/healthz", timeout=10),
        httpx2.get(f"{app_server.url}/nothing", timeout=10),
    ]
    for answer in answers:
        assert_secure(answer, lightspeed)


@sqlite_only
def test_the_interactive_docs_cannot_be_framed_either(serve_app: ServeApp) -> None:
    with serve_app(LIGHTKEEPER_API_KEY=new_api_key(), LIGHTKEEPER_DOCS="1") as server:  # off by default (issue 19)
        docs = httpx2.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert docs.headers["x-frame-options"] == "DENY"

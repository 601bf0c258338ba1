"""The merchant's side in a real browser: Playwright drives Debian's Chromium through the connect page.

Screenshots of every step go to ``test-artifacts/screenshots/`` (gitignored). Chromium is required, never
skipped: ``.ci/run`` installs Debian's ``chromium`` package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.web.conftest import AppServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 10_000
# The first test runs on both databases; the others check the pages themselves, which are the same on both
# (the database side of each is covered on both dialects by test_api.py and tests/integration/).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the browser tests need Debian's `chromium` package, "
            "which `.ci/run` installs (apt-get install chromium chromium-driver).",
            pytrace=False,
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


class _Camera:
    """Full-page screenshots of one test, numbered in the order taken."""

    def __init__(self, page: Page, prefix: str) -> None:
        self.page, self.prefix, self.count = page, prefix, 0

    def __call__(self, step: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shoot(page: Page, request: pytest.FixtureRequest) -> _Camera:
    """``shoot("step")`` saves a full-page screenshot named after the test and the step."""
    return _Camera(page, re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-"))


def connect_link(server: AppServer, user_id: str) -> str:
    response = server.client.post("/api/connect-sessions", json={"user_id": user_id})
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    return url


def assert_no_token(server: AppServer, page: Page) -> None:
    content = page.content()
    leaks = [f"{token[:10]}…" for token in server.issued_tokens() if token in content]
    assert not leaks, f"tokens in the page at {page.url}: {leaks}"


def connect_in_browser(server: AppServer, page: Page, user_id: str) -> ConnectionRecord:
    """Open a connect link; Lightspeed (the simulator) approves; the page says Connected."""
    response = page.goto(connect_link(server, user_id))
    assert response is not None and response.status == 200, response and response.text()
    assert page.url.startswith(f"{server.url}/oauth/callback?")
    [record] = server.keeper.connections(user_id=user_id)
    return record


def test_merchant_connects_then_disconnects_and_the_refresh_token_is_revoked(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera
) -> None:
    record = connect_in_browser(app_server, page, "merchant-1")
    account = sim.account(record.account_id)
    connection = page.locator(f'[data-connection-id="{record.id}"]')
    expect(connection.locator(".status")).to_have_text("Connected")
    expect(connection).to_contain_text(account["name"])
    expect(page.get_by_role("status")).to_contain_text(f"Connected: {account['name']}")
    assert record.account_name == account["name"] and account["active_refresh_tokens"] == 1
    shoot("connected")
    assert_no_token(app_server, page)

    connection.get_by_role("button", name="Disconnect from Lightspeed").click()

    page.wait_for_url(f"{app_server.url}/connect-lightspeed?done=disconnected")
    expect(connection.locator(".status")).to_have_text("Disconnected")
    expect(page.get_by_role("status")).to_have_text("Disconnected from Lightspeed.")
    expect(connection.get_by_role("button", name="Disconnect from Lightspeed")).to_have_count(0)
    expect(page.get_by_role("button", name="Connect to Lightspeed")).to_be_visible()
    shoot("disconnected")
    assert_no_token(app_server, page)
    assert sim.account(record.account_id)["active_refresh_tokens"] == 0
    row = app_server.row(record.id)
    assert row["status"] == "disconnected" and row["access_token"] is None and row["refresh_token"] is None


@sqlite_only
def test_denied_access_shows_a_friendly_page_and_stores_nothing(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera
) -> None:
    sim.authorize_mode("deny")

    response = page.goto(connect_link(app_server, "merchant-1"))

    assert response is not None and response.status == 400
    assert page.url.startswith(f"{app_server.url}/oauth/callback?")
    expect(page.get_by_role("heading", level=1)).to_have_text("Access not granted")
    expect(page.locator(".card")).to_contain_text("Nothing was stored")
    shoot("denied")
    assert app_server.keeper.connections() == []
    assert "Traceback" not in page.content()


@sqlite_only
def test_reconnect_button_brings_an_expired_connection_back(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera
) -> None:
    first = connect_in_browser(app_server, page, "merchant-1")
    sim.advance(first.account_id, 31 * 24 * 3600)  # the refresh token idled out at Lightspeed
    run = app_server.keeper.refresh(trigger="manual")
    assert run.expired == 1

    page.goto(f"{app_server.url}/connect-lightspeed")
    connection = page.locator(f'[data-connection-id="{first.id}"]')
    expect(connection.locator(".status")).to_have_text("Expired: reconnect needed")
    shoot("expired")
    sim.authorize_mode("approve", account_id=first.account_id)  # the merchant approves the same account

    connection.get_by_role("button", name="Reconnect").click()

    page.wait_for_url(re.compile(re.escape(f"{app_server.url}/oauth/callback?")))
    expect(connection.locator(".status")).to_have_text("Connected")
    expect(connection).to_contain_text(first.account_name or "")
    shoot("reconnected")
    assert_no_token(app_server, page)
    [again] = app_server.keeper.connections()
    assert again.id == first.id and again.status.value == "connected" and again.last_error is None
    assert sim.account(first.account_id)["active_refresh_tokens"] == 1


@sqlite_only
def test_disconnect_without_the_csrf_token_is_refused_and_changes_nothing(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera
) -> None:
    record = connect_in_browser(app_server, page, "merchant-1")
    before = app_server.row(record.id)
    endpoint = f"{app_server.url}/connect-lightspeed/disconnect"

    forms: list[dict[str, str | float | bool]] = [
        {"connection_id": record.id},  # no CSRF token
        {"connection_id": record.id, "csrf": "0" * 64},  # a made-up one
    ]
    for form in forms:
        refused = page.request.post(endpoint, form=form, max_redirects=0)  # with the session cookie
        assert refused.status == 403, refused.text()
        assert "This form has expired" in refused.text()

    assert app_server.row(record.id) == before
    assert sim.account(record.account_id)["active_refresh_tokens"] == 1
    page.goto(f"{app_server.url}/connect-lightspeed")
    expect(page.locator(f'[data-connection-id="{record.id}"] .status')).to_have_text("Connected")
    shoot("still-connected")

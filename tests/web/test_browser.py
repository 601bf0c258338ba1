"""The merchant's side in a real browser: Playwright drives Debian's Chromium through the connect page.

The flow crosses sites as it does in production: lightkeeper is served as ``localhost`` and the simulator
(Lightspeed) as ``127.0.0.1``, so the browser applies SameSite, CSP ``form-action`` and the cross-site
redirect back to the callback as it would for a real deployment.

Screenshots of every step go to ``test-artifacts/screenshots/`` (gitignored). Chromium is required, never
skipped: ``.ci/run`` installs Debian's ``chromium`` package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from lightkeeper.web.browser import continue_to_lightspeed
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.web.conftest import AppServer, ServeApp, new_api_key

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
APP_NAME = "Acme Inventory"
CONTINUE = "Continue to Lightspeed"
# The first test runs on both databases; the others check the pages themselves, which are the same on both
# (the database side of each is covered on both dialects by test_api.py and tests/integration/).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# Module scope, not session: sync Playwright keeps an event loop running on the main thread while it is
# open, and tests that come later in the same run (tests/ondemand) call asyncio.run() there.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
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
def app_server(serve_app: ServeApp) -> Iterator[AppServer]:
    """The app on another site than Lightspeed's: ``http://localhost:PORT`` (the simulator is 127.0.0.1)."""
    with serve_app(public_host="localhost", LIGHTKEEPER_API_KEY=new_api_key(), LIGHTKEEPER_APP_NAME=APP_NAME) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def csp_violations(page: Page) -> list[str]:
    """Console reports of Content-Security-Policy violations on ``page``: every test expects none."""
    found: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", note)
    return found


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


def connect_link(server: AppServer, user_id: str, **fields: str) -> str:
    return server.link(user_id, **fields)


def assert_no_token(server: AppServer, page: Page) -> None:
    content = page.content()
    leaks = [f"{token[:10]}…" for token in server.issued_tokens() if token in content]
    assert not leaks, f"tokens in the page at {page.url}: {leaks}"


def open_confirm_page(server: AppServer, page: Page, link: str) -> None:
    """Open a connect link: the confirm page, with its one button."""
    response = page.goto(link)
    assert response is not None and response.status == 200, response and response.text()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Connect {APP_NAME} to Lightspeed")
    expect(page.get_by_role("button")).to_have_count(1)
    expect(page.get_by_role("button", name=CONTINUE)).to_be_visible()


def connect_in_browser(server: AppServer, page: Page, user_id: str) -> ConnectionRecord:
    """Open a connect link, press Continue; Lightspeed (the simulator) approves; the page says Connected."""
    open_confirm_page(server, page, connect_link(server, user_id))
    with page.expect_response(lambda answer: "/oauth/callback?" in answer.url) as callback:
        page.get_by_role("button", name=CONTINUE).click()
    assert callback.value.status == 200, callback.value.text()
    page.wait_for_load_state()
    assert page.url.startswith(f"{server.url}/oauth/callback?")
    [record] = server.keeper.connections(user_id=user_id)
    return record


def test_confirm_page_names_the_app_and_the_label_and_a_scanned_link_still_connects(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera, csp_violations: list[str]
) -> None:
    assert app_server.url.startswith("http://localhost:") and app_server.simulator.url.startswith("http://127.0.0.1:")
    link = connect_link(app_server, "merchant-42", label="Acme Store #42 <b>")
    scanned = httpx2.get(link, timeout=10)  # a mail scanner fetches the link before the merchant does
    assert scanned.status_code == 200 and CONTINUE in scanned.text

    open_confirm_page(app_server, page, link)
    expect(page.locator(".label")).to_have_text("Acme Store #42 <b>")  # shown as text, never as markup
    expect(page.locator(".app-name")).to_have_text(APP_NAME)
    button_colour = page.get_by_role("button", name=CONTINUE).evaluate("b => getComputedStyle(b).backgroundColor")
    assert button_colour == "rgb(31, 111, 235)"  # the inline style is allowed by the CSP's hash
    path = shoot("confirm")
    assert path.exists() and path.parent == SCREENSHOTS
    assert app_server.keeper.connections() == []  # neither GET changed anything

    with page.expect_response(lambda answer: "/oauth/callback?" in answer.url) as callback:
        page.get_by_role("button", name=CONTINUE).click()

    assert callback.value.status == 200, callback.value.text()
    expect(page.get_by_role("status")).to_contain_text("Connected: ")
    [record] = app_server.keeper.connections(user_id="merchant-42")
    assert record.status.value == "connected"
    [session] = [c for c in page.context.cookies() if c["name"] == "lightkeeper_session"]
    assert session["sameSite"] == "Lax" and session["httpOnly"] and session["domain"] == "localhost"
    shoot("connected")
    assert csp_violations == []


def test_a_callback_in_another_browser_is_refused_and_stores_nothing(
    app_server: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera, csp_violations: list[str]
) -> None:
    """Login CSRF (RFC 6749 §10.12): the attacker starts a flow, the victim's browser finishes it."""
    with httpx2.Client(timeout=10) as attacker:
        started = continue_to_lightspeed(attacker, connect_link(app_server, "attacker"))
        assert started.status_code == 303
        authorize_url = started.headers["location"]
    victim = connect_in_browser(app_server, page, "victim")  # the victim even has a live session of their own

    with page.expect_response(lambda answer: "/oauth/callback?" in answer.url) as callback:
        page.goto(authorize_url)  # Lightspeed's consent page approves; back to our callback, with the victim's cookie

    assert callback.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in belongs to another browser")
    shoot("refused")
    assert app_server.keeper.connections(user_id="attacker") == []
    assert [r.id for r in app_server.keeper.connections()] == [victim.id]
    assert csp_violations == []


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
    open_confirm_page(app_server, page, connect_link(app_server, "merchant-1"))

    with page.expect_response(lambda answer: "/oauth/callback?" in answer.url) as callback:
        page.get_by_role("button", name=CONTINUE).click()

    assert callback.value.status == 400
    page.wait_for_load_state()
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


# -- X-Series: the same confirm page, X-Series' consent page (the simulator's /x/connect), the one callback --


@pytest.fixture
def x_app(serve_app: ServeApp, sim: SimulatorControl) -> Iterator[AppServer]:
    """The app on ``localhost`` with X-Series only: the simulator's X-Series mode is its Lightspeed."""
    url = sim_url(sim)
    env = {
        "LIGHTKEEPER_API_KEY": new_api_key(),
        "LIGHTKEEPER_APP_NAME": APP_NAME,
        "LIGHTSPEED_CLIENT_ID": "",
        "LIGHTSPEED_CLIENT_SECRET": "",
        "LIGHTSPEED_X_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_X_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_X_CONNECT_URL": f"{url}/x/connect",
        "LIGHTSPEED_X_BASE_URL": f"{url}/x/{{domain_prefix}}",
    }
    with serve_app(public_host="localhost", **env) as server:
        yield server


def sim_url(sim: SimulatorControl) -> str:
    parts = urlsplit(sim.base_url)
    return f"{parts.scheme}://{parts.netloc}"


@sqlite_only
def test_an_x_series_merchant_connects_through_the_same_confirm_page(
    x_app: AppServer, sim: SimulatorControl, page: Page, shoot: _Camera, csp_violations: list[str]
) -> None:
    link = x_app.link("merchant-x")  # the only provider configured: X-Series by default
    open_confirm_page(x_app, page, link)
    expect(page.locator(".card")).to_contain_text("Lightspeed X-Series account")
    shoot("confirm")

    with page.expect_response(lambda answer: "/oauth/callback?" in answer.url) as callback:
        page.get_by_role("button", name=CONTINUE).click()

    assert callback.value.status == 200, callback.value.text()
    assert "domain_prefix=" in callback.value.url
    expect(page.get_by_role("status")).to_contain_text("Connected: ")
    [record] = x_app.keeper.connections(user_id="merchant-x")
    assert (record.provider, record.strict_rotation, record.status.value) == ("x-series", True, "connected")
    assert record.account_name  # named by the store's /api/2.0/retailer
    expect(page.locator(".card")).to_contain_text(f"Lightspeed X-Series account {record.account_id}")
    shoot("connected")
    assert csp_violations == []


@sqlite_only
@pytest.mark.parametrize("prefix", ["evil.com#", "a.b", "x/../y", "%2e", "Store", "store1\n", "a" * 64, ""])
def test_a_crafted_store_prefix_gets_a_400_page_and_nothing_is_sent_or_stored(
    x_app: AppServer, sim: SimulatorControl, prefix: str
) -> None:
    with httpx2.Client(timeout=10) as merchant:  # the merchant's browser: its cookie jar is what counts here
        to_consent = continue_to_lightspeed(merchant, x_app.link("merchant-x"))
        assert to_consent.status_code == 303 and "/x/connect?" in to_consent.headers["location"]
        approved = merchant.get(to_consent.headers["location"]).headers["location"]  # a real code and state
        query = dict(parse_qsl(urlsplit(approved).query))
        before = sim.stats().get("x_token_requests", 0)

        crafted = {"code": query["code"], "state": query["state"], "domain_prefix": prefix}
        answer = merchant.get(f"{x_app.url}/oauth/callback?{urlencode(crafted)}")

        assert answer.status_code == 400 and "nothing was sent" in answer.text
        assert sim.stats().get("x_token_requests", 0) == before  # no token request to any store
        assert x_app.keeper.connections() == []
        done = merchant.get(approved)  # the state was not used: the true callback still connects the store
        assert done.status_code == 200, done.text
    [record] = x_app.keeper.connections(user_id="merchant-x")
    assert record.provider == "x-series"

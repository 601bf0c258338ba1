"""The dashboard in Chromium (Playwright, Debian's ``/usr/bin/chromium``, as tests/web/test_browser.py): sign in
with the key, read the counts, press "Create connect link", see the link. Screenshot:
``test-artifacts/screenshots/dashboard.png`` (the signed-in dashboard) and ``dashboard-link.png``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from lightkeeper.simulator import SimulatorControl
from tests.dashboard.conftest import expired_connection, links_minted, sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key
from tests.web.test_browser import (  # noqa: F401 (fixtures reused by name)
    SCREENSHOTS,
    browser,
    csp_violations,
    page,
    playwright,
)


@pytest.fixture
def app_server(serve_app: ServeApp) -> Iterator[AppServer]:
    """The app as ``http://localhost:PORT``: another site than Lightspeed's (the simulator is 127.0.0.1)."""
    with serve_app(public_host="localhost", LIGHTKEEPER_API_KEY=new_api_key()) as server:
        yield server


@sqlite_only
def test_an_operator_signs_in_sees_the_counts_and_creates_a_connect_link(
    app_server: AppServer,
    sim: SimulatorControl,
    page: Page,  # noqa: F811 (the fixture imported above)
    csp_violations: list[str],  # noqa: F811 (the fixture imported above)
) -> None:
    app_server.connect("merchant-1")
    app_server.connect("merchant-2")
    expired = expired_connection(app_server, sim, "merchant-3")
    app_server.keeper.refresh()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{app_server.url}/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("API key").fill(app_server.api_key)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Connections")
    counts = page.get_by_role("list", name="Connections by status")
    expect(counts.locator('[data-status="connected"] .n')).to_have_text("2")
    expect(counts.locator('[data-status="expired"] .n')).to_have_text("1")
    expect(page.get_by_role("img", name="Refresh outcomes by day")).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "lk_dashboard"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    tile = counts.locator('[data-status="connected"]')
    assert tile.evaluate("t => getComputedStyle(t).borderRadius") == "8px"  # the stylesheet passed the CSP
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    before = links_minted(app_server)

    row = page.locator(f'[data-connection-id="{expired.id}"]')
    row.get_by_role("button", name="Create connect link").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Connect link created")
    link = page.locator("#connect-link").inner_text()
    assert link.startswith(f"{app_server.url}/connect-lightspeed/start?session=")
    assert links_minted(app_server) == before + 1
    page.screenshot(path=str(SCREENSHOTS / "dashboard-link.png"), full_page=True)
    assert (SCREENSHOTS / "dashboard.png").stat().st_size > 0
    assert csp_violations == []

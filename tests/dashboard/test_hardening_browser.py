"""Issue 19 in Chromium (Playwright, as test_dashboard_browser.py): after five wrong keys the login page asks
for a wait of 1 s (not a minute), the right key signs in once it has passed, and signing out ends the session on
the server, so the session cookie put back into the browser opens nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from lightkeeper.web.dashboard_auth import MAX_FAILURES
from tests.dashboard.conftest import sqlite_only
from tests.web.conftest import AppServer, ServeApp, new_api_key
from tests.web.test_browser import (  # noqa: F401 (fixtures reused by name)
    browser,
    csp_violations,
    page,
    playwright,
)


@pytest.fixture
def app_server(serve_app: ServeApp) -> Iterator[AppServer]:
    with serve_app(public_host="localhost", LIGHTKEEPER_API_KEYS=f"ops:admin:{new_api_key()}") as server:
        yield server


def operator_key(server: AppServer) -> str:
    [key] = server.keeper.settings.api_keys
    return key.secret


def sign_in(tab: Page, key: str) -> None:
    tab.get_by_label("API key").fill(key)
    tab.get_by_role("button", name="Sign in").click()


@sqlite_only
def test_a_locked_out_operator_waits_a_second_then_signs_in_and_out_for_good(
    app_server: AppServer,
    page: Page,  # noqa: F811 (the fixture imported above)
    csp_violations: list[str],  # noqa: F811 (the fixture imported above)
) -> None:
    page.goto(f"{app_server.url}/dashboard")
    for _ in range(MAX_FAILURES - 1):
        sign_in(page, "not-the-key-" + "x" * 30)
        expect(page.get_by_role("alert")).to_have_text("That is not the API key.")
    sign_in(page, "not-the-key-" + "x" * 30)
    expect(page.get_by_role("alert")).to_have_text("Too many wrong keys. Wait 1 s and try again.")
    sign_in(page, operator_key(app_server))  # within the second: refused unchecked
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong keys.")

    app_server.clock.advance(seconds=1)
    sign_in(page, operator_key(app_server))
    expect(page.get_by_role("heading", level=1)).to_have_text("Connections")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "lk_dashboard"]

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.context.add_cookies([cookie])  # the session cookie, kept and put back
    page.goto(f"{app_server.url}/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert csp_violations == []

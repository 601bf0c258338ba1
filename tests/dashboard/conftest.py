"""Fixtures of the dashboard suite: the web app over loopback (tests/web) and an operator's browser-like client.

``Operator`` is one browser: its own cookie jar, the dashboard's forms read from the pages it got, and the
posts those forms make. Tests that play an attacker build their requests by hand instead.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from sqlalchemy import func, select

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from lightkeeper.store.schema import connect_sessions
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)
from tests.web.conftest import AppServer, app_server, serve_app  # noqa: F401 (fixtures reused by name)

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.DOTALL)
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def forms(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each form of a page: its action and its hidden fields, in page order."""
    return [
        (action, {name: html.unescape(value) for name, value in _HIDDEN.findall(body)})
        for action, body in _FORM.findall(page)
    ]


def link_buttons(page: str) -> list[dict[str, str]]:
    """The hidden fields of each "Create connect link" button of a dashboard page."""
    return [fields for where, fields in forms(page) if where == "/dashboard/links"]


def form(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the first form posting to ``action``."""
    found = [fields for where, fields in forms(page) if where == action]
    assert found, f"no form posts to {action}"
    return found[0]


@dataclass
class Operator:
    """A browser on the dashboard of ``server``."""

    server: AppServer
    browser: httpx2.Client

    def open(self) -> httpx2.Response:
        return self.browser.get("/dashboard")

    def sign_in(self, key: str | None = None) -> httpx2.Response:
        """The login form's POST with ``key`` (default: the right one), after a GET of the form."""
        fields = form(self.open().text, "/dashboard/login")
        fields["key"] = self.server.api_key if key is None else key
        return self.browser.post("/dashboard/login", data=fields)

    def signed_in_page(self) -> str:
        answer = self.sign_in()
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard", answer.text
        page = self.open()
        assert page.status_code == 200 and "Connections" in page.text, page.text
        return page.text

    def mint(self, connection_id: int, page: str) -> httpx2.Response:
        """Press "Create connect link" on ``connection_id``'s row of ``page``."""
        buttons = [f for f in link_buttons(page) if f["connection_id"] == str(connection_id)]
        assert buttons, f"no Create connect link button for connection {connection_id}"
        return self.browser.post("/dashboard/links", data=buttons[0])


@pytest.fixture
def operator(app_server: AppServer) -> Iterator[Operator]:  # noqa: F811 (the fixture imported above)
    with httpx2.Client(base_url=app_server.url, timeout=10) as browser:
        yield Operator(app_server, browser)


def links_minted(server: AppServer) -> int:
    """How many connect links (connect sessions) the database holds."""
    with server.keeper.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(connect_sessions)).scalar_one())


def expired_connection(server: AppServer, sim: SimulatorControl, user_id: str) -> ConnectionRecord:
    """Connect ``user_id`` over HTTP, then let the refresh token idle out at Lightspeed and run a refresh."""
    record = server.connect(user_id)
    sim.advance(record.account_id, 31 * 24 * 3600)
    assert server.keeper.refresh(connection_id=record.id).expired == 1
    return server.keeper.connection(record.id)

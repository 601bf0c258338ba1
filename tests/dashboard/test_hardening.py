"""Issue 19 at the dashboard, over HTTP: sign-in throttling that never locks anyone out for more than 10 s
(the login form and bearer keys alike, per client address), every refusal logged without the key, and
"Create connect link" for an account whose name is longer than a label."""

from __future__ import annotations

import html
import logging
import re

import httpx2
import pytest
from sqlalchemy import update

from lightkeeper.connect import LABEL_MAX
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.web.dashboard_auth import MAX_FAILURES, MAX_WAIT_S
from tests.dashboard.conftest import Operator, expired_connection, link_buttons, sqlite_only
from tests.web.conftest import AppServer

WRONG = "wrong-key-" + "w" * 30
#: The waits from the MAX_FAILURES-th failure on: 1 s, doubling, at most 10 s.
WAITS = [1, 2, 4, 8, 10, 10]


def through_proxy(server: AppServer, address: str) -> httpx2.Client:
    """A browser behind a reverse proxy on this machine (uvicorn believes loopback's X-Forwarded-For)."""
    return httpx2.Client(base_url=server.url, headers={"X-Forwarded-For": address}, timeout=10)


@sqlite_only
def test_sign_in_waits_1_s_doubling_to_10_s_from_the_5th_failure_and_then_takes_the_right_key(
    operator: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = operator.server.clock
    for _ in range(MAX_FAILURES - 1):
        assert operator.sign_in(WRONG).status_code == 401

    for wait in WAITS:
        refused = operator.sign_in(WRONG)
        assert refused.status_code == 429 and refused.headers["retry-after"] == str(wait), refused.headers
        during = operator.sign_in()  # the right key, before the wait has passed: refused unchecked
        assert during.status_code == 429 and int(during.headers["retry-after"]) <= wait
        assert "lk_dashboard" not in operator.browser.cookies
        clock.advance(seconds=wait)

    assert max(WAITS) == MAX_WAIT_S
    accepted = operator.sign_in()  # the wait has passed: nobody is locked out for longer than 10 s
    assert accepted.status_code == 303 and "lk_dashboard" in operator.browser.cookies
    operator.browser.cookies.clear()
    assert operator.sign_in(WRONG).status_code == 401  # a success starts the count again

    assert "dashboard sign-in refused (wrong key) from 127.0.0.1" in caplog.text
    assert "refused (too many wrong keys; retry in" in caplog.text
    assert WRONG not in caplog.text and operator.server.api_key not in caplog.text


@sqlite_only
def test_bearer_guesses_on_the_dashboard_are_throttled_and_logged_the_same_way(
    app_server: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with app_server.anonymous(Authorization=f"Bearer {WRONG}") as guesser:
        statuses = [guesser.get("/dashboard") for _ in range(MAX_FAILURES)]
    assert [answer.status_code for answer in statuses] == [401] * (MAX_FAILURES - 1) + [429]
    assert statuses[-1].headers["retry-after"] == "1"
    with app_server.anonymous(Authorization=f"Bearer {app_server.api_key}") as script:
        assert script.get("/dashboard").status_code == 429  # within the second
        app_server.clock.advance(seconds=1)
        page = script.get("/dashboard")
    assert page.status_code == 200 and "Connections" in page.text

    assert "dashboard bearer key refused (wrong key) from 127.0.0.1" in caplog.text
    assert WRONG not in caplog.text and app_server.api_key not in caplog.text


@sqlite_only
def test_one_address_guessing_does_not_lock_out_another(app_server: AppServer) -> None:
    bearer = {"Authorization": f"Bearer {WRONG}"}
    with through_proxy(app_server, "203.0.113.7") as attacker:
        for _ in range(MAX_FAILURES + 3):
            attacker.get("/dashboard", headers=bearer)
        assert attacker.get("/dashboard", headers=bearer).status_code == 429
    with through_proxy(app_server, "198.51.100.20") as operator:
        page = operator.get("/dashboard", headers={"Authorization": f"Bearer {app_server.api_key}"})
    assert page.status_code == 200 and "Connections" in page.text


@sqlite_only
def test_a_wrong_key_refusal_names_the_forwarded_address(
    app_server: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with through_proxy(app_server, "203.0.113.9") as browser:
        browser.get("/dashboard", headers={"Authorization": f"Bearer {WRONG}"})
    assert "refused (wrong key) from 203.0.113.9" in caplog.text


# -- an account name longer than a label ---------------------------------------------------------------


@pytest.mark.parametrize("length", [LABEL_MAX + 1, 5000])
def test_create_connect_link_works_for_an_account_name_longer_than_a_label(
    operator: Operator, app_server: AppServer, sim: SimulatorControl, length: int
) -> None:
    expired = expired_connection(app_server, sim, "merchant-long")
    name = ("Acme & Söhne Handelsgesellschaft " * 200)[:length]
    with app_server.keeper.store.engine.begin() as conn:  # as Lightspeed named the account
        conn.execute(update(connections_table).where(connections_table.c.id == expired.id).values(account_name=name))
    page = operator.signed_in_page()
    [button] = [fields for fields in link_buttons(page) if fields["connection_id"] == str(expired.id)]

    minted = operator.browser.post("/dashboard/links", data=button)

    assert minted.status_code == 201, minted.text[:2000]
    found = re.search(r'id="connect-link">([^<]+)<', minted.text)
    assert found is not None, minted.text[:2000]
    confirm = httpx2.get(html.unescape(found.group(1)), timeout=10)
    assert confirm.status_code == 200 and "Acme &amp; Söhne" in confirm.text

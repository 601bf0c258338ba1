"""Two ``serve`` replicas behind one load balancer (two apps, each with its own Keeper, on one PostgreSQL
database), over HTTP: a session signed out on one is refused by the other, and wrong keys spread over both are
counted together, so the address waits on both.

Before, sign-outs and the throttle lived in each process's memory: the copied cookie still opened the dashboard
on the other replica, and a guesser alternating between replicas waited half as often.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from lightkeeper.web.dashboard_auth import MAX_FAILURES
from tests.dashboard.conftest import Operator, form
from tests.dashboard.test_hardening import WRONG, through_proxy
from tests.web.conftest import AppServer, ServeApp, new_api_key

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def replicas(serve_app: ServeApp) -> Iterator[tuple[AppServer, AppServer]]:
    key = new_api_key()
    with serve_app(LIGHTKEEPER_API_KEY=key) as one, serve_app(LIGHTKEEPER_API_KEY=key) as two:
        assert one.keeper is not two.keeper and one.url != two.url
        yield one, two


def dashboard_with(server: AppServer, cookie: str) -> httpx2.Response:
    with httpx2.Client(base_url=server.url, cookies={"lk_dashboard": cookie}, timeout=10) as browser:
        return browser.get("/dashboard")


@on_postgresql
def test_a_session_signed_out_on_one_replica_is_refused_by_the_other(replicas: tuple[AppServer, AppServer]) -> None:
    one, two = replicas
    with httpx2.Client(base_url=one.url, timeout=10) as browser:
        page = Operator(one, browser).signed_in_page()
        copied = browser.cookies["lk_dashboard"]
        assert "Connections" in dashboard_with(two, copied).text  # one session, valid on every replica

        out = browser.post("/dashboard/logout", data=form(page, "/dashboard/logout"))
        assert out.status_code == 303

    for replica in (two, one):
        replayed = dashboard_with(replica, copied)
        assert replayed.status_code == 401 and "Connections" not in replayed.text, replica.url


@on_postgresql
def test_wrong_keys_on_one_replica_make_the_address_wait_on_the_other(replicas: tuple[AppServer, AppServer]) -> None:
    one, two = replicas
    bearer = {"Authorization": f"Bearer {WRONG}"}
    with through_proxy(one, "203.0.113.7") as on_one, through_proxy(two, "203.0.113.7") as on_two:
        answers = [(on_one, on_two)[n % 2].get("/dashboard", headers=bearer) for n in range(MAX_FAILURES)]
        assert [answer.status_code for answer in answers] == [401] * (MAX_FAILURES - 1) + [429]

        right = {"Authorization": f"Bearer {one.api_key}"}
        refused = on_two.get("/dashboard", headers=right)  # blocked on the other replica too, unchecked
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        signing_in = Operator(two, on_two).sign_in()  # the login form's way is blocked the same
        assert signing_in.status_code == 429

        one.clock.advance(seconds=1)  # both replicas share the fixture's clock
        assert on_two.get("/dashboard", headers=right).status_code == 200
    with through_proxy(two, "198.51.100.20") as elsewhere:  # another address was never blocked
        assert elsewhere.get("/dashboard", headers={"Authorization": f"Bearer {two.api_key}"}).status_code == 200

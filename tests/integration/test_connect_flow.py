"""The connect flow over real HTTP: our web app, the simulator's consent page, the callback (invariant 6)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import httpx2
import pytest
from sqlalchemy import func, select

from lightkeeper import Keeper, Status
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.web import BackgroundServer, bind, create_app
from lightkeeper.web.browser import continue_to_lightspeed
from tests.conftest import FakeClock
from tests.helpers import make_settings, query


@dataclass
class Service:
    keeper: Keeper
    url: str
    browser: httpx2.Client

    def link(self, user_id: str) -> str:
        return self.keeper.connect.create_link(user_id).url

    def consent(self, link: str) -> str:
        """Open a link, press its confirm page's button, and let the simulator's consent page answer: the
        callback URL it sends back."""
        to_lightspeed = continue_to_lightspeed(self.browser, link)
        assert to_lightspeed.status_code == 303, to_lightspeed.text
        back = self.browser.get(to_lightspeed.headers["location"])
        assert back.status_code == 302
        callback: str = back.headers["location"]
        assert callback.startswith(f"{self.url}/oauth/callback?")
        return callback

    def row_count(self) -> int:
        with self.keeper.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(connections_table)).scalar_one())


@pytest.fixture
def service(
    database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl, clock: FakeClock
) -> Iterator[Service]:
    sock = bind("127.0.0.1", 0)
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sim.register_redirect_uri(f"{origin}/oauth/callback")  # the simulator refuses unregistered ones
    settings = make_settings(database_url, simulator_server.url, LIGHTSPEED_REDIRECT_URI=f"{origin}/oauth/callback")
    clock.current = clock.current.now(clock.current.tzinfo)  # the simulator's codes live on the wall clock
    with (
        Keeper(settings, clock=clock) as keeper,
        BackgroundServer(create_app(keeper), sock=sock),
        httpx2.Client(timeout=10) as browser,
    ):
        yield Service(keeper, origin, browser)


def test_link_connects_the_account_and_stores_encrypted_tokens(service: Service, sim: SimulatorControl) -> None:
    page = service.browser.get(service.consent(service.link("user-1")))

    assert page.status_code == 200
    assert "Connected" in page.text
    [record] = service.keeper.connections()
    account = sim.account(record.account_id)
    assert account["name"] in page.text and record.account_name == account["name"]
    assert record.user_id == "user-1" and record.status is Status.CONNECTED
    assert record.access_token and record.access_token.startswith("lk1:")
    assert record.refresh_token and record.refresh_token.startswith("lk1:")
    assert service.keeper.vault.refresh_token(record) not in page.text
    assert record.token_expires_at is not None


def test_link_redirects_to_lightspeed_authorize_with_state_and_pkce(service: Service) -> None:
    response = continue_to_lightspeed(service.browser, service.link("user-1"))
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{service.keeper.settings.lightspeed_oauth_url}/auth/oauth/authorize?")
    params = query(location)
    assert params["response_type"] == "code" and params["code_challenge_method"] == "S256"
    assert params["state"] and params["code_challenge"]
    assert params["redirect_uri"] == service.keeper.settings.lightspeed_redirect_uri


def test_link_works_once(service: Service) -> None:
    link = service.link("user-1")
    assert continue_to_lightspeed(service.browser, link).status_code == 303
    again = service.browser.get(link)
    assert again.status_code == 400 and "already used" in again.text


def test_expired_link_is_refused(service: Service, clock: FakeClock) -> None:
    link = service.link("user-1")
    clock.advance(hours=1, seconds=1)
    response = service.browser.get(link)
    assert response.status_code == 400 and "expired" in response.text


def test_unknown_link_is_refused(service: Service) -> None:
    response = service.browser.get(f"{service.url}/connect-lightspeed/start?session=forged")
    assert response.status_code == 400


def test_forged_state_is_refused_and_nothing_stored(service: Service) -> None:
    callback = service.consent(service.link("user-1"))
    params = query(callback)
    forged = f"{service.url}/oauth/callback?{urlencode({'code': params['code'], 'state': 'forged-state'})}"
    response = service.browser.get(forged)
    assert response.status_code == 400 and "unknown state" in response.text
    assert service.row_count() == 0


def test_replayed_callback_is_refused(service: Service) -> None:
    callback = service.consent(service.link("user-1"))
    assert service.browser.get(callback).status_code == 200
    replay = service.browser.get(callback)
    assert replay.status_code == 400 and "already used" in replay.text
    assert service.row_count() == 1


def test_state_expires_after_ten_minutes(service: Service, clock: FakeClock) -> None:
    callback = service.consent(service.link("user-1"))
    clock.advance(minutes=11)
    response = service.browser.get(callback)
    assert response.status_code == 400 and "expired" in response.text
    assert service.row_count() == 0


def test_denied_access_shows_a_clear_page(service: Service, sim: SimulatorControl) -> None:
    sim.authorize_mode("deny")
    callback = service.consent(service.link("user-1"))
    response = service.browser.get(callback)
    assert response.status_code == 400 and "not granted" in response.text
    assert service.row_count() == 0


@pytest.mark.parametrize("params", [{}, {"state": "x"}, {"code": "abc"}, {"error": "server_error"}])
def test_malformed_callbacks_are_refused(service: Service, params: dict[str, str]) -> None:
    response = service.browser.get(f"{service.url}/oauth/callback?{urlencode(params)}")
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert service.row_count() == 0


def test_missing_code_with_a_valid_state_is_refused(service: Service) -> None:
    params = query(service.consent(service.link("user-1")))
    response = service.browser.get(f"{service.url}/oauth/callback?{urlencode({'state': params['state']})}")
    assert response.status_code == 400 and "no authorization code" in response.text
    assert service.row_count() == 0


def test_failed_code_exchange_says_whether_to_retry(service: Service, sim: SimulatorControl) -> None:
    callback = service.consent(service.link("user-1"))
    sim.inject_fault("token", "status", status=503, count=1)
    response = service.browser.get(callback)
    assert response.status_code == 502 and "try again" in response.text
    assert service.row_count() == 0


def test_reconnecting_the_same_account_updates_its_row(service: Service, sim: SimulatorControl) -> None:
    service.browser.get(service.consent(service.link("user-1")))
    [first] = service.keeper.connections()
    lease = service.keeper.store.connections.acquire(first.id, owner="test", lease=timedelta(minutes=1))
    assert lease is not None
    service.keeper.store.connections.mark_expired(
        first.id,
        lease_token=lease.token,
        version=first.token_version,
        error="invalid_grant",
        now=service.keeper.clock(),
    )

    sim.authorize_mode("approve", account_id=first.account_id)
    page = service.browser.get(service.consent(service.link("user-1")))

    assert page.status_code == 200
    [again] = service.keeper.connections()
    assert again.id == first.id and again.status is Status.CONNECTED and again.last_error is None
    assert service.keeper.vault.refresh_token(again) != service.keeper.vault.refresh_token(first)


def test_health_reports_the_schema(service: Service) -> None:
    response = service.browser.get(f"{service.url}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_tokens_are_committed_before_the_new_access_token_is_used(service: Service, sim: SimulatorControl) -> None:
    """The account look-up (the first use of the access token) fails: the connection is stored anyway."""
    callback = service.consent(service.link("user-1"))
    sim.inject_fault("api", "status", status=503, count=1)
    page = service.browser.get(callback)
    assert page.status_code == 200 and "Connected" in page.text
    [record] = service.keeper.connections()
    assert record.status is Status.CONNECTED and record.account_id

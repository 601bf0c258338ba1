"""An X-Series store's whole life, on SQLite and PostgreSQL: connect → refresh → on demand → disconnect, and a store
that X-Series stops honouring goes ``expired`` with a ``connection.expired`` event.

X-Series documents no revoke endpoint: a disconnect only forgets the tokens here (nothing is sent anywhere). The
HTTP tests drive the merchant's browser through the confirm page, the simulator's ``/x/connect`` and our
``/oauth/callback``, and the host app through ``POST /api/connections/{id}/token``.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import httpx2
import pytest

from lightkeeper import ConnectionExpired, Keeper, RunStatus, Status
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from tests.helpers import authorize, query
from tests.xseries.conftest import ServeX, XKeeperFactory
from tests.xseries.support import (
    RecordingTransport,
    events_of,
    seed_x_connections,
    set_row,
    statuses,
    x_refreshes,
)


def connect_x(keeper: Keeper, user_id: str) -> ConnectionRecord:
    """The connect flow without a browser: link → start → X-Series' consent → callback."""
    link = keeper.connect.create_link(user_id, provider="x-series")
    started = keeper.connect.start(query(link.url)["session"])
    assert "/x/connect?" in started.authorize_url
    return keeper.connect.complete(authorize(started.authorize_url), browser_token=started.browser_token)


def api_works(sim: SimulatorControl, prefix: str, access_token: str) -> bool:
    """Whether X-Series' API takes the access token for its store (``GET /api/2.0/retailer``)."""
    url = f"{sim.base_url}/x/{prefix}/api/2.0/retailer"
    answer = httpx2.get(url, headers={"Authorization": f"Bearer {access_token}"}, timeout=10)
    return answer.status_code == 200


def expire_in_our_books(keeper: Keeper, connection_id: int) -> None:
    set_row(keeper, connection_id, token_expires_at=keeper.clock() - timedelta(minutes=1))


# -- over HTTP ----------------------------------------------------------------------------------------------


def test_a_merchant_connects_an_x_series_store_and_the_token_route_serves_it(
    serve_x: ServeX, sim: SimulatorControl
) -> None:
    with serve_x() as app, httpx2.Client(timeout=10) as browser:
        params = app.consent(browser, "merchant-1")
        prefix = params["domain_prefix"]
        page = app.callback(browser, urlencode(params))
        assert page.status_code == 200, page.text

        [record] = app.keeper.connections(user_id="merchant-1")
        assert (record.provider, record.account_id, record.status) == ("x-series", prefix, Status.CONNECTED)
        assert record.strict_rotation and record.account_name  # named by the store's /api/2.0/retailer
        # The code went to the store's own token endpoint, then the new token to its own API: nothing else.
        paths = [sent.path for sent in app.transport.sent]
        assert paths == [f"/x/{prefix}/api/1.0/token", f"/x/{prefix}/api/2.0/retailer"], paths
        assert {httpx2.URL(sent.url).netloc for sent in app.transport.sent} == {httpx2.URL(sim.base_url).netloc}
        assert sim.x_stats()["x_code_exchanges"] == 1

        view = app.client.get(f"/api/connections/{record.id}")
        assert view.status_code == 200 and view.json()["provider"] == "x-series", view.text

        stored = app.keeper.vault.access_token(record)
        served = app.client.post(f"/api/connections/{record.id}/token")
        assert served.status_code == 200, served.text
        assert served.json()["access_token"] == stored  # valid for days: nothing refreshed
        assert x_refreshes(sim) == {prefix: 0}

        expire_in_our_books(app.keeper, record.id)
        renewed = app.client.post(f"/api/connections/{record.id}/token")
        assert renewed.status_code == 200, renewed.text
        token = renewed.json()["access_token"]
        assert token != stored and x_refreshes(sim) == {prefix: 1}
        assert api_works(sim, prefix, token) and not api_works(sim, prefix, stored)  # strict: the old one died

        gone = app.client.delete(f"/api/connections/{record.id}")
        assert gone.status_code == 200 and gone.json()["status"] == "disconnected", gone.text
        refused = app.client.post(f"/api/connections/{record.id}/token")
        assert refused.status_code == 409 and refused.json()["code"] == "connection_expired", refused.text
        assert sim.x_stats()["x_token_requests"] == 2  # the code and one refresh: a disconnect sends nothing


# -- the library --------------------------------------------------------------------------------------------


def test_connect_refresh_on_demand_and_disconnect(make_x_keeper: XKeeperFactory, sim: SimulatorControl) -> None:
    transport = RecordingTransport()
    keeper = make_x_keeper(transport=transport)
    record = connect_x(keeper, "merchant-1")
    prefix, first = record.account_id, keeper.vault.refresh_token(record)
    assert (record.provider, record.status, record.strict_rotation) == ("x-series", Status.CONNECTED, True)

    run = keeper.refresh(connection_id=record.id)  # by name: refreshed at once, due or not
    assert (run.status, run.refreshed, run.errors, run.expired) == (RunStatus.COMPLETED, 1, 0, 0), run
    after_run = keeper.connection(record.id)
    assert after_run.token_version == record.token_version + 1
    assert keeper.vault.refresh_token(after_run) != first
    [store] = sim.x_stores()
    assert store["active_refresh_tokens"] == 1  # the exchanged token died at once: only ours is alive

    grant = keeper.fresh_token(record.id)  # valid for a day: the stored token, nothing sent
    assert grant.access_token == keeper.vault.access_token(after_run) and x_refreshes(sim) == {prefix: 1}
    assert grant.expires_at == after_run.token_expires_at

    expire_in_our_books(keeper, record.id)
    renewed = keeper.fresh_token(record.id)
    assert renewed.access_token != grant.access_token and x_refreshes(sim) == {prefix: 2}
    assert api_works(sim, prefix, renewed.access_token)
    saved = keeper.connection(record.id)
    assert keeper.vault.access_token(saved) == renewed.access_token  # committed before it was handed out

    sent_before = len(transport.sent)
    gone = keeper.disconnect(record.id)
    assert gone.status is Status.DISCONNECTED
    assert (gone.access_token, gone.refresh_token, gone.token_expires_at) == (None, None, None)  # forgotten
    assert len(transport.sent) == sent_before, "X-Series has no revoke endpoint: nothing may be sent"
    assert sim.x_stats()["x_invalid_grant"] == 0
    with pytest.raises(ConnectionExpired):
        keeper.fresh_token(record.id)
    assert keeper.refresh().total == 0  # a disconnected store is never refreshed again
    assert sim.reuse() == 0


def test_a_store_x_series_revoked_goes_expired_with_an_event(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_x_keeper()
    sim.configure(x_access_token_ttl=60)  # due in every full run: the token expires before the next tick
    revoked, kept = seed_x_connections(keeper, sim, 2)
    prefix = keeper.connection(revoked).account_id
    sim.revoke_account(prefix)  # the merchant removed the add-on

    run = keeper.refresh()

    assert (run.status, run.refreshed, run.expired, run.errors) == (RunStatus.COMPLETED, 1, 1, 0), run
    assert statuses(keeper) == {revoked: "expired", kept: "connected"}
    dead = keeper.connection(revoked)
    assert dead.last_error and "invalid_grant" in dead.last_error, dead.last_error
    [event] = events_of(keeper, revoked)
    assert (event["type"], event["provider"], event["account_id"]) == ("connection.expired", "x-series", prefix)
    assert event["last_error"] == dead.last_error
    assert events_of(keeper, kept) == []
    with pytest.raises(ConnectionExpired):
        keeper.fresh_token(revoked)
    assert keeper.refresh().total == 1  # only the live one is refreshed again
    assert sim.x_stats()["x_invalid_grant"] == 1 and sim.reuse() == 0


def test_an_on_demand_refresh_of_a_revoked_store_expires_it(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_x_keeper()
    [connection_id] = seed_x_connections(keeper, sim, 1)
    prefix = keeper.connection(connection_id).account_id
    stale = keeper.vault.access_token(keeper.connection(connection_id))
    sim.revoke_account(prefix)

    with pytest.raises(ConnectionExpired):
        keeper.tokens.fresh_token(connection_id, rejected=stale)  # X-Series answered 401 to it

    assert statuses(keeper) == {connection_id: "expired"}
    assert [e["type"] for e in events_of(keeper, connection_id)] == ["connection.expired"]


def test_reconnecting_an_expired_store_updates_its_row(make_x_keeper: XKeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_x_keeper()
    record = connect_x(keeper, "merchant-1")
    sim.advance(record.account_id, 31 * 86_400)  # its refresh token idled past X-Series' limit
    assert keeper.refresh(connection_id=record.id).expired == 1

    sim.authorize_mode("approve", record.account_id)  # the merchant installs the add-on again, same store
    again = connect_x(keeper, "merchant-1")

    assert again.id == record.id and again.status is Status.CONNECTED
    assert again.token_version > record.token_version
    assert [e["type"] for e in events_of(keeper, record.id)] == ["connection.expired", "connection.recovered"]
    assert keeper.refresh(connection_id=record.id).refreshed == 1

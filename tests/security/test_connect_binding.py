"""The OAuth state is bound to the browser that started the flow (RFC 6749 §10.12, RFC 9700 §4.7).

An attacker opens their own connect link, keeps Lightspeed's authorize URL and gets a merchant to open it:
the merchant approves and lands on our callback with the attacker's state. The callback must proceed only
with the cookie the state was issued to; otherwise a friendly 4xx page, no code exchange, nothing stored.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx2

from lightkeeper.simulator import SimulatorControl
from tests.security.conftest import Flow, consent
from tests.web.conftest import AppServer

MISMATCH = "not started in this browser"


def assert_refused_page(answer: httpx2.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert words in answer.text and "Traceback" not in answer.text


def test_the_attackers_state_with_the_victims_cookie_is_refused_and_stores_nothing(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    attack = flows["attacker"].start("attacker")
    flows["victim"].start("victim")  # the victim has a live browser session of their own
    callback = consent(attack)  # the victim approves at Lightspeed, and comes back with the attacker's state
    exchanges = sim.stats()["code_exchanges"]

    answer = flows["victim"].browser.get(callback)

    assert_refused_page(answer, 403, MISMATCH)
    assert sim.stats()["code_exchanges"] == exchanges  # the victim's code was never even exchanged
    assert app_server.client.get("/api/connections").json() == []


def test_a_callback_without_any_cookie_is_refused_and_the_state_is_left_to_its_browser(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    callback = consent(flows["merchant"].start("merchant-1"))

    assert_refused_page(httpx2.get(callback, timeout=10), 403, MISMATCH)
    assert app_server.client.get("/api/connections").json() == []

    finished = flows["merchant"].browser.get(callback)  # a stranger's attempt did not burn the state
    assert finished.status_code == 200 and "Connected" in finished.text
    [connection] = app_server.client.get("/api/connections").json()
    assert connection["user_id"] == "merchant-1"


def test_the_state_belongs_to_a_browser_not_to_a_user(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    """Two links for the same user, opened in two browsers: each state works only with its own cookie."""
    first = consent(flows["phone"].start("merchant-1"))
    second = consent(flows["laptop"].start("merchant-1"))

    assert_refused_page(flows["laptop"].browser.get(first), 403, MISMATCH)
    assert_refused_page(flows["phone"].browser.get(second), 403, MISMATCH)
    assert flows["laptop"].browser.get(second).status_code == 200
    assert flows["phone"].browser.get(first).status_code == 200


def test_a_forged_cookie_is_no_session(app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]) -> None:
    callback = consent(flows["merchant"].start("merchant-1"))
    with httpx2.Client(timeout=10, cookies={"lightkeeper_session": "forged-session-value"}) as forger:
        assert_refused_page(forger.get(callback), 403, MISMATCH)
    assert app_server.client.get("/api/connections").json() == []


def test_a_denied_callback_from_another_browser_leaves_the_state_alone(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    authorize = flows["merchant"].start("merchant-1")
    callback = consent(authorize)
    state = dict(httpx2.URL(callback).params)["state"]
    denied = f"{app_server.url}/oauth/callback?{urlencode({'error': 'access_denied', 'state': state})}"

    assert_refused_page(httpx2.get(denied, timeout=10), 400, "Access was not granted")

    assert flows["merchant"].browser.get(callback).status_code == 200  # still the merchant's to finish


def test_a_replayed_callback_in_the_same_browser_is_refused(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    callback = consent(flows["merchant"].start("merchant-1"))
    assert flows["merchant"].browser.get(callback).status_code == 200
    assert_refused_page(flows["merchant"].browser.get(callback), 400, "already used")
    assert len(app_server.client.get("/api/connections").json()) == 1

"""The OAuth callback under attack: fixed words for known errors, and a fuzzed callback that never answers
5xx, never stores a row and never repeats what it was sent.

Anybody can craft a callback URL and send it to a merchant: a page that repeated its ``error`` text would
let them put words (and links) on our page.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes, urlencode

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.simulator import SimulatorControl
from tests.security.conftest import Flow, consent, sqlite_only
from tests.web.conftest import AppServer

# Planted in every fuzzed value: an answer that contains it repeated its input.
MARK = "zqxjv"
PLANTED = f"{MARK} <a href='https://evil.example/'>Call +1 555 0100 to restore your store</a>"
OAUTH_ERRORS = [
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
]
PARAMS = ["code", "state", "error", "error_description", "error_uri", "iss", "scope"]


@sqlite_only
@pytest.mark.parametrize("error", [*OAUTH_ERRORS, PLANTED, "", "access_denied\r\nX: y"])
def test_callback_errors_are_shown_in_fixed_words_only(app_server: AppServer, error: str) -> None:
    query = urlencode(
        {"error": error, "error_description": PLANTED, "error_uri": "https://evil.example/", "state": "s"}
    )
    answer = httpx2.get(f"{app_server.url}/oauth/callback?{query}", timeout=10)

    assert answer.status_code == 400, answer.text
    assert MARK not in answer.text and "evil.example" not in answer.text and "555" not in answer.text
    assert "Nothing was stored" in answer.text


@sqlite_only
def test_a_denied_authorization_in_the_real_flow_has_its_own_words(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    sim.authorize_mode("deny")
    answer = flows["merchant"].browser.get(consent(flows["merchant"].start("merchant-1")))
    assert answer.status_code == 400 and "Access was not granted in Lightspeed" in answer.text


def _values() -> st.SearchStrategy[str]:
    text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
    return st.builds(lambda before, after: f"{before}{MARK}{after}", text, text)


_FIELDS = st.dictionaries(st.sampled_from(PARAMS) | st.text(min_size=1, max_size=12), _values(), max_size=6)
_ERRORS = st.sampled_from(OAUTH_ERRORS) | _values()


@sqlite_only
def test_a_fuzzed_callback_never_fails_never_stores_and_never_echoes(
    app_server: AppServer, sim: SimulatorControl, flows: dict[str, Flow]
) -> None:
    browser = flows["merchant"]
    live_states: list[str] = []

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        fields=_FIELDS,
        error=st.none() | _ERRORS,
        with_live_state=st.integers(0, 9),
        raw=st.none() | st.binary(max_size=120),
        with_cookie=st.booleans(),
    )
    def callback(
        fields: dict[str, str], error: str | None, with_live_state: int, raw: bytes | None, with_cookie: bool
    ) -> None:
        if error is not None:
            fields["error"] = error
        if with_live_state == 0:  # now and then a real state of this browser, with a fuzzed code or error
            state = dict(httpx2.URL(browser.start("merchant-1")).params)["state"]
            live_states.append(state)
            fields["state"] = state
        query = quote_from_bytes(raw, safe="=&") if raw is not None else urlencode(fields)
        client = browser.browser if with_cookie else httpx2.Client(timeout=10)
        answer = client.get(f"{app_server.url}/oauth/callback?{query}")
        assert answer.status_code < 500, (query, answer.status_code, answer.text[:300])
        assert MARK not in answer.text, (query, answer.text[:300])
        assert app_server.client.get("/api/connections").json() == []

    callback()
    assert live_states, "no example used a live state"

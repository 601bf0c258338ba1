"""A crafted ``domain_prefix`` on the OAuth callback: refused with a 400 page before anything is sent or stored.

X-Series names the store on the callback, and the store's name becomes the host our client secret and the code
are sent to (``{domain_prefix}.retail.lightspeed.app``). A prefix that is not a whole ``[a-z0-9][a-z0-9-]{0,62}``
would let whoever crafts the callback URL pick that host. Each attack below arrives in the merchant's own browser
(the right cookie) with the live ``state`` and a real ``code``, the strongest position an attacker can have, on
both databases and in deployments of X-Series alone and of both providers:

- the answer is a 400 page (``invalid_store``) that does not repeat the prefix;
- the keeper sends nothing at all (a recording transport around the real one sees no request, so no host is
  contacted), and the simulator counts no token request of either series;
- nothing is stored (no connection row) and the state is not used up: the genuine callback still connects.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx2
import pytest

from lightkeeper.connect import digest
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import OAuthState
from tests.xseries.conftest import ServeX, XApp
from tests.xseries.support import connection_rows

#: Prefixes sent as values (form-encoded on the way, so the callback reads exactly these).
ATTACKS = [
    "evil.com#",
    "evil.com",
    "a.b",
    "x/../y",
    "%2e",
    ".",
    "A",
    "Store1",
    "a" * 64,
    "store1\n",
    "store1 ",
    "-store1",
    "store1@evil.com",
    "store1:443",
    "",
]
#: Raw query pieces (sent as written, decoded by the server): percent-encoded dots, slashes and a newline.
RAW_ATTACKS = ["domain_prefix=%2e", "domain_prefix=%2E%2E", "domain_prefix=x%2F..%2Fy", "domain_prefix=store1%0A"]
#: Words an answer must never contain: it would be repeating what the attacker wrote.
ECHOES = ("evil.com", "x/../y", "store1@", "aaaaaaaaaa")


def counters(sim: SimulatorControl) -> tuple[int, int, int]:
    """(R-Series token requests, X-Series token requests, X-Series API requests) the simulator received."""
    stats = sim.stats()
    return int(stats["token_requests"]), int(stats["x_token_requests"]), int(stats["x_api_requests"])


def refused(app: XApp, browser: httpx2.Client, raw_query: str) -> None:
    page = app.callback(browser, raw_query)
    assert page.status_code == 400, (raw_query, page.status_code, page.text)
    assert "invalid_store" in page.text and "Nothing was stored" in page.text, page.text
    assert not any(echo in page.text for echo in ECHOES), page.text


@pytest.mark.parametrize("both", [False, True], ids=["x-only", "both-providers"])
def test_a_crafted_prefix_sends_nothing_stores_nothing_and_leaves_the_state(
    serve_x: ServeX, sim: SimulatorControl, both: bool
) -> None:
    with serve_x(both=both) as app, httpx2.Client(timeout=10) as browser:
        genuine = app.consent(browser, "merchant-1")
        code, state = genuine["code"], genuine["state"]
        before = counters(sim)

        for prefix in ATTACKS:
            refused(app, browser, urlencode({"code": code, "domain_prefix": prefix, "state": state}))
        for raw in RAW_ATTACKS:
            refused(app, browser, f"{urlencode({'code': code, 'state': state})}&{raw}")
        refused(app, browser, urlencode({"code": code, "state": state}))  # no domain_prefix at all

        assert app.transport.sent == [], f"the keeper sent requests: {app.transport.sent}"
        assert counters(sim) == before, "a token endpoint (or the API) was reached"
        assert connection_rows(app.keeper) == 0
        still = app.keeper.store.sessions.peek_state(digest(state), app.keeper.clock())
        assert isinstance(still, OAuthState), f"the state was used up by a refused callback: {still}"

        page = app.callback(browser, urlencode(genuine))  # the merchant's real answer still connects
        assert page.status_code == 200, page.text
        [record] = app.keeper.connections(user_id="merchant-1")
        assert (record.provider, record.account_id) == ("x-series", genuine["domain_prefix"])
        prefix = genuine["domain_prefix"]
        assert [sent.path for sent in app.transport.sent] == [
            f"/x/{prefix}/api/1.0/token",
            f"/x/{prefix}/api/2.0/retailer",
        ]


def test_a_crafted_prefix_with_a_stranger_s_state_is_refused_too(serve_x: ServeX, sim: SimulatorControl) -> None:
    """Without the merchant's cookie the state is refused first (``browser_mismatch``); either way nothing moves."""
    with serve_x() as app, httpx2.Client(timeout=10) as browser, httpx2.Client(timeout=10) as stranger:
        genuine = app.consent(browser, "merchant-1")
        before = counters(sim)
        crafted = urlencode({"code": genuine["code"], "domain_prefix": "evil.com#", "state": genuine["state"]})

        page = app.callback(stranger, crafted)

        assert page.status_code == 403 and "evil.com" not in page.text, page.text
        assert app.transport.sent == [] and counters(sim) == before and connection_rows(app.keeper) == 0
        assert app.callback(browser, urlencode(genuine)).status_code == 200

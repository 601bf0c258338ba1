"""Every JSON body of the API, generated (Hypothesis) and sent over loopback to the running app: a refused body
gets 4xx with ``{"code", "message"}`` (never 5xx) and changes nothing; nothing is sent to Lightspeed for it."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store.schema import connect_sessions, connections, runs
from tests.security.conftest import sqlite_only
from tests.web.conftest import AppServer, _join_background_runs

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "1", "-1", "0", "9" * 30]),
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["user_id", "return_to", "label", "connection_id", "updates", "item_id", "qoh", "shop_id", "item_shop_id"]
BODY = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUE, max_size=4),
    st.builds(
        lambda rows: {"updates": rows},
        st.lists(st.dictionaries(st.sampled_from(FIELDS), VALUE, max_size=4), max_size=3),
    ),
    VALUE,
)
ROUTES = ["/api/connect-sessions", "/api/refresh", "/api/connections/{cid}/stock"]


def counts(server: AppServer) -> tuple[int, ...]:
    with server.keeper.store.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (connect_sessions, connections, runs)
        )


def rows(server: AppServer) -> list[Any]:
    with server.keeper.store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(connections))]


@sqlite_only
def test_every_api_body_is_answered_or_refused_cleanly(app_server: AppServer, sim: SimulatorControl) -> None:
    record = app_server.connect("prop-user")

    @FAST
    @given(st.sampled_from(ROUTES), BODY)
    def check(route: str, body: object) -> None:
        before_counts, before_rows, before_api = counts(app_server), rows(app_server), sim.stats()["api_requests"]
        answer = app_server.client.post(
            route.format(cid=record.id), content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert answer.status_code < 500, (route, body, answer.text)
        if answer.status_code < 400:
            _join_background_runs()  # an accepted refresh runs on in the background: let it end first
        else:
            error = answer.json()
            assert set(error) >= {"code", "message"} and "\n" not in error["message"], error
            assert counts(app_server) == before_counts and rows(app_server) == before_rows
            assert sim.stats()["api_requests"] == before_api, "a refused body sent something to Lightspeed"

    check()

"""Knobs for what a proxy must pass on or drop: extra API answer headers (``/_sim/api-headers``), the request
log's body digests (``?body_digests=1``), and streamed bodies cut short by their client (``api_streams_cut``)."""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from tests.simulator.api_support import Sim, module_sim, seed, sim, wait_until

__all__ = ["module_sim", "sim"]

ACCOUNT = "/API/V3/Account.json"
EXTRA = [
    ("ETag", '"v7"'),
    ("Last-Modified", "Wed, 01 Jul 2026 12:00:00 GMT"),
    ("Set-Cookie", "ls_session=one; Path=/; HttpOnly"),
    ("Set-Cookie", "ls_route=two; Path=/"),
]


def test_extra_headers_come_on_every_api_answer_and_nowhere_else(sim: Sim) -> None:
    account = seed(sim.control)
    assert sim.control.set_api_headers(EXTRA) == EXTRA
    sim.control.inject_fault("api", "rate_limit", retry_after=2)
    answers = [
        sim.http.get(ACCOUNT, headers=account.bearer),  # the 429 fault's canned answer
        sim.http.get(ACCOUNT, headers=account.bearer),  # a real 200
        sim.http.get(account.path("Nothing.json"), headers=account.bearer),  # the catch-all's 404
        sim.http.get(ACCOUNT),  # refused: no token
    ]
    assert [a.status_code for a in answers] == [429, 200, 404, 401]
    for answer in answers:
        assert answer.headers["etag"] == '"v7"'
        assert answer.headers["last-modified"] == "Wed, 01 Jul 2026 12:00:00 GMT"
        assert answer.headers.get_list("set-cookie") == ["ls_session=one; Path=/; HttpOnly", "ls_route=two; Path=/"]
    assert answers[0].headers["retry-after"] == "2"  # the answer's own headers stay
    token = sim.http.post("/auth/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert "etag" not in token.headers  # OAuth is not the API


def test_extra_headers_come_on_streamed_and_x_series_answers(sim: Sim) -> None:
    account = seed(sim.control)
    store = sim.control.seed_x(1)[0]
    sim.control.set_api_headers({"ETag": 'W/"x1"'})
    sim.control.inject_fault("api", "slow_body", seconds=0.01)
    streamed = sim.http.get(ACCOUNT, headers=account.bearer)
    x_answer = sim.http.get(
        f"/x/{store['domain_prefix']}/api/2.0/retailer", headers={"Authorization": f"Bearer {store['access_token']}"}
    )
    assert streamed.status_code == x_answer.status_code == 200
    assert streamed.headers["etag"] == x_answer.headers["etag"] == 'W/"x1"'


def test_reset_and_delete_forget_the_extra_headers(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.set_api_headers({"ETag": '"a"'})
    assert sim.control.api_headers() == [("ETag", '"a"')]
    sim.http.delete("/_sim/api-headers").raise_for_status()
    assert "etag" not in sim.http.get(ACCOUNT, headers=account.bearer).headers
    sim.control.set_api_headers({"ETag": '"a"'})
    sim.control.reset()
    assert sim.control.api_headers() == []
    again = seed(sim.control)
    assert "etag" not in sim.http.get(ACCOUNT, headers=again.bearer).headers


@pytest.mark.parametrize(
    "bad",
    [
        {"X-Bad": "split\r\nSet-Cookie: injected=1"},
        {"Bad Name": "x"},
        {"Content-Length": "0"},
        {"Transfer-Encoding": "chunked"},
        [["ETag"]],
        [["ETag", 7]],
    ],
)
def test_bad_headers_are_refused_all_or_nothing(sim: Sim, bad: object) -> None:
    sim.control.set_api_headers({"ETag": '"kept"'})
    answer = sim.http.post("/_sim/api-headers", json={"headers": bad})
    assert answer.status_code == 400
    assert sim.control.api_headers() == [("ETag", '"kept"')]


def test_body_digests_are_shown_only_when_asked_for(sim: Sim) -> None:
    account = seed(sim.control)
    first = json.dumps({"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 4}}}).encode()
    second = first.replace(b"4", b"5")
    for body in (first, first, second):
        sim.http.put(account.path("Item/1.json"), content=body, headers=account.bearer)
    sim.http.get(ACCOUNT, headers=account.bearer)
    assert all("body_sha256" not in entry for entry in sim.control.requests())
    digests = [entry["body_sha256"] for entry in sim.control.requests(body_digests=True)]
    assert digests == [
        hashlib.sha256(first).hexdigest(),
        hashlib.sha256(first).hexdigest(),
        hashlib.sha256(second).hexdigest(),
        hashlib.sha256(b"").hexdigest(),
    ]


@pytest.mark.parametrize(
    "fault",
    [{"kind": "slow_body", "seconds": 10}, {"kind": "large_body", "bytes": 1_000_000_000}],
    ids=["slow_body", "large_body"],
)
def test_a_client_that_leaves_a_streamed_body_early_is_counted(sim: Sim, fault: dict[str, Any]) -> None:
    account = seed(sim.control)
    sim.control.inject_fault("api", "slow_body", seconds=0.05)
    assert sim.http.get(ACCOUNT, headers=account.bearer).status_code == 200  # read to its end: not cut
    sim.control.add_fault("api", **fault)
    with (
        httpx2.Client(base_url=sim.server.url, timeout=5) as leaving,
        leaving.stream("GET", ACCOUNT, headers=account.bearer) as answer,
    ):
        assert next(answer.iter_raw())  # the first chunk, then hang up while the rest is still to come
    wait_until(lambda: sim.control.stats()["api_streams_cut"] == 1, "the cut to be counted")
    assert sim.control.stats()["api_disconnects"] == 0  # that counter is for waits before the answer


def test_a_reset_fault_on_a_logged_api_route_sends_not_one_byte(sim: Sim) -> None:
    """The request log replays the body through its own ``receive``; the reset must still reach the socket
    (it once fell back to a truncated 200, whose status and headers a proxy could pass on)."""
    account = seed(sim.control)
    sim.control.inject_fault("api", "reset")
    split = urlsplit(sim.server.url)
    with socket.create_connection((split.hostname or "127.0.0.1", split.port or 80), timeout=5) as conn:
        lines = [f"GET {ACCOUNT} HTTP/1.1", f"Host: {split.netloc}", f"Authorization: Bearer {account.access}", "", ""]
        conn.sendall("\r\n".join(lines).encode())
        try:
            received = conn.recv(65536)
        except ConnectionResetError:
            received = b""
    assert received == b""
    assert [entry["path"] for entry in sim.control.requests()] == [ACCOUNT]  # logged all the same

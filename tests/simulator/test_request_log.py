"""The request log (``/_sim/requests``): every ``/API/V3`` request as it arrived, secrets redacted."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx2
import pytest

from lightkeeper.simulator.records import REQUEST_LOG_SIZE
from tests.simulator.api_support import Sim, module_sim, seed, sim

__all__ = ["module_sim", "sim"]


def raw_request(sim: Sim, request_line: str, headers: list[str]) -> bytes:
    """Send exactly these bytes (no client normalises the path) and return the answer's status line."""
    split = urlsplit(sim.server.url)
    with socket.create_connection((split.hostname or "127.0.0.1", split.port or 80), timeout=5) as conn:
        lines = [request_line, f"Host: {split.netloc}", *headers, "Connection: close", "", ""]
        conn.sendall("\r\n".join(lines).encode("latin-1"))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_an_entry_holds_the_request_as_received(sim: Sim) -> None:
    account = seed(sim.control)
    body = json.dumps({"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 4}}}).encode()
    headers = {**account.bearer, "X-First": "1", "X-Second": "two", "Content-Type": "application/json"}
    sim.http.put(account.path("Item/1.json?load_relations=all&b=%20x"), content=body, headers=headers)

    [entry] = sim.control.requests()

    assert set(entry) == {"method", "path", "query", "headers", "body_bytes", "account_id"}
    assert entry["method"] == "PUT"
    assert entry["path"] == account.path("Item/1.json")
    assert entry["query"] == "load_relations=all&b=%20x"
    assert entry["body_bytes"] == len(body)
    assert entry["account_id"] == account.account_id
    names = [name for name, _value in entry["headers"]]
    assert names.index("x-first") < names.index("x-second")
    assert all(name == name.lower() for name in names)
    assert ["authorization", f"Bearer <valid token of account {account.account_id}>"] in entry["headers"]


def test_the_raw_path_is_kept_unnormalised(sim: Sim) -> None:
    assert raw_request(sim, "GET /API/V3/Account/%31/../Item.json?x=1 HTTP/1.1", []).startswith(b"HTTP/1.1 401")
    [entry] = sim.control.requests()
    assert (entry["path"], entry["query"], entry["account_id"]) == ("/API/V3/Account/%31/../Item.json", "x=1", None)


def test_no_token_value_is_ever_logged(sim: Sim) -> None:
    account = seed(sim.control)
    revoked = seed(sim.control)
    sim.control.revoke_account(revoked.account_id)
    sends = [
        (account.bearer, "/API/V3/Account.json"),
        (revoked.bearer, "/API/V3/Account.json"),
        ({"Authorization": f"Bearer {account.refresh}"}, "/API/V3/Account.json"),
        ({"Authorization": "Bearer not-a-token"}, "/API/V3/Account.json"),
        ({"Authorization": f"Basic {account.access}"}, "/API/V3/Account.json"),
        ({"X-Leak": account.access}, f"/API/V3/Account.json?access_token={account.access}&r={account.refresh}"),
    ]
    for headers, path in sends:
        sim.http.get(path, headers=headers)

    entries = sim.control.requests()
    dumped = json.dumps(entries)

    for secret in (account.access, account.refresh, revoked.access, revoked.refresh):
        assert secret not in dumped
    authorizations = [value for e in entries for name, value in e["headers"] if name == "authorization"]
    valid = f"Bearer <valid token of account {account.account_id}>"
    assert authorizations == [valid] + ["<not a valid access token>"] * 4
    assert [e["account_id"] for e in entries] == [account.account_id, revoked.account_id, None, None, None, None]
    assert ["x-leak", f"<access token of account {account.account_id}>"] in entries[-1]["headers"]
    assert entries[-1]["query"] == (
        f"access_token=<access token of account {account.account_id}>&r=<refresh token of account {account.account_id}>"
    )


def test_refused_and_faulted_requests_are_logged_too_and_other_routes_are_not(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.configure(burst_limit=1)
    sim.http.get("/API/V3/Account.json", headers=account.bearer)
    assert sim.http.get("/API/V3/Account.json", headers=account.bearer).status_code == 429
    sim.control.inject_fault("api", "reset")
    with pytest.raises(httpx2.TransportError):
        sim.http.get("/API/V3/Nothing.json", headers=account.bearer)
    sim.http.post("/auth/oauth/token", data={"grant_type": "refresh_token"})
    assert [e["path"] for e in sim.control.requests()] == ["/API/V3/Account.json"] * 2 + ["/API/V3/Nothing.json"]


def test_clear_reset_and_the_bound(sim: Sim, module_sim: Sim) -> None:
    sim.http.get("/API/V3/Account.json")
    sim.control.clear_requests()
    assert sim.control.requests() == []
    sim.http.get("/API/V3/Account.json")
    sim.control.reset()
    assert sim.control.requests() == []

    state = module_sim.server.state
    for n in range(REQUEST_LOG_SIZE + 5):
        state.record_request("GET", f"/API/V3/{n}", "", [], 0)
    sim.http.get("/API/V3/last")
    entries = sim.control.requests()
    assert len(entries) == REQUEST_LOG_SIZE == 2000
    assert entries[0]["path"] == "/API/V3/6"
    assert entries[-1]["path"] == "/API/V3/last"

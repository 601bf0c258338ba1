"""No path the proxy accepts reaches anything but the connection's own account; a refused one sends nothing.

Hypothesis builds paths from the pieces attacks are made of (dot segments plain and encoded, encoded slashes
and backslashes, double encoding, schemes, other account ids, control characters); each goes out as raw bytes
on a socket, so no client library normalises it first. Whatever the simulator then receives is decoded and
normalised the way a server would read it, and must still be under ``/API/V3/Account/{own id}/``.
"""

from __future__ import annotations

import posixpath
import socket
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.simulator import SimulatorControl
from tests.proxy.conftest import Merchant

PIECES = [
    "Item.json",
    "Item",
    "1.json",
    "Account",
    "100002",
    "100002.json",
    "API",
    "V3",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%25",
    "%252e",
    "%252f",
    "%25252e",
    "\\",
    "/",
    "//",
    "http:",
    "https://evil.example",
    "//evil.example",
    "@evil.example",
    ":80",
    "%00",
    "%0d%0a",
    "%09",
    "~",
    ";",
    "%3f",
    "%23",
    "a",
    "é",
    "%C3%A9",
    "%c0%ae",
]
ATTACKS = [
    "..",
    "../100002/Item.json",
    "%2e%2e/100002.json",
    "%2E%2E%2F100002%2FItem.json",
    "..%2f..%2fAccount%2f100002.json",
    "..%5c100002.json",
    "%252e%252e/100002.json",
    "Item/../../100002/Item.json",
    "./Item.json",
    "Item//1.json",
    "//evil.example/x",
    "https://evil.example/API/V3/Account/100002.json",
    "Item.json%00",
    "Item.json%0d%0aHost:%20evil",
    "\\..\\100002.json",
    "a" * 2049,
]


def raw_get(merchant: Merchant, target: bytes) -> int:
    """Send ``GET target`` as raw bytes and return the status (0 when the server closed without one)."""
    parts = urlsplit(merchant.server.url)
    request = (
        b"GET " + target + b" HTTP/1.1\r\nHost: " + parts.netloc.encode() + b"\r\n"
        b"Authorization: Bearer " + merchant.server.api_key.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return 0
            head += chunk
    return int(head.split(b" ", 2)[1])


def reached(sim: SimulatorControl) -> list[str]:
    return [str(r["path"]) for r in sim.requests()]


def inside(path: str, account_id: str) -> bool:
    """Whether a path a server received stays in the account, read as a server would (decoded, normalised)."""
    for candidate in (path, unquote(path), unquote(unquote(path))):
        if "\\" in candidate:
            return False
        normal = posixpath.normpath(candidate)
        if normal != f"/API/V3/Account/{account_id}.json" and not normal.startswith(f"/API/V3/Account/{account_id}/"):
            return False
    return True


def check(merchant: Merchant, sim: SimulatorControl, path: str) -> None:
    sim.clear_requests()
    target = f"{merchant.base}/{path}".encode("utf-8", "surrogateescape")
    status = raw_get(merchant, target)
    sent = reached(sim)
    assert all(inside(p, merchant.account_id) for p in sent), (path, sent)
    if status == 400:
        assert sent == [], (path, sent)  # refused: nothing went to Lightspeed


@pytest.mark.parametrize("path", ATTACKS)
def test_known_attacks_are_refused_and_send_nothing(merchant: Merchant, sim: SimulatorControl, path: str) -> None:
    sim.clear_requests()
    status = raw_get(merchant, f"{merchant.base}/{path}".encode())
    assert status == 400, path
    assert reached(sim) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join))
def test_any_accepted_path_stays_in_the_account(merchant: Merchant, sim: SimulatorControl, path: str) -> None:
    check(merchant, sim, path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("/".join))
def test_any_accepted_segment_list_stays_in_the_account(merchant: Merchant, sim: SimulatorControl, path: str) -> None:
    check(merchant, sim, path)


def test_ordinary_paths_are_accepted(merchant: Merchant, sim: SimulatorControl) -> None:
    for path in ("Item.json", "Item/1.json", "Item%2Ejson", "Shop/1/Item.json", ""):
        sim.clear_requests()
        status = raw_get(merchant, f"{merchant.base}/{path}".rstrip("/").encode())
        assert status != 400, path
        [sent] = reached(sim)
        assert inside(sent, merchant.account_id)

"""Fixtures of the security suite: the web app served over loopback (tests/web), the real CLI
(tests/acceptance), and a browser-like HTTP client that walks the connect flow step by step.

Every test here plays an attacker or a careless operator from outside: HTTP against a running server and
the simulator, or the ``lightkeeper`` command in a subprocess.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
import pytest

from lightkeeper.web.browser import confirm_fields, continue_to_lightspeed
from tests.acceptance.conftest import backend, cli, lk_database_url, web  # noqa: F401 (fixtures reused by name)
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_empty_database_url,
    pg_template,
    sqlite_url,
)
from tests.web.conftest import AppServer, app_server, serve_app  # noqa: F401 (fixtures reused by name)

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Flow:
    """One browser (its own cookie jar) walking the connect flow of ``server`` one step at a time."""

    server: AppServer
    browser: httpx2.Client

    def start(self, user_id: str, **fields: str) -> str:
        """A new link, its confirm page and its button: Lightspeed's authorize URL (the 303's Location)."""
        answer = continue_to_lightspeed(self.browser, self.server.link(user_id, **fields))
        assert answer.status_code == 303, answer.text
        location: str = answer.headers["location"]
        assert location.startswith(f"{self.server.simulator.url}/auth/oauth/authorize?")
        return location

    def confirm_page(self, link: str) -> tuple[httpx2.Response, dict[str, str]]:
        page = self.browser.get(link)
        assert page.status_code == 200, page.text
        return page, confirm_fields(page.text)

    def post_confirm(self, fields: dict[str, str]) -> httpx2.Response:
        return self.browser.post(f"{self.server.url}/connect-lightspeed/start", data=fields)


def consent(authorize_url: str) -> str:
    """The merchant approves on Lightspeed's consent page (the simulator): the callback URL it sends back."""
    answer = httpx2.get(authorize_url, timeout=10)
    assert answer.status_code == 302, answer.text
    callback: str = answer.headers["location"]
    assert "/oauth/callback?" in callback
    return callback


@pytest.fixture
def flows(app_server: AppServer) -> Iterator[dict[str, Flow]]:  # noqa: F811 (the fixture imported above)
    """Browsers by name, created on first use: ``flows["attacker"]``, ``flows["victim"]``."""

    class Browsers(dict[str, Flow]):
        def __missing__(self, name: str) -> Flow:
            self[name] = Flow(app_server, httpx2.Client(timeout=10))
            return self[name]

    browsers = Browsers()
    yield browsers
    for flow in browsers.values():
        flow.browser.close()


def raw_http(url: str, head: bytes, body: bytes = b"", *, read_timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers) and ``body`` over a fresh TCP connection, then read the
    answer without sending anything more: its status and bytes. A server that waits for a body it was
    promised answers nothing here (a timeout), which is how tests tell "read first" from "refused first"."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        headers, _, rest = received.partition(b"\r\n\r\n")
        length = _content_length(headers)
        while length is not None and len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    status = int(headers.split(b" ", 2)[1]) if headers.startswith(b"HTTP/") else 0
    return status, headers + b"\r\n\r\n" + rest


def _content_length(headers: bytes) -> int | None:
    for line in headers.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def request_head(method: str, url: str, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()

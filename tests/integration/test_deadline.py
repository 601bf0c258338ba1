"""``HTTP_TIMEOUT_S`` is one total deadline per token request, not a timeout per phase.

A server that answers a little at a time, each piece well inside any per-phase timeout, must still be cut off
when the whole request has taken ``HTTP_TIMEOUT_S``: a lease is checked to outlive exactly that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from lightkeeper.clock import utcnow
from lightkeeper.errors import ProviderUnavailable
from lightkeeper.lightspeed import OAuthClient
from lightkeeper.lightspeed.deadline import post_within

PIECE_S = 0.3


class _Trickle(BaseHTTPRequestHandler):
    """Headers after one pause, then a JSON body one byte per pause: never silent for long."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(PIECE_S)
        body = b'{"token_type":"Bearer","expires_in":3600,"access_token":"a","refresh_token":"r"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 8):
            self.wfile.write(body[i : i + 8])
            self.wfile.flush()
            time.sleep(PIECE_S)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def trickle_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_trickling_answer_is_cut_off_at_the_total_deadline(trickle_url: str) -> None:
    with httpx2.Client() as http:
        started = time.monotonic()
        with pytest.raises(httpx2.TimeoutException):
            post_within(http, f"{trickle_url}/t", data={"a": "b"}, headers={}, budget_s=1.0)
        elapsed = time.monotonic() - started
    # Each piece comes within 0.3 s, so per-phase timeouts of 1 s never fire; the whole answer needs ~3.3 s.
    assert 0.9 <= elapsed < 1.0 + 2 * PIECE_S


def test_the_whole_answer_is_read_when_it_fits_the_budget(trickle_url: str) -> None:
    with httpx2.Client() as http:
        answer = post_within(http, f"{trickle_url}/t", data={"a": "b"}, headers={}, budget_s=10.0)
    assert answer.status_code == 200 and answer.json()["refresh_token"] == "r"


def test_a_refresh_past_its_deadline_is_provider_unavailable(trickle_url: str) -> None:
    with httpx2.Client() as http:
        oauth = OAuthClient(
            http=http,
            oauth_url=trickle_url,
            client_id="c",
            client_secret="s",
            redirect_uri="https://x/cb",
            scope="employee:all",
            clock=utcnow,
            timeout_s=1.0,
        )
        with pytest.raises(ProviderUnavailable, match="did not answer in time"):
            oauth.refresh("def50-refresh-token-value")

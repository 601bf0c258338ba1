"""Fixtures for webhook delivery: a real HTTP receiver on loopback, and Keepers that send to it.

The receiver records every request's raw body and headers and answers 204, or 500 while told to fail
(``fail_next(n)``, ``fail_always()``). Keepers come from the integration suite's factory, so every test
runs on SQLite and PostgreSQL against the simulator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lightkeeper import Keeper
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    KeeperFactory,
    database_url,
    make_keeper,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)

SECRET = "whsec-test-0123456789abcdef"


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int

    @property
    def event_id(self) -> str:
        return self.headers["x-lightkeeper-event-id"]

    @property
    def attempt(self) -> int:
        return int(self.headers["x-lightkeeper-attempt"])


class Receiver:
    """The host app's webhook endpoint: records what arrives, fails on demand."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        #: How long each answer takes (lets two senders overlap), and a hook called after each request.
        self.delay_s = 0.0
        self.on_request: Callable[[], object] = lambda: None
        self._failures = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/lightkeeper"

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def fail_always(self) -> None:
        self.fail_next(10**9)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.answered < 300]

    def _answer(self, body: bytes, headers: dict[str, str]) -> int:
        time.sleep(self.delay_s)
        with self._lock:
            status = 500 if self._failures > 0 else 204
            self._failures = max(self._failures - 1, 0)
            self.requests.append(Received(body, headers, status))
        self.on_request()
        return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                self.send_response(receiver._answer(body, headers))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:  # keep test output quiet
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def notifying(make_keeper: KeeperFactory, receiver: Receiver) -> KeeperFactory:  # noqa: F811
    """``notifying(clock=None, **env)``: a Keeper whose webhook is the receiver (tiny backoff by default)."""

    def factory(**kwargs: object) -> Keeper:
        env = {
            "NOTIFY_WEBHOOK_URL": receiver.url,
            "NOTIFY_WEBHOOK_SECRET": SECRET,
            "NOTIFY_RETRY_BASE_S": "5",
            "NOTIFY_RETRY_CAP_S": "60",
        }
        return make_keeper(**(env | kwargs))

    return factory

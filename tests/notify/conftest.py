"""Fixtures for webhook delivery: a real HTTP receiver on loopback, and Keepers that send to it.

The receiver records every request's raw body and headers and answers 204, or 500 while told to fail
(``fail_next(n)``, ``fail_always()``). Keepers come from the integration suite's factory, so every test
runs on SQLite and PostgreSQL against the simulator.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lightkeeper import Keeper
from tests.acceptance.conftest import backend, cli, lk_database_url  # noqa: F401 (fixtures reused by name)
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


@dataclass
class Dripped:
    """One connection to the dripping receiver: when its request was read, and when the sender hung up."""

    body: bytes
    headers: dict[str, str]
    arrived: float  # time.monotonic()
    closed: float | None = None  # None: still open when the receiver gave up dripping


class DripReceiver:
    """A webhook endpoint that reads the request, then drips its answer one byte every ``every_s`` (at most
    ``for_s``), watching for the sender to hang up. Connections after the first ``drips`` answer 204 at once."""

    ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def __init__(self, *, every_s: float = 3.0, for_s: float = 20.0, drips: int = 10**9) -> None:
        self.every_s, self.for_s, self.drips = every_s, for_s, drips
        self.connections: list[Dripped] = []
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._closing = False
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}/hooks/lightkeeper"

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            while len(body) < int(headers.get("content-length", "0")):
                body += conn.recv(65536)
            record = Dripped(body, headers, time.monotonic())
            with self._lock:
                self.connections.append(record)
                drip = len(self.connections) <= self.drips
            self.arrived.set()
            if not drip:
                conn.sendall(self.ANSWER)
                record.closed = time.monotonic()
                return
            for byte in self.ANSWER:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    record.closed = time.monotonic()
                    return
                readable, _, _ = select.select([conn], [], [], self.every_s)
                if readable:  # the sender sends nothing more: readable means it hung up
                    with contextlib.suppress(OSError):
                        conn.recv(1)
                    record.closed = time.monotonic()
                    return
                if time.monotonic() - record.arrived > self.for_s:
                    return

    def __enter__(self) -> DripReceiver:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closing = True
        self._server.close()


@pytest.fixture
def drip_receiver() -> Iterator[DripReceiver]:
    with DripReceiver() as running:
        yield running

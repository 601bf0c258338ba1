"""Fixtures for the web layer: the real FastAPI app served over loopback, in this process.

``app_server`` runs ``create_app(keeper)`` on a ``BackgroundServer`` bound before the app starts, so the
redirect URI (``/oauth/callback``) can point at it. It runs once per database dialect. ``serve_app`` starts
another app with other settings (no API key, ``LIGHTKEEPER_DEV``) for the tests that need one.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from lightkeeper import Keeper
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import ConnectionRecord
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.web import BackgroundServer, bind, create_app
from lightkeeper.web.browser import continue_to_lightspeed
from tests.conftest import FakeClock
from tests.helpers import make_settings, query
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)

ServeApp = Callable[..., AbstractContextManager["AppServer"]]
RUN_WAIT_S = 20.0


@dataclass
class Transcript:
    """Every answer the API client received (``path``, body), for the no-token-in-any-answer check."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def record(self, response: httpx2.Response) -> None:
        response.read()
        self.bodies.append((response.request.url.path, response.content))

    def leaks(self, tokens: set[str]) -> list[str]:
        """Paths whose answers hold one of ``tokens``; the token route's answers are exempt (that is its job)."""
        return [
            f"{path}: {token[:10]}…"
            for path, body in self.bodies
            if not path.endswith("/token")
            for token in tokens
            if token.encode() in body
        ]


@dataclass
class AppServer:
    """A running lightkeeper web app and what a test needs to drive it."""

    url: str
    keeper: Keeper
    api_key: str
    client: httpx2.Client  # base_url = url, sends the API key
    simulator: SimulatorServer
    clock: FakeClock
    transcript: Transcript

    def anonymous(self, **headers: str) -> httpx2.Client:
        """A client of the same app without the API key (or with the given headers instead)."""
        return httpx2.Client(base_url=self.url, headers=headers, timeout=10)

    def link(self, user_id: str, **fields: str) -> str:
        """A one-time connect link from the API (``fields``: ``label``, ``return_to``)."""
        response = self.client.post("/api/connect-sessions", json={"user_id": user_id, **fields})
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url

    def connect(self, user_id: str) -> ConnectionRecord:
        """Connect ``user_id`` through the whole OAuth flow over HTTP, like a merchant's browser."""
        with httpx2.Client(timeout=10) as browser:
            to_lightspeed = continue_to_lightspeed(browser, self.link(user_id))  # confirm page, then its button
            assert to_lightspeed.status_code == 303, to_lightspeed.text
            back = browser.get(to_lightspeed.headers["location"])
            assert back.status_code == 302, back.text
            callback = back.headers["location"]
            assert callback.startswith(f"{self.url}/oauth/callback?") and "code" in query(callback)
            page = browser.get(callback)
            assert page.status_code == 200, page.text
        [record] = [r for r in self.keeper.connections(user_id=user_id) if r.status.value == "connected"]
        return record

    def row(self, connection_id: int) -> dict[str, Any]:
        """The raw database row of a connection."""
        with self.keeper.store.engine.connect() as conn:
            found = conn.execute(connections_table.select().where(connections_table.c.id == connection_id)).first()
        assert found is not None
        return dict(found._mapping)

    def wait_for_run(self, run_id: int) -> dict[str, Any]:
        """Poll ``GET /api/runs`` until the run has ended; its record."""
        deadline = time.monotonic() + RUN_WAIT_S
        while True:
            runs = self.client.get("/api/runs", params={"limit": 100}).json()
            [run] = [r for r in runs if r["run_id"] == run_id]
            if run["status"] != "running":
                return dict(run)
            assert time.monotonic() < deadline, f"run {run_id} still running after {RUN_WAIT_S} s"
            time.sleep(0.05)

    def issued_tokens(self) -> set[str]:
        """Every token the simulator has issued in this test: none may appear in a page or API answer."""
        return issued_tokens(self.simulator)


def issued_tokens(server: SimulatorServer) -> set[str]:
    """Every access and refresh token the simulator issued since its last reset (as tests/acceptance does)."""
    state = server.state
    with state._lock:
        return set(state._refresh_tokens) | set(state._access_tokens)


def _join_background_runs() -> None:
    """Let runs started by ``POST /api/refresh`` end before their keeper closes the database."""
    for thread in threading.enumerate():
        if thread.name.startswith("run-") and thread is not threading.current_thread():
            thread.join(RUN_WAIT_S)


def new_api_key() -> str:
    return secrets.token_urlsafe(24)[:32]


@pytest.fixture
def serve_app(
    database_url: str,  # noqa: F811 (the fixture imported above)
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
    clock: FakeClock,
) -> ServeApp:
    """Start the app with extra settings: ``with serve_app(LIGHTKEEPER_API_KEY="") as server: ...``.

    ``public_host`` names the app in its URLs (``localhost``: another site than the simulator's 127.0.0.1,
    as Lightspeed is to a real deployment); it always listens on 127.0.0.1.
    """
    clock.current = clock.current.now(clock.current.tzinfo)  # the simulator's codes live on the wall clock

    @contextmanager
    def serve(public_host: str = "127.0.0.1", **env: str) -> Iterator[AppServer]:
        sock = bind("127.0.0.1", 0)
        origin = f"http://{public_host}:{sock.getsockname()[1]}"
        sim.register_redirect_uri(f"{origin}/oauth/callback")  # the simulator refuses unregistered ones
        settings = make_settings(
            database_url, simulator_server.url, LIGHTSPEED_REDIRECT_URI=f"{origin}/oauth/callback", **env
        )
        api_key = env.get("LIGHTKEEPER_API_KEY", "")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        transcript = Transcript()
        hooks = {"response": [transcript.record]}
        with (
            Keeper(settings, clock=clock) as keeper,
            BackgroundServer(create_app(keeper), sock=sock),
            httpx2.Client(base_url=origin, headers=headers, timeout=10, event_hooks=hooks) as client,
        ):
            try:
                yield AppServer(origin, keeper, api_key, client, simulator_server, clock, transcript)
            finally:
                _join_background_runs()
            leaks = transcript.leaks(issued_tokens(simulator_server))
            assert not leaks, f"tokens in API answers: {leaks}"

    return serve


@pytest.fixture
def app_server(serve_app: ServeApp) -> Iterator[AppServer]:
    """The app with a random 32-character API key and the redirect URI on its own ``/oauth/callback``."""
    with serve_app(LIGHTKEEPER_API_KEY=new_api_key()) as server:
        yield server

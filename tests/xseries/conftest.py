"""Fixtures of the X-Series suite: keepers of an X-Series-only deployment and of one with both providers, on the
integration suite's databases (a SQLite file and a PostgreSQL clone, every test on both), the web app served over
loopback for the connect flow, and ``lightkeeper`` subprocesses configured for both providers.

Every keeper talks to the session's simulator: R-Series at its root, X-Series under ``/x`` (connect page
``/x/connect``, stores at ``/x/{domain_prefix}``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx2
import pytest

from lightkeeper import Keeper
from lightkeeper.clock import Clock
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.web import BackgroundServer, bind, create_app
from lightkeeper.web.browser import continue_to_lightspeed
from tests.faults.support import SHORT_LEASE, Cli, process_env
from tests.helpers import make_settings, query
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)
from tests.xseries.support import NO_R_SERIES, RecordingTransport, x_env


class XKeeperFactory(Protocol):
    def __call__(
        self,
        *,
        both: bool = False,
        transport: httpx2.BaseTransport | None = None,
        clock: Clock | None = None,
        **env: str,
    ) -> Keeper: ...


StartCli = Callable[..., Cli]


@pytest.fixture
def make_x_keeper(
    database_url: str,  # noqa: F811 (the fixture imported above)
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
) -> Iterator[XKeeperFactory]:
    """``make_x_keeper(both=False, transport=None, clock=None, **env)``: a Keeper of an X-Series-only deployment
    (``both``: R-Series too) on this test's database, built as another process would build it; closed after."""
    opened: list[Keeper] = []

    def factory(
        *, both: bool = False, transport: httpx2.BaseTransport | None = None, clock: Clock | None = None, **env: str
    ) -> Keeper:
        extra = x_env(simulator_server.url) | ({} if both else NO_R_SERIES) | env
        settings = make_settings(database_url, simulator_server.url, **extra)
        keeper = (
            Keeper(settings, transport=transport)
            if clock is None
            else Keeper(settings, transport=transport, clock=clock)
        )
        opened.append(keeper)
        return keeper

    yield factory
    for keeper in opened:
        keeper.close()


@pytest.fixture
def x_keeper(make_x_keeper: XKeeperFactory) -> Keeper:
    """A keeper of an X-Series-only deployment."""
    return make_x_keeper()


@pytest.fixture
def mixed_keeper(make_x_keeper: XKeeperFactory) -> Keeper:
    """A keeper of a deployment with both providers (R-Series and X-Series)."""
    return make_x_keeper(both=True)


# -- the web app -------------------------------------------------------------------------------------------


@dataclass
class XApp:
    """A running lightkeeper web app (X-Series configured) and what a test needs to drive it."""

    url: str
    keeper: Keeper
    client: httpx2.Client  # base_url = url, sends the API key
    simulator_url: str
    transport: RecordingTransport

    def link(self, user_id: str, *, provider: str | None = "x-series") -> str:
        """A one-time connect link from ``POST /api/connect-sessions``."""
        body: dict[str, Any] = {"user_id": user_id}
        if provider is not None:
            body["provider"] = provider
        response = self.client.post("/api/connect-sessions", json=body)
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url

    def consent(self, browser: httpx2.Client, user_id: str) -> dict[str, str]:
        """Confirm page → its button → X-Series' connect page (the simulator approves): the callback's query,
        not sent yet (``code``, ``domain_prefix``, ``state``)."""
        to_lightspeed = continue_to_lightspeed(browser, self.link(user_id))
        assert to_lightspeed.status_code == 303, to_lightspeed.text
        authorize = to_lightspeed.headers["location"]
        assert authorize.startswith(f"{self.simulator_url}/x/connect?"), authorize
        back = browser.get(authorize)
        assert back.status_code == 302, back.text
        callback = back.headers["location"]
        assert callback.startswith(f"{self.url}/oauth/callback?"), callback
        params = query(callback)
        assert {"code", "domain_prefix", "state"} <= set(params), params
        return params

    def callback(self, browser: httpx2.Client, raw_query: str) -> httpx2.Response:
        """The merchant's browser arriving at ``/oauth/callback?{raw_query}`` (sent as given)."""
        return browser.get(f"{self.url}/oauth/callback?{raw_query}")


ServeX = Callable[..., AbstractContextManager[XApp]]


def x_issued_tokens(server: SimulatorServer) -> set[str]:
    """Every X-Series token the simulator issued since its last reset."""
    state = server.state
    with state._lock:
        x = state._records.x
        return set(x.refresh_tokens) | set(x.access_tokens)


@pytest.fixture
def serve_x(
    database_url: str,  # noqa: F811 (the fixture imported above)
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
) -> ServeX:
    """``with serve_x(both=False, **env) as app``: the app on its own ``/oauth/callback`` (registered at the
    simulator), every request its keeper sends recorded by ``app.transport``. No API answer but the token
    route's may hold an X-Series token (checked at the end)."""

    @contextmanager
    def serve(*, both: bool = False, **env: str) -> Iterator[XApp]:
        sock = bind("127.0.0.1", 0)
        origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sim.register_redirect_uri(f"{origin}/oauth/callback")
        api_key = secrets.token_urlsafe(24)[:32]
        extra = x_env(simulator_server.url) | ({} if both else NO_R_SERIES)
        extra |= {"LIGHTSPEED_REDIRECT_URI": f"{origin}/oauth/callback", "LIGHTKEEPER_API_KEY": api_key} | env
        settings = make_settings(database_url, simulator_server.url, **extra)
        transport = RecordingTransport()
        answers: list[tuple[str, bytes]] = []

        def record(response: httpx2.Response) -> None:
            response.read()
            answers.append((response.request.url.path, response.content))

        headers = {"Authorization": f"Bearer {api_key}"}
        with (
            Keeper(settings, transport=transport) as keeper,
            BackgroundServer(create_app(keeper), sock=sock),
            httpx2.Client(base_url=origin, headers=headers, timeout=10, event_hooks={"response": [record]}) as client,
        ):
            yield XApp(origin, keeper, client, simulator_server.url, transport)
        issued = x_issued_tokens(simulator_server)
        leaks = [path for path, body in answers if not path.endswith("/token") for t in issued if t.encode() in body]
        assert not leaks, f"X-Series tokens in API answers: {leaks}"

    return serve


# -- subprocesses ------------------------------------------------------------------------------------------


@pytest.fixture
def start_cli(
    tmp_path: Path,
    database_url: str,  # noqa: F811 (the fixture imported above)
    simulator_server: SimulatorServer,
) -> Iterator[StartCli]:
    """``start_cli(name, *args, **env)``: a ``lightkeeper`` subprocess of a deployment with both providers on
    this test's database, with the fault suite's short leases; ended (SIGKILL) at teardown if still running."""
    started: list[Cli] = []

    def start(name: str, *args: str, **env: str) -> Cli:
        environment = process_env(tmp_path, database_url, simulator_server.url, **SHORT_LEASE)
        cli = Cli.start(tmp_path, name, list(args), environment | x_env(simulator_server.url) | env)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.end()

"""Fixtures for the API proxy: the real app over loopback (``tests/web``'s ``app_server``) against the simulator,
on SQLite and PostgreSQL, and a connected merchant to call Lightspeed for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.web.conftest import (  # noqa: F401 (fixtures reused by name)
    AppServer,
    ServeApp,
    app_server,
    database_url,
    new_api_key,
    pg_clones,
    pg_database_url,
    pg_template,
    serve_app,
    sqlite_url,
)

MerchantFactory = Callable[..., AbstractContextManager["Merchant"]]


@dataclass
class Merchant:
    """A connected merchant: the connection id to call through, and its Lightspeed account."""

    connection_id: int
    account_id: str
    server: AppServer

    @property
    def base(self) -> str:
        return f"/api/connections/{self.connection_id}/lightspeed"

    def call(self, method: str, path: str = "", **kwargs: object) -> httpx2.Response:
        """A request through the proxy, ``path`` relative to the account (``Item.json``)."""
        url = f"{self.base}/{path}" if path else self.base
        return self.server.client.request(method, url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def merchant(app_server: AppServer, sim: SimulatorControl) -> Merchant:  # noqa: F811 (the fixture, by name)
    record = app_server.connect("merchant-1")
    sim.clear_requests()
    return Merchant(record.id, record.account_id, app_server)


@pytest.fixture
def merchant_with(serve_app: ServeApp, sim: SimulatorControl) -> MerchantFactory:  # noqa: F811
    """A connected merchant on an app started with extra settings: ``with merchant_with(PROXY_TIMEOUT_S="1")``."""

    @contextmanager
    def start(**env: str) -> Iterator[Merchant]:
        with serve_app(LIGHTKEEPER_API_KEY=new_api_key(), **env) as server:
            record = server.connect("merchant-1")
            sim.clear_requests()
            yield Merchant(record.id, record.account_id, server)

    return start


def upstream(sim: SimulatorControl) -> list[dict[str, object]]:
    """The API requests the simulator received (what reached "Lightspeed")."""
    return sim.requests()


def header(entry: dict[str, object], name: str) -> list[str]:
    """The values of one header (lower-case ``name``) in a recorded request."""
    pairs = entry["headers"]
    assert isinstance(pairs, list)
    return [value for key, value in pairs if key == name]

"""Fixtures for the API proxy: the real app over loopback (``tests/web``'s ``app_server``) against the simulator,
on SQLite and PostgreSQL, and a connected merchant to call Lightspeed for.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl
from tests.web.conftest import (  # noqa: F401 (fixtures reused by name)
    AppServer,
    app_server,
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    serve_app,
    sqlite_url,
)


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

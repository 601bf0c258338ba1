"""Fixtures shared by every test layer: the Lightspeed simulator (a real server on loopback) and a clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer

CLIENT_ID = "lightkeeper-test"
CLIENT_SECRET = "test-client-secret-9f3a"
# The redirect URI registered for CLIENT_ID, as Lightspeed keeps one per client (tests.helpers.make_env sends
# it). Fixtures that serve the callback elsewhere add theirs with ``sim.register_redirect_uri(...)``.
REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"


class FakeClock:
    """A settable clock: ``now()`` is what the code under test sees; ``advance`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI)
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def sim(simulator_server: SimulatorServer) -> Iterator[SimulatorControl]:
    """The simulator's knobs, with state reset before each test (extra redirect URIs are forgotten too)."""
    control = SimulatorControl(simulator_server.url)
    control.reset()
    control.configure(
        token_latency_ms=0,
        api_latency_ms=0,
        bucket_size=90.0,
        drip_rate=1.0,
        burst_limit=10,
        access_token_ttl=3600,
        redirect_uri=REDIRECT_URI,
        # X-Series: every knob back to its default (the session's server is shared by every test).
        x_access_token_ttl=86_400,
        x_expires_in_skew_s=518_400,
        x_refresh_idle_s=30 * 86_400,
        x_code_ttl=600,
        x_reuse_revokes_family=True,
        x_token_limit_per_min=None,
        x_window_s=300,
        x_registers=1,
    )
    yield control
    control.clear_faults()
    control.close()

"""Shared fixtures for the API-side simulator tests: a real server on loopback, its knobs, plain HTTP.

Each test module gets its own ``SimulatorServer``; every test starts from an empty state and the default
config. ``Seeded`` is one account authorized by the default client, with its bearer header ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import httpx2
import pytest

from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer

WAIT_S = 5.0


@dataclass
class Sim:
    server: SimulatorServer
    control: SimulatorControl
    http: httpx2.Client


@dataclass
class Seeded:
    account_id: str
    access: str
    refresh: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    def path(self, rest: str) -> str:
        return f"/API/V3/Account/{self.account_id}/{rest}"


@pytest.fixture(scope="module")
def module_sim() -> Iterator[Sim]:
    with (
        SimulatorServer() as server,
        server.control() as control,
        httpx2.Client(base_url=server.url, timeout=5.0) as http,
    ):
        yield Sim(server, control, http)


@pytest.fixture
def sim(module_sim: Sim) -> Iterator[Sim]:
    """Every test starts from empty state and the default config (``burst_limit`` 10 included)."""
    module_sim.control.reset()
    module_sim.control.configure(**asdict(SimulatorConfig()))
    yield module_sim
    module_sim.control.clear_faults()


def seed(control: SimulatorControl) -> Seeded:
    first = control.seed(1)[0]
    return Seeded(str(first["account_id"]), first["access_token"], first["refresh_token"])


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

"""``/healthz`` names each check (database, migrations, scheduler) and answers 503 when one fails."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from lightkeeper import Keeper
from lightkeeper.scheduler import Worker
from lightkeeper.scheduler.liveness import MIN_STALL_S
from lightkeeper.simulator import SimulatorServer
from lightkeeper.store import head_revision
from tests.helpers import make_settings
from tests.web.conftest import AppServer

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthz(server: AppServer) -> tuple[int, dict[str, Any]]:
    response = server.client.get("/healthz")
    return response.status_code, response.json()


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


@sqlite_only
def test_without_a_scheduler_loop_the_check_says_so_and_passes(app_server: AppServer) -> None:
    status, body = healthz(app_server)
    assert status == 200 and body["status"] == "ok"
    assert statuses(body) == {"database": "ok", "migrations": "ok", "scheduler": "not running here"}
    assert body["checks"]["migrations"]["revision"] == head_revision()


@sqlite_only
def test_a_stalled_scheduler_loop_is_503_until_it_iterates_again(app_server: AppServer) -> None:
    monotonic = FakeMonotonic()
    worker = Worker(app_server.keeper, poll_s=5.0, monotonic=monotonic)
    app_server.keeper.watch_scheduler(worker.liveness)

    status, body = healthz(app_server)  # healthy at start, before any iteration
    assert status == 200 and statuses(body)["scheduler"] == "ok"
    assert body["checks"]["scheduler"]["stall_after_s"] == MIN_STALL_S  # 2 x 5 s is less than the floor

    monotonic.now += MIN_STALL_S
    assert healthz(app_server)[0] == 200  # exactly at the limit: not yet stalled
    monotonic.now += 0.5
    status, body = healthz(app_server)
    assert status == 503 and body["status"] == "unavailable"
    assert statuses(body) == {"database": "ok", "migrations": "ok", "scheduler": "stalled"}
    assert body["checks"]["scheduler"]["seconds_since_iteration"] == MIN_STALL_S + 0.5

    worker.step()
    status, body = healthz(app_server)
    assert status == 200 and body["checks"]["scheduler"]["seconds_since_iteration"] == 0


@sqlite_only
def test_a_slow_poll_interval_stalls_after_twice_the_interval(app_server: AppServer) -> None:
    monotonic = FakeMonotonic()
    worker = Worker(app_server.keeper, poll_s=60.0, monotonic=monotonic)
    app_server.keeper.watch_scheduler(worker.liveness)
    monotonic.now += 119
    assert healthz(app_server)[0] == 200
    monotonic.now += 2
    assert healthz(app_server)[0] == 503


@sqlite_only
def test_a_schema_behind_the_code_fails_the_migrations_check(app_server: AppServer) -> None:
    with app_server.keeper.store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    status, body = healthz(app_server)
    assert status == 503
    assert statuses(body) == {"database": "ok", "migrations": "behind", "scheduler": "not running here"}
    assert body["checks"]["migrations"] == {
        "ok": False,
        "status": "behind",
        "revision": "ffffffffffff",
        "expected": head_revision(),
    }


def test_an_unreachable_database_fails_the_database_check(simulator_server: SimulatorServer) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    settings = make_settings("postgresql://postgres@127.0.0.1:1/none", simulator_server.url)
    with Keeper(settings) as keeper:
        health = keeper.health()
    assert not health.ok
    body = health.document()
    assert body["status"] == "unavailable" and body["database"] == "unreachable"
    assert statuses(body) == {"database": "unreachable", "migrations": "unknown", "scheduler": "not running here"}

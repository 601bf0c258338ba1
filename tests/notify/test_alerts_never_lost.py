"""Issue 19, "Alerts are never lost", from outside: events are written by every process whether or not it
delivers (a host app's ``fresh_token``, an operator's ``refresh --all``), the outbox is given up and pruned where
nothing delivers, one attempt has a total deadline (a dripping receiver is cut at ``NOTIFY_TIMEOUT_S``), and an
event is never in flight twice (``events retry`` meanwhile is refused). SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from lightkeeper import ConfigError, Keeper, load_settings
from lightkeeper.config import REQUIRE_NONE
from lightkeeper.errors import ConnectionExpired, EventBusy
from lightkeeper.notify import DeliveryPolicy
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import EventStatus, Store
from lightkeeper.store.events import GAVE_UP
from lightkeeper.store.schema import events as events_table
from tests.acceptance.conftest import WEB_START_TIMEOUT_S, Lightkeeper, wait_for
from tests.conftest import FakeClock
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory
from tests.notify.conftest import SECRET, DripReceiver, Receiver

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"])


def types(keeper: Keeper) -> list[str]:
    return [event.type for event in reversed(keeper.events())]


# -- events are written by every process ----------------------------------------------------------------


def test_a_host_apps_fresh_token_without_a_webhook_url_writes_expired_then_recovered(
    make_keeper: KeeperFactory, notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl, clock: FakeClock
) -> None:
    host_app = make_keeper(clock=clock)  # a library user: no NOTIFY_WEBHOOK_URL
    record = connect(host_app, "merchant-1")
    sim.revoke_account(record.account_id)
    clock.advance(hours=2)  # the access token is due: fresh_token refreshes, and Lightspeed says the grant is dead

    with pytest.raises(ConnectionExpired):
        host_app.fresh_token(record.id)
    assert types(host_app) == ["connection.expired"]
    assert host_app.connection(record.id).alert == "expired"
    sim.authorize_mode("approve", account_id=record.account_id)
    clock.advance(minutes=1)
    connect(host_app, "merchant-1")  # the merchant reconnects through the host app
    assert types(host_app) == ["connection.expired", "connection.recovered"]
    assert host_app.deliver_events() == 0  # this process does not deliver ...

    assert notifying(clock=clock).deliver_events() == 2  # ... a serve or worker with the webhook does
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [(b["type"], b["connection_id"]) for b in bodies] == [
        ("connection.expired", record.id),
        ("connection.recovered", record.id),
    ]


@BOTH
def test_an_operators_refresh_all_without_a_webhook_url_writes_the_event(
    cli: Lightkeeper, sim: SimulatorControl
) -> None:
    [seeded] = cli.seed("merchant-1")
    sim.revoke_account(seeded["account_id"])

    cli("refresh", "--all")  # no NOTIFY_WEBHOOK_URL in its environment

    [event] = cli.json("events")
    assert (event["type"], event["connection_id"], event["status"]) == ("connection.expired", seeded["id"], "pending")


# -- the outbox does not grow without end ---------------------------------------------------------------


def _add_event(store: Store, event_id: str, status: EventStatus, created: datetime, **values: object) -> None:
    row = {"type": "connection.expired", "version": 1, "body": "{}", "status": status.value, "attempts": 0}
    with store.engine.begin() as conn:
        conn.execute(insert(events_table).values(id=event_id, created_at=created, **row, **values))


def _statuses(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(select(events_table.c.id, events_table.c.status))}


@BOTH
def test_a_worker_without_a_webhook_url_gives_up_and_prunes_the_outbox(cli: Lightkeeper, tmp_path: Path) -> None:
    cli.seed("merchant-1")  # creates the schema
    now = datetime.now(UTC)
    store = Store.from_url(cli.env["DATABASE_URL"])
    try:
        old, recent = now - timedelta(days=31), now - timedelta(days=29)
        _add_event(store, "evt_old_delivered", EventStatus.DELIVERED, old - timedelta(days=1), delivered_at=old)
        _add_event(store, "evt_old_dead", EventStatus.DEAD, old, last_attempt_at=old)
        _add_event(store, "evt_recent_delivered", EventStatus.DELIVERED, recent, delivered_at=recent)
        _add_event(store, "evt_never_sent", EventStatus.PENDING, now - timedelta(days=4), next_attempt_at=recent)
        _add_event(store, "evt_young_pending", EventStatus.PENDING, now - timedelta(days=2), next_attempt_at=now)

        log = tmp_path / "worker.log"
        with log.open("w") as out:
            process = cli.start("worker", env_extra={"WORKER_POLL_S": "0.2"}, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: _statuses(store).get("evt_never_sent") == "dead",
                timeout=WEB_START_TIMEOUT_S,
                what="the worker's outbox upkeep",
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
            cli.transcript.append(log.read_text())

        assert _statuses(store) == {
            "evt_recent_delivered": "delivered",
            "evt_never_sent": "dead",
            "evt_young_pending": "pending",
        }
        given_up = store.events.get("evt_never_sent")
        assert given_up is not None and given_up.last_error == GAVE_UP
    finally:
        store.close()


def test_tidying_is_bounded_per_round_and_spares_held_and_young_events(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        now = datetime.now(UTC)
        for n in range(5):
            _add_event(store, f"evt_d{n}", EventStatus.DELIVERED, now - timedelta(days=60), delivered_at=now)
            _add_event(store, f"evt_p{n}", EventStatus.PENDING, now - timedelta(days=60), next_attempt_at=now)
        held = store.events.acquire("evt_p0", owner="w1", lease=timedelta(minutes=1), now=now)
        assert held is not None

        assert store.events.prune(settled_before=now + timedelta(seconds=1), limit=2) == 2
        assert store.events.give_up_stale(created_before=now, limit=3) == 3
        assert store.events.give_up_stale(created_before=now, limit=3) == 1  # the held one is being sent
        assert store.events.count(status="pending") == 1 and store.events.count(status="dead") == 4
        # Delivered ones count from their delivery (just now); dead ones never tried, from their creation.
        assert store.events.prune(settled_before=now - timedelta(days=1), limit=100) == 4
        assert store.events.count(status="delivered") == 3 and store.events.count(status="dead") == 0
    finally:
        store.close()


def test_the_new_settings_have_their_defaults_and_are_checked_in_one_sentence() -> None:
    settings = load_settings(env={}, require=REQUIRE_NONE)
    assert (settings.notify_timeout_s, settings.notify_retention_days) == (10, 30)
    for name, value, says in [
        ("NOTIFY_TIMEOUT_S", "0", "NOTIFY_TIMEOUT_S (must be a number > 0 and <= 300)"),
        ("NOTIFY_TIMEOUT_S", "nan", "NOTIFY_TIMEOUT_S (must be a number > 0 and <= 300)"),
        ("NOTIFY_RETENTION_DAYS", "0", "NOTIFY_RETENTION_DAYS (must be an integer from 1 to 3650)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_settings(env={name: value}, require=REQUIRE_NONE)


# -- one attempt has a total deadline; an event is never in flight twice --------------------------------


@pytest.mark.parametrize("timeout_s", [1.0, 10.0, 300.0])
def test_the_delivery_lease_always_outlasts_the_deadline(timeout_s: float) -> None:
    env = {"NOTIFY_WEBHOOK_URL": "https://app.example/h", "NOTIFY_WEBHOOK_SECRET": SECRET}
    settings = load_settings(env=env | {"NOTIFY_TIMEOUT_S": str(timeout_s)}, require=REQUIRE_NONE)
    policy = DeliveryPolicy.from_settings(settings)
    assert policy.timeout_s == timeout_s
    assert policy.lease.total_seconds() >= timeout_s + 30


def test_a_dripping_receiver_is_cut_at_notify_timeout_s(
    notifying: KeeperFactory, drip_receiver: DripReceiver, sim: SimulatorControl
) -> None:
    drip_receiver.every_s = 1.0  # a byte a second: every read returns well within any per-read timeout
    keeper = notifying(NOTIFY_WEBHOOK_URL=drip_receiver.url, NOTIFY_TIMEOUT_S="2.5")
    record = connect(keeper, "merchant-1")
    sim.revoke_account(record.account_id)
    keeper.refresh()

    started = time.monotonic()
    assert keeper.deliver_events() == 1
    took = time.monotonic() - started

    [attempt] = drip_receiver.connections
    # The receiver's thread sees the hang-up a moment later (later still on a loaded machine): wait for it.
    for _ in range(200):
        if attempt.closed is not None:
            break
        time.sleep(0.01)
    assert attempt.closed is not None, "the sender kept the connection open"
    # Cut at the deadline, not at a later read: the slack is the receiver thread's scheduling only.
    assert 2.5 - 0.1 <= attempt.closed - attempt.arrived <= 2.5 + 0.5
    assert took < 2.5 + 0.5
    [event] = keeper.events()
    assert event.status is EventStatus.PENDING and event.attempts == 1
    assert event.last_error is not None and event.last_error.startswith("timed out")


@BOTH
def test_events_retry_is_refused_while_the_event_is_in_flight(
    cli: Lightkeeper, sim: SimulatorControl, drip_receiver: DripReceiver
) -> None:
    drip_receiver.drips = 1  # the first attempt drips; later ones are answered at once
    webhook = {"NOTIFY_WEBHOOK_URL": drip_receiver.url, "NOTIFY_WEBHOOK_SECRET": SECRET, "NOTIFY_TIMEOUT_S": "4"}
    [seeded] = cli.seed("merchant-1")
    sim.revoke_account(seeded["account_id"])
    cli("refresh", "--all")
    [event] = cli.json("events")

    slow = cli.start("events", "retry", event["id"], env_extra=webhook)
    assert drip_receiver.arrived.wait(timeout=30), "the first attempt never arrived"
    concurrent = cli("events", "retry", event["id"], env_extra=webhook)
    with (
        Keeper(load_settings(env=cli.env | webhook)) as keeper,
        pytest.raises(EventBusy, match="is being sent by another process right now"),
    ):
        keeper.retry_event(event["id"])
    first = cli.finish(slow)

    assert concurrent.returncode == 1
    assert "is being sent by another process right now" in concurrent.stderr
    assert first.returncode == 1 and "not delivered (attempt 1): timed out" in first.stdout
    [attempt] = drip_receiver.connections
    assert attempt.closed is not None and attempt.closed - attempt.arrived <= 4 + 0.05
    # Once the attempt is over, a retry sends attempt 2, never alongside attempt 1.
    again = cli("events", "retry", event["id"], env_extra=webhook, check=0)
    assert "delivered (attempt 2)" in again.stdout
    second = drip_receiver.connections[1]
    assert second.arrived >= attempt.closed
    assert [c.headers["x-lightkeeper-attempt"] for c in drip_receiver.connections] == ["1", "2"]


def test_stopping_the_loop_does_not_wait_past_the_deadline(
    notifying: KeeperFactory, drip_receiver: DripReceiver, sim: SimulatorControl
) -> None:
    keeper = notifying(NOTIFY_WEBHOOK_URL=drip_receiver.url, NOTIFY_TIMEOUT_S="1.5")
    record = connect(keeper, "merchant-1")
    sim.revoke_account(record.account_id)
    keeper.refresh()
    assert keeper.start_notifier()
    assert drip_receiver.arrived.wait(timeout=10)

    stopping = threading.Thread(target=keeper.stop_notifier)
    started = time.monotonic()
    stopping.start()
    stopping.join(timeout=5)

    assert not stopping.is_alive() and time.monotonic() - started < 1.5 + 0.5

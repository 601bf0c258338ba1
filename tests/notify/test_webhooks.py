"""Webhook alerts end to end: refreshes against the simulator change connections, the outbox records one event
per change, and delivery sends it to a real HTTP receiver on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from typing import TypeVar

import pytest

from lightkeeper import Keeper
from lightkeeper.errors import EventNotFound
from lightkeeper.notify import verify
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import EventRecord, EventStatus
from tests.conftest import FakeClock
from tests.helpers import connect, query
from tests.integration.conftest import KeeperFactory
from tests.notify.conftest import SECRET, Receiver

T = TypeVar("T")
BODY_KEYS = {
    "id",
    "type",
    "version",
    "time",
    "connection_id",
    "provider",
    "user_id",
    "account_id",
    "account_name",
    "status",
    "last_error",
}


def expire(keeper: Keeper, sim: SimulatorControl, user_id: str = "merchant-1") -> int:
    """A connected merchant whose refresh token Lightspeed revokes: the next refresh marks it expired."""
    record = connect(keeper, user_id)
    sim.revoke_account(record.account_id)
    keeper.refresh()
    return record.id


def only(items: list[T]) -> T:
    assert len(items) == 1, items
    return items[0]


def drain_until_settled(keeper: Keeper, clock: FakeClock) -> EventRecord:
    """Deliver, then move the clock to each next attempt, until the one event is delivered or dead."""
    while (event := only(keeper.events())).status is EventStatus.PENDING:
        assert event.next_attempt_at is not None
        clock.current = max(clock.current, event.next_attempt_at)
        keeper.deliver_events()
    return event


def test_an_expired_connection_is_delivered_signed_with_the_readme_verifier(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl
) -> None:
    keeper = notifying()
    connection_id = expire(keeper, sim)

    assert keeper.deliver_events() == 1

    [request] = receiver.requests
    assert verify(SECRET, request.headers["x-lightkeeper-signature"], request.body)
    assert not verify("another-secret-0123456789", request.headers["x-lightkeeper-signature"], request.body)
    assert not verify(SECRET, request.headers["x-lightkeeper-signature"], request.body + b" ")
    body = json.loads(request.body)
    assert set(body) == BODY_KEYS
    assert body["type"] == "connection.expired" and body["version"] == 1
    assert (body["connection_id"], body["user_id"], body["status"]) == (connection_id, "merchant-1", "expired")
    assert body["provider"] == "r-series"
    assert "invalid_grant" in body["last_error"]
    assert datetime.fromisoformat(body["time"]).tzinfo is not None and body["time"].endswith("Z")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-lightkeeper-event-id"] == body["id"] and request.attempt == 1
    assert request.headers["user-agent"].startswith("lightkeeper/")
    event = only(keeper.events())
    assert (event.id, event.status, event.attempts, event.last_error) == (body["id"], EventStatus.DELIVERED, 1, None)
    assert keeper.deliver_events() == 0  # delivered events are not sent again


def test_a_receiver_that_fails_then_recovers_gets_the_same_bytes_with_backoff(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl, clock: FakeClock
) -> None:
    keeper = notifying(clock=clock)
    expire(keeper, sim)
    receiver.fail_next(2)
    start = clock()

    keeper.deliver_events()
    first = only(keeper.events())
    assert (first.status, first.attempts) == (EventStatus.PENDING, 1)
    assert first.last_error == "the receiver answered HTTP 500"
    assert first.next_attempt_at == start + timedelta(seconds=5)  # NOTIFY_RETRY_BASE_S
    assert keeper.deliver_events() == 0  # not due yet: nothing is sent before the backoff ends
    clock.advance(seconds=5)
    keeper.deliver_events()
    second = only(keeper.events())
    assert second.attempts == 2 and second.next_attempt_at == clock() + timedelta(seconds=10)  # doubled

    assert drain_until_settled(keeper, clock).status is EventStatus.DELIVERED
    assert [r.attempt for r in receiver.requests] == [1, 2, 3]
    assert [r.answered for r in receiver.requests] == [500, 500, 204]
    assert len({r.body for r in receiver.requests}) == 1  # every attempt sends the event's fixed bytes
    assert all(verify(SECRET, r.headers["x-lightkeeper-signature"], r.body) for r in receiver.requests)


def test_a_receiver_that_never_recovers_makes_the_event_dead_and_retry_sends_it_again(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl, clock: FakeClock
) -> None:
    keeper = notifying(clock=clock, NOTIFY_GIVE_UP_S="60")
    expire(keeper, sim)
    receiver.fail_always()
    created = only(keeper.events()).created_at

    dead = drain_until_settled(keeper, clock)

    # Attempts at 0, 5, 15, 35 s, then the last one on the 60 s deadline (the 40 s backoff is cut short).
    assert dead.status is EventStatus.DEAD and dead.attempts == 5
    assert dead.last_attempt_at == created + timedelta(seconds=60) == clock()
    clock.advance(days=1)
    assert keeper.deliver_events() == 0  # dead events are never sent by the loop
    assert len(receiver.requests) == 5

    receiver.fail_next(0)
    retried = keeper.retry_event(dead.id)
    assert (retried.status, retried.attempts, retried.last_error) == (EventStatus.DELIVERED, 6, None)
    assert receiver.requests[-1].attempt == 6 and receiver.requests[-1].answered == 204


def test_retrying_an_unknown_event_is_a_typed_error(notifying: KeeperFactory) -> None:
    with pytest.raises(EventNotFound, match="there is no event evt_nope"):
        notifying().retry_event("evt_nope")


def test_two_keepers_delivering_at_once_never_send_the_same_attempt(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl
) -> None:
    first, second = notifying(), notifying()
    for n in range(6):
        record = connect(first, f"merchant-{n}")
        sim.revoke_account(record.account_id)
    first.refresh()
    assert len(first.events()) == 6
    receiver.delay_s = 0.02  # requests overlap, so both keepers are claiming while the other sends
    barrier = threading.Barrier(2)

    def deliver(keeper: Keeper) -> None:
        barrier.wait()
        keeper.deliver_events()

    threads = [threading.Thread(target=deliver, args=(k,)) for k in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    sent = [(r.event_id, r.attempt) for r in receiver.requests]
    assert len(sent) == len(set(sent)) == 6
    assert {e.status for e in first.events()} == {EventStatus.DELIVERED}


def test_a_reconnect_after_expired_sends_recovered(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl
) -> None:
    keeper = notifying()
    connection_id = expire(keeper, sim)
    account_id = keeper.connection(connection_id).account_id
    sim.authorize_mode("approve", account_id=account_id)  # the merchant signs in to the same store again

    reconnected = connect(keeper, "merchant-1")

    assert reconnected.id == connection_id
    keeper.deliver_events()
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["connection.expired", "connection.recovered"]
    back = bodies[1]
    assert (back["status"], back["last_error"], back["connection_id"]) == ("connected", None, connection_id)
    assert keeper.connection(connection_id).alert is None  # the next expiry alerts again


def test_error_is_sent_only_after_notify_error_after_s_then_recovered(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl, clock: FakeClock
) -> None:
    keeper = notifying(clock=clock, NOTIFY_ERROR_AFTER_S="3600")
    record = connect(keeper, "merchant-1")
    sim.inject_fault("token", "status", status=503, count=2)
    keeper.refresh()
    clock.advance(minutes=30)
    keeper.refresh()  # still failing: the error streak keeps its start

    clock.advance(minutes=29)
    keeper.deliver_events()
    assert keeper.events() == [] and receiver.requests == []
    clock.advance(minutes=1)
    keeper.deliver_events()
    error = json.loads(only(receiver.requests).body)
    assert (error["type"], error["connection_id"], error["status"]) == ("connection.error", record.id, "error")
    assert "503" in error["last_error"]
    keeper.deliver_events()  # one event per state change: the sweep does not alert twice
    assert len(keeper.events()) == 1

    keeper.refresh()  # Lightspeed answers again
    keeper.deliver_events()
    assert [json.loads(r.body)["type"] for r in receiver.requests] == ["connection.error", "connection.recovered"]


def test_an_error_that_recovers_before_notify_error_after_s_sends_nothing(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl, clock: FakeClock
) -> None:
    keeper = notifying(clock=clock, NOTIFY_ERROR_AFTER_S="3600")
    connect(keeper, "merchant-1")
    sim.inject_fault("token", "status", status=503, count=1)
    keeper.refresh()
    clock.advance(minutes=10)
    keeper.refresh()
    clock.advance(hours=2)

    keeper.deliver_events()

    assert keeper.events() == [] and receiver.requests == []


def test_without_a_webhook_url_events_are_written_not_sent(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    expire(keeper, sim)

    assert [e.type for e in keeper.events()] == ["connection.expired"] and keeper.deliver_events() == 0
    assert only(keeper.events()).status is EventStatus.PENDING and only(keeper.events()).attempts == 0
    assert keeper.connections()[0].alert == "expired"


def test_no_token_or_secret_in_any_event_header_record_or_log(
    notifying: KeeperFactory,
    receiver: Receiver,
    sim: SimulatorControl,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    keeper = notifying(clock=clock, NOTIFY_ERROR_AFTER_S="0")
    records = [connect(keeper, f"merchant-{n}") for n in range(3)]
    tokens = {keeper.vault.refresh_token(r) for r in records} | {keeper.vault.access_token(r) for r in records}
    sim.revoke_account(records[0].account_id)
    keeper.refresh()
    sim.inject_fault("token", "status", status=503, count=1)
    receiver.fail_next(1)
    keeper.refresh()
    keeper.deliver_events()
    clock.advance(minutes=1)
    keeper.deliver_events()
    link = keeper.create_link("merchant-0")

    written = caplog.text + repr(keeper.events()) + repr([r.headers for r in receiver.requests])
    written += "".join(r.body.decode() for r in receiver.requests)
    assert {json.loads(r.body)["type"] for r in receiver.requests} >= {"connection.expired", "connection.error"}
    for secret in {*tokens, SECRET, query(link.url)["session"]}:
        assert secret not in written


def test_the_background_loop_delivers_and_stops(
    notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl
) -> None:
    keeper = notifying()
    expire(keeper, sim)
    arrived = threading.Event()
    receiver.on_request = arrived.set

    assert keeper.start_notifier()
    assert arrived.wait(timeout=10)
    keeper.stop_notifier()

    assert only(keeper.events()).status is EventStatus.DELIVERED
    assert keeper.notifier is not None and not keeper.notifier.loop.running

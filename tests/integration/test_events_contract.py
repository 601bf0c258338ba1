"""The webhook outbox's store contract (``store/events.py`` and the event parts of ``store/connections.py``),
on SQLite and PostgreSQL: events land in the transaction of the change they report, and delivery leases
are fenced like a connection's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from lightkeeper.store import EventStatus, NewTokens, Store
from lightkeeper.store.schema import connections

c = connections.c

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
GONE = timedelta(0)  # a lease that has already run out: its holder died


@pytest.fixture
def outbox(database_url: str) -> Iterator[Store]:
    """A store: every one records events, whether or not its process delivers them."""
    opened = Store.from_url(database_url)
    try:
        yield opened
    finally:
        opened.close()


def connect(store: Store, user: str = "u1", now: datetime = NOW) -> int:
    return store.connections.upsert_connected(
        user_id=user,
        account_id=f"acct-{user}",
        account_name="Shop",
        encrypt=lambda cid: (f"enc-access-{cid}", f"enc-refresh-{cid}"),
        expires_at=now + timedelta(hours=1),
        now=now,
    )


def expire(store: Store, connection_id: int, now: datetime = NOW) -> bool:
    held = store.connections.acquire(connection_id, owner="w1", lease=LEASE)
    assert held is not None
    version = held.record.token_version
    return store.connections.mark_expired(
        connection_id, lease_token=held.token, version=version, error="invalid_grant", now=now
    )


def fail(store: Store, connection_id: int, now: datetime) -> None:
    held = store.connections.acquire(connection_id, owner="w1", lease=LEASE)
    assert held is not None
    version = held.record.token_version
    assert store.connections.mark_error(
        connection_id, lease_token=held.token, version=version, error="HTTP 503", retry_at=now, now=now
    )


def save(store: Store, connection_id: int, now: datetime = NOW) -> None:
    held = store.connections.acquire(connection_id, owner="w1", lease=LEASE)
    assert held is not None
    pair = NewTokens(access_token="enc-a", refresh_token="enc-r", expires_at=now + LEASE)
    version = held.record.token_version
    assert store.connections.save_tokens(connection_id, lease_token=held.token, version=version, tokens=pair, now=now)


def types(store: Store) -> list[str]:
    return [event.type for event in reversed(store.events.list())]


# -- written with the change --------------------------------------------------------------------------


def test_an_expiry_writes_its_event_in_the_same_transaction_with_the_connection_in_its_body(outbox: Store) -> None:
    cid = connect(outbox)

    assert expire(outbox, cid)

    [event] = outbox.events.list()
    body = json.loads(event.body)
    assert (event.type, event.status, event.attempts, event.connection_id) == ("connection.expired", "pending", 0, cid)
    assert body == {
        "id": event.id,
        "type": "connection.expired",
        "version": 1,
        "time": "2026-06-01T12:00:00.000000Z",
        "connection_id": cid,
        "user_id": "u1",
        "provider": "r-series",
        "account_id": "acct-u1",
        "account_name": "Shop",
        "status": "expired",
        "last_error": "invalid_grant",
    }
    assert event.id.startswith("evt_") and len(event.id) == 36
    assert outbox.connections.get(cid).alert == "expired"  # type: ignore[union-attr]


def test_a_fenced_write_that_does_not_land_writes_no_event(outbox: Store) -> None:
    cid = connect(outbox)
    held = outbox.connections.acquire(cid, owner="w1", lease=LEASE)
    assert held is not None

    landed = outbox.connections.mark_expired(cid, lease_token="not-ours", version=0, error="x", now=NOW)

    assert not landed and outbox.events.list() == []


def test_recovered_only_after_an_alert_and_once(outbox: Store) -> None:
    cid = connect(outbox)
    save(outbox, cid)  # the common case: nothing to tell
    assert outbox.events.list() == []

    expire(outbox, cid)
    connect(outbox, now=NOW + timedelta(minutes=1))  # the merchant reconnects the same account
    save(outbox, cid, NOW + timedelta(minutes=2))

    assert types(outbox) == ["connection.expired", "connection.recovered"]
    assert outbox.connections.get(cid).alert is None  # type: ignore[union-attr]


def test_every_store_records_events_and_a_reconnect_clears_the_alert(store: Store) -> None:
    cid = connect(store)
    expire(store, cid)
    assert store.connections.get(cid).alert == "expired"  # type: ignore[union-attr]
    connect(store, now=NOW + timedelta(minutes=1))  # events of one instant have no order among themselves

    assert types(store) == ["connection.expired", "connection.recovered"]
    assert store.connections.get(cid).alert is None  # type: ignore[union-attr]


# -- the error sweep ----------------------------------------------------------------------------------


def test_error_since_keeps_the_start_of_a_streak_and_a_save_clears_it(outbox: Store) -> None:
    cid = connect(outbox)
    fail(outbox, cid, NOW)
    fail(outbox, cid, NOW + timedelta(hours=1))
    assert outbox.connections.get(cid).error_since == NOW  # type: ignore[union-attr]

    save(outbox, cid, NOW + timedelta(hours=2))

    assert outbox.connections.get(cid).error_since is None  # type: ignore[union-attr]


def test_the_sweep_alerts_each_connection_in_error_long_enough_once(outbox: Store) -> None:
    old, recent, leased = connect(outbox, "old"), connect(outbox, "recent"), connect(outbox, "leased")
    fail(outbox, old, NOW)
    fail(outbox, recent, NOW + timedelta(hours=2))
    fail(outbox, leased, NOW)
    assert outbox.connections.acquire(leased, owner="w2", lease=LEASE) is not None  # a refresh in flight
    cutoff = NOW + timedelta(hours=1)

    made = outbox.events.sweep_errors(errored_before=cutoff, now=cutoff)

    assert [json.loads(e.body)["connection_id"] for e in outbox.events.list()] == [old] and len(made) == 1
    assert outbox.events.sweep_errors(errored_before=cutoff, now=cutoff) == []
    assert outbox.connections.get(old).alert == "error"  # type: ignore[union-attr]


def test_a_sweep_of_n_flags_at_most_n_connections_when_more_qualify_lowest_ids_first(outbox: Store) -> None:
    errored = [connect(outbox, f"batch{n}") for n in range(7)]
    for cid in errored:
        fail(outbox, cid, NOW)
    cutoff = NOW + timedelta(hours=1)

    batches = [outbox.events.sweep_errors(errored_before=cutoff, now=cutoff, limit=3) for _ in range(4)]

    assert [len(batch) for batch in batches] == [3, 3, 1, 0]
    first = {outbox.events.get(event_id).connection_id for event_id in batches[0]}  # type: ignore[union-attr]
    assert first == set(errored[:3])
    assert {outbox.connections.get(cid).alert for cid in errored} == {"error"}  # type: ignore[union-attr]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sweep_skips_rows_another_transaction_holds_and_still_flags_at_most_n(outbox: Store) -> None:
    errored = [connect(outbox, f"held{n}") for n in range(6)]
    for cid in errored:
        fail(outbox, cid, NOW)
    cutoff = NOW + timedelta(hours=1)
    held = errored[:2]
    with outbox.engine.connect() as other, other.begin():  # another process's transaction holds two rows
        other.execute(select(c.id).where(c.id.in_(held)).with_for_update()).all()

        made = outbox.events.sweep_errors(errored_before=cutoff, now=cutoff, limit=3)

        flagged = {outbox.events.get(event_id).connection_id for event_id in made}  # type: ignore[union-attr]
        assert flagged == set(errored[2:5])  # the next three; a held row is neither waited for nor counted
    assert len(outbox.events.sweep_errors(errored_before=cutoff, now=cutoff, limit=3)) == 3  # the held two, and one


# -- delivery leases ----------------------------------------------------------------------------------


def test_a_claim_counts_the_attempt_and_holds_the_event_until_its_lease_ends(outbox: Store) -> None:
    expire(outbox, connect(outbox))

    first = outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW)

    assert first is not None and first.attempt == 1 and first.record.last_attempt_at == NOW
    assert outbox.events.claim_next(owner="w2", lease=LEASE, now=NOW) is None
    assert outbox.events.acquire(first.record.id, owner="w2", lease=LEASE, now=NOW) is None


def test_an_event_whose_lease_ran_out_is_claimed_again_for_a_new_attempt(outbox: Store) -> None:
    expire(outbox, connect(outbox))
    gone = outbox.events.claim_next(owner="w1", lease=GONE, now=NOW)
    assert gone is not None

    again = outbox.events.claim_next(owner="w2", lease=LEASE, now=NOW)

    assert again is not None and again.attempt == 2
    # The first holder's outcome can no longer land: the new holder's attempt stands.
    assert not outbox.events.delivered(gone.record.id, gone.token, now=NOW)
    assert outbox.events.delivered(again.record.id, again.token, now=NOW)
    delivered = outbox.events.get(again.record.id)
    assert delivered is not None and (delivered.status, delivered.delivered_at) == (EventStatus.DELIVERED, NOW)


def test_a_failed_attempt_waits_for_its_retry_time_and_dead_is_never_claimed(outbox: Store) -> None:
    expire(outbox, connect(outbox))
    held = outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW)
    assert held is not None
    later = NOW + timedelta(seconds=5)

    outbox.events.failed(held.record.id, held.token, error="HTTP 500", status=EventStatus.PENDING, retry_at=later)

    assert outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW) is None
    retry = outbox.events.claim_next(owner="w1", lease=LEASE, now=later)
    assert retry is not None and retry.record.last_error == "HTTP 500"
    outbox.events.failed(retry.record.id, retry.token, error="HTTP 500", status=EventStatus.DEAD, retry_at=None)
    assert outbox.events.claim_next(owner="w1", lease=LEASE, now=later + timedelta(days=9)) is None
    assert outbox.events.count(status="dead") == 1


def test_an_unclaimed_event_gives_its_attempt_back(outbox: Store) -> None:
    expire(outbox, connect(outbox))
    held = outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW)
    assert held is not None

    assert outbox.events.unclaim(held.record.id, held.token)

    again = outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW)
    assert again is not None and again.attempt == 1


def test_list_is_newest_first_and_filters_by_status(outbox: Store) -> None:
    expire(outbox, connect(outbox, "a"), NOW)
    expire(outbox, connect(outbox, "b"), NOW + timedelta(minutes=1))
    held = outbox.events.claim_next(owner="w1", lease=LEASE, now=NOW + timedelta(minutes=2))
    assert held is not None
    outbox.events.delivered(held.record.id, held.token, now=NOW)

    assert [json.loads(e.body)["user_id"] for e in outbox.events.list()] == ["b", "a"]
    assert [e.id for e in outbox.events.list(status="delivered")] == [held.record.id]
    assert len(outbox.events.list(limit=1)) == 1 and outbox.events.count() == 2

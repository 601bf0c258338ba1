"""Strict rotation in the store (``leases.strict_due``), on SQLite and PostgreSQL: a full run claims a connection
of strict rotation only when its access token expires before the run's ``expiring_before`` or it was last
refreshed before ``idle_before``, counts the others skipped as it starts, and leaves ``REFRESH_DUE_AFTER`` to the
others; a run of one connection claims it at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from lightkeeper.store import RunRecord, RunStatus, Store, StrictCutoffs
from lightkeeper.store.schema import connections as connections_table

NOW = datetime.now(UTC).replace(microsecond=0)
LEASE = timedelta(minutes=5)
CUTOFFS = StrictCutoffs(expiring_before=NOW + timedelta(hours=6, minutes=5), idle_before=NOW - timedelta(days=14))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.from_url(database_url)
    try:
        yield opened
    finally:
        opened.close()


def add(store: Store, user: str, *, strict: bool, expires_in: timedelta, refreshed_ago: timedelta) -> int:
    provider = "x-series" if strict else "r-series"
    cid = store.connections.upsert_connected(
        user_id=user,
        account_id=f"store-{user}",
        account_name=None,
        encrypt=lambda c: (f"enc-a-{c}", f"enc-r-{c}"),
        expires_at=NOW + expires_in,
        now=NOW,
        provider=provider,
        strict_rotation=strict,
    )
    with store.engine.begin() as conn:
        stmt = update(connections_table).where(connections_table.c.id == cid)
        conn.execute(stmt.values(last_token_refresh_at=NOW - refreshed_ago))
    return cid


def claimed(store: Store, run: RunRecord, provider: str) -> set[int]:
    """Every connection of ``provider`` the run's claims hand out (as its drain asks for them)."""
    ids: set[int] = set()
    while lease := store.connections.claim_next(
        run_id=run.id,
        owner="w1",
        lease=LEASE,
        provider=provider,
        connection_id=run.connection_id,
        due_before=run.due_before,
    ):
        ids.add(lease.record.id)
    return ids


def test_a_full_run_claims_only_the_strict_connections_that_need_it(store: Store) -> None:
    expiring = add(store, "u1", strict=True, expires_in=timedelta(hours=2), refreshed_ago=timedelta(hours=22))
    lasting = add(store, "u2", strict=True, expires_in=timedelta(hours=20), refreshed_ago=timedelta(hours=4))
    idle = add(store, "u3", strict=True, expires_in=timedelta(hours=20), refreshed_ago=timedelta(days=15))
    ordinary = add(store, "u4", strict=False, expires_in=timedelta(hours=20), refreshed_ago=timedelta(minutes=1))

    run = store.runs.start(trigger="manual", owner="w1", now=NOW, strict=CUTOFFS)

    assert (run.expiring_before, run.idle_before) == (CUTOFFS.expiring_before, CUTOFFS.idle_before)
    assert run.skipped == 1 and run.total == 1  # the lasting one, counted once as the run starts
    assert claimed(store, run, "x-series") == {expiring, idle}
    assert claimed(store, run, "r-series") == {ordinary}  # an ordinary one is due whatever its expiry
    assert lasting not in claimed(store, run, "x-series")


def test_due_after_does_not_apply_to_strict_rotation(store: Store) -> None:
    expiring = add(store, "u1", strict=True, expires_in=timedelta(hours=1), refreshed_ago=timedelta(minutes=30))
    recent = add(store, "u2", strict=False, expires_in=timedelta(hours=1), refreshed_ago=timedelta(minutes=30))

    run = store.runs.start(trigger="schedule", owner="w1", now=NOW, due_before=NOW - timedelta(hours=6), strict=CUTOFFS)

    assert claimed(store, run, "x-series") == {expiring}
    assert claimed(store, run, "r-series") == set()  # refreshed 30 min ago: not due by age
    assert recent and run.skipped == 1


def test_a_run_of_one_connection_refreshes_it_at_once(store: Store) -> None:
    lasting = add(store, "u1", strict=True, expires_in=timedelta(hours=20), refreshed_ago=timedelta(hours=1))

    run = store.runs.start(trigger="manual", owner="w1", now=NOW, connection_id=lasting, strict=CUTOFFS)

    assert (run.expiring_before, run.idle_before) == (None, None)
    assert claimed(store, run, "x-series") == {lasting}


def test_a_queued_full_run_gets_the_cutoffs_and_a_queued_single_one_does_not(store: Store) -> None:
    lasting = add(store, "u1", strict=True, expires_in=timedelta(hours=20), refreshed_ago=timedelta(hours=1))
    store.runs.request(trigger="sql", now=NOW)
    full = store.runs.activate_queued(owner="w1", now=NOW, strict=CUTOFFS)
    assert full is not None and full.expiring_before == CUTOFFS.expiring_before
    assert claimed(store, full, "x-series") == set()
    store.runs.finish(full.id, status=RunStatus.COMPLETED, now=NOW)

    store.runs.request(trigger="api", now=NOW, connection_id=lasting)
    single = store.runs.activate_queued(owner="w1", now=NOW, strict=CUTOFFS)
    assert single is not None and single.expiring_before is None
    assert claimed(store, single, "x-series") == {lasting}


def test_the_provider_is_part_of_a_connection_s_identity(store: Store) -> None:
    r = add(store, "u1", strict=False, expires_in=timedelta(hours=1), refreshed_ago=timedelta(0))
    x = store.connections.upsert_connected(
        user_id="u1",
        account_id="store-u1",
        account_name=None,
        encrypt=lambda c: (f"enc-a-{c}", f"enc-r-{c}"),
        expires_at=NOW,
        now=NOW,
        provider="x-series",
        strict_rotation=True,
    )
    assert r != x  # the same account id on two platforms is two connections
    record = store.connections.get(x)
    assert record is not None and (record.provider, record.strict_rotation) == ("x-series", True)

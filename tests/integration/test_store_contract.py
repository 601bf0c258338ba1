"""The store's contract, proven on SQLite and PostgreSQL alike (every ``store`` test runs on both).

Leases end by the database's clock: a test that needs a lease already run out takes it with
``lease=timedelta(0)``, and a test that needs an old heartbeat ages it with ``age_heartbeat``. The
``now`` the tests pass is only what gets recorded (``updated_at``, ``started_at``, ``next_attempt_at``).
Pacing slots have their own file, ``test_pacing_contract.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import StatementError

from lightkeeper.clock import utcnow
from lightkeeper.errors import SchemaOutOfDate
from lightkeeper.store import (
    JOB_NAME,
    ConnectionRecord,
    ConnectionRepo,
    ConnectSession,
    EncryptPair,
    Lease,
    NewTokens,
    OAuthState,
    Rejection,
    RunStatus,
    Status,
    Store,
    Tally,
    current_revision,
    dialect,
    ensure_current,
    head_revision,
    make_engine,
    upgrade,
)
from lightkeeper.store.migrate import MIGRATIONS
from tests.helpers import age_heartbeat

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)
GONE = timedelta(0)  # a lease that has already run out: its holder died
STALE_AFTER = timedelta(minutes=5)


def connect(
    store: Store,
    *,
    user: str = "u1",
    account: str = "a1",
    name: str | None = "Shop",
    now: datetime = NOW,
    tag: str = "",
) -> int:
    """Connect (user, account) with ciphertexts that name the row they were bound to."""
    return store.connections.upsert_connected(
        user_id=user,
        account_id=account,
        account_name=name,
        encrypt=lambda cid: (f"enc-access-{cid}{tag}", f"enc-refresh-{cid}{tag}"),
        expires_at=now + timedelta(hours=1),
        now=now,
    )


def record(store: Store, connection_id: int) -> ConnectionRecord:
    found = store.connections.get(connection_id)
    assert found is not None
    return found


def tokens(tag: str, now: datetime = NOW) -> NewTokens:
    return NewTokens(access_token=f"enc-access-{tag}", refresh_token=f"enc-refresh-{tag}", expires_at=now + LEASE)


def start_run(store: Store, now: datetime = NOW, *, connection_id: int | None = None) -> int:
    return store.runs.start(trigger="manual", owner="runner", now=now, connection_id=connection_id).id


def lease(store: Store, connection_id: int, *, owner: str = "w1", length: timedelta = LEASE) -> Lease:
    held = store.connections.acquire(connection_id, owner=owner, lease=length)
    assert held is not None, f"connection {connection_id} was not free"
    return held


def claim(
    store: Store,
    run_id: int,
    *,
    owner: str = "w1",
    length: timedelta = LEASE,
    after_id: int = 0,
    connection_id: int | None = None,
) -> Lease | None:
    return store.connections.claim_next(
        run_id=run_id, owner=owner, lease=length, after_id=after_id, connection_id=connection_id
    )


def claim_ids(store: Store, run_id: int, *, owner: str = "w1", connection_id: int | None = None) -> list[int]:
    """Claim one row after another until nothing is left (the claims stay leased)."""
    ids: list[int] = []
    while (held := claim(store, run_id, owner=owner, connection_id=connection_id)) is not None:
        ids.append(held.record.id)
    return ids


def save(store: Store, held: Lease, tag: str = "new", *, tally: Tally | None = None) -> bool:
    return store.connections.save_tokens(
        held.record.id,
        lease_token=held.token,
        version=held.record.token_version,
        tokens=tokens(tag),
        now=NOW,
        tally=tally,
    )


def fail(store: Store, connection_id: int, *, retry_at: datetime = NOW + LEASE, error: str = "timeout") -> None:
    """Lease the connection and record a failure of it (which ends the lease)."""
    held = lease(store, connection_id)
    assert store.connections.mark_error(
        connection_id,
        lease_token=held.token,
        version=held.record.token_version,
        error=error,
        retry_at=retry_at,
        now=NOW,
    )


def expire(store: Store, connection_id: int) -> None:
    """Lease the connection and record its refresh token dead (which ends the lease)."""
    held = lease(store, connection_id)
    assert store.connections.mark_expired(
        connection_id, lease_token=held.token, version=held.record.token_version, error="invalid_grant", now=NOW
    )


def disconnect(store: Store, connection_id: int) -> None:
    held = lease(store, connection_id)
    assert store.connections.disconnect(connection_id, lease_token=held.token, now=NOW)


def counts(store: Store, run_id: int) -> tuple[int, int, int, int, int]:
    """(total, refreshed, expired, errors, skipped) of a run."""
    run = store.runs.get(run_id)
    assert run is not None
    return (run.total, run.refreshed, run.expired, run.errors, run.skipped)


def db_now(store: Store) -> datetime:
    """The database's clock: PostgreSQL's ``statement_timestamp()``, SQLite's wall clock."""
    with store.engine.connect() as conn:
        return conn.execute(select(dialect.now(conn))).scalar_one()


# -- migrations -----------------------------------------------------------------------------------------
def test_migrated_database_is_at_head(store: Store) -> None:
    assert current_revision(store.engine) == head_revision()


def test_ensure_current_accepts_a_migrated_database(store: Store) -> None:
    ensure_current(store.engine, auto_create=False)


def test_upgrade_twice_is_harmless(store: Store) -> None:
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()


def test_ensure_current_creates_the_schema_of_a_new_sqlite_file(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/new.db")
    try:
        ensure_current(engine, auto_create=True)
        assert current_revision(engine) == head_revision()
        assert "lightspeed_connections" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_ensure_current_without_auto_create_refuses_a_new_sqlite_file(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/new.db")
    try:
        with pytest.raises(SchemaOutOfDate, match="lightkeeper db upgrade"):
            ensure_current(engine, auto_create=False)
    finally:
        engine.dispose()


def test_ensure_current_refuses_an_empty_postgresql_without_auto_create(pg_empty_database_url: str) -> None:
    engine = make_engine(pg_empty_database_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="lightkeeper db upgrade"):
            ensure_current(engine, auto_create=False)
    finally:
        engine.dispose()


def test_ensure_current_never_migrates_an_empty_postgresql(pg_empty_database_url: str) -> None:
    engine = make_engine(pg_empty_database_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="lightkeeper db upgrade"):
            ensure_current(engine, auto_create=True)
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "tamper",
    ["DELETE FROM alembic_version", "UPDATE alembic_version SET version_num = '0002'"],
    ids=["missing", "older"],
)
def test_ensure_current_refuses_tables_at_an_unknown_revision(store: Store, tamper: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(tamper))
    with pytest.raises(SchemaOutOfDate, match="lightkeeper db upgrade"):
        ensure_current(store.engine, auto_create=True)


def test_ensure_current_refuses_a_schema_newer_than_the_code(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutOfDate, match="upgrade lightkeeper") as refused:
        ensure_current(store.engine, auto_create=True)
    assert "db upgrade" not in str(refused.value)  # migrating cannot help: the code is what is old
    assert "9999" in str(refused.value) and head_revision() in str(refused.value)


def _migrate_to(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_migrating_to_fenced_leases_releases_the_leases_of_older_code(
    request: pytest.FixtureRequest, tmp_path: Path, dialect_name: str
) -> None:
    url = (
        f"sqlite:///{tmp_path}/old.db" if dialect_name == "sqlite" else request.getfixturevalue("pg_empty_database_url")
    )
    engine = make_engine(url)
    try:
        _migrate_to(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO lightspeed_connections (user_id, account_id, status, acquired_by, acquired_until, "
                    "created_at, updated_at) VALUES ('u1', 'a1', 'connected', 'old-worker', :until, :now, :now)"
                ),
                {"until": "2999-01-01 00:00:00", "now": "2026-01-01 00:00:00"},
            )
        upgrade(engine)
        store = Store(engine)
        (old,) = store.connections.list()
        assert (old.acquired_by, old.acquired_until, old.lease_token) == (None, None, None)
        assert lease(store, old.id).record.acquired_by == "w1"  # nobody holds it any more
        run = store.runs.start(trigger="manual", owner="o", now=NOW)
        assert run.participants == 0
        assert store.pacing.pending("refresh") == 0.0
    finally:
        engine.dispose()


# -- timestamps -----------------------------------------------------------------------------------------
def test_timestamps_come_back_as_aware_utc(store: Store) -> None:
    plus_two = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))  # the same instant as NOW
    found = record(store, connect(store, now=plus_two))
    for value in (found.created_at, found.updated_at, found.last_token_refresh_at, found.token_expires_at):
        assert value is not None
        assert value.tzinfo == UTC
        assert value.utcoffset() == timedelta(0)
    assert found.created_at == NOW
    assert found.created_at.hour == 0
    assert found.token_expires_at == NOW + timedelta(hours=1)


def test_run_timestamps_come_back_as_aware_utc(store: Store) -> None:
    run = store.runs.start(
        trigger="manual", owner="o", now=datetime(2025, 12, 31, 19, tzinfo=timezone(-timedelta(hours=5)))
    )
    assert run.started_at == NOW
    assert run.started_at is not None and run.started_at.tzinfo == UTC


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive") as caught:
        connect(store, now=datetime(2026, 1, 1))
    assert isinstance(caught.value.orig, ValueError)
    assert store.connections.count() == 0


# -- connecting -----------------------------------------------------------------------------------------
def test_upsert_inserts_and_encrypts_with_the_new_id(store: Store) -> None:
    seen: list[int] = []

    def encrypt(cid: int) -> tuple[str, str]:
        seen.append(cid)
        return f"cipher-a-{cid}", f"cipher-r-{cid}"

    cid = store.connections.upsert_connected(
        user_id="u1",
        account_id="a1",
        account_name="Shop",
        encrypt=encrypt,
        expires_at=NOW + timedelta(hours=1),
        now=NOW,
    )
    found = record(store, cid)
    assert seen == [cid]
    assert (found.access_token, found.refresh_token) == (f"cipher-a-{cid}", f"cipher-r-{cid}")
    assert found.token_version == 1
    assert found.status is Status.CONNECTED
    assert (found.user_id, found.account_id, found.account_name) == ("u1", "a1", "Shop")
    assert found.last_token_refresh_at == NOW


def test_reconnecting_updates_the_same_row_and_clears_error_state(store: Store) -> None:
    cid = connect(store)
    fail(store, cid, error="timeout")
    lease(store, cid)
    later = NOW + timedelta(minutes=1)

    assert connect(store, now=later, tag="-new") == cid
    found = record(store, cid)
    assert found.status is Status.CONNECTED
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (None, 0, None)
    assert (found.acquired_by, found.acquired_until, found.lease_token) == (None, None, None)
    assert found.access_token == f"enc-access-{cid}-new"
    assert found.token_version == 2
    assert (found.created_at, found.updated_at) == (NOW, later)
    assert store.connections.count() == 1


def test_reconnecting_ends_a_lease_so_its_holder_cannot_write_over_the_new_tokens(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid)
    connect(store, tag="-reconnected")
    assert save(store, held, "late") is False
    assert record(store, cid).access_token == f"enc-access-{cid}-reconnected"


def test_reconnecting_an_expired_connection_makes_it_connected(store: Store) -> None:
    cid = connect(store)
    expire(store, cid)
    assert connect(store) == cid
    assert record(store, cid).status is Status.CONNECTED


def test_reconnecting_without_a_name_keeps_the_old_name(store: Store) -> None:
    cid = connect(store, name="Shop")
    connect(store, name=None)
    assert record(store, cid).account_name == "Shop"


def test_the_same_account_for_another_user_is_another_row(store: Store) -> None:
    first = connect(store, user="u1", account="a1")
    second = connect(store, user="u2", account="a1")
    assert first != second
    assert store.connections.count() == 2


def test_get_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.connections.get(999) is None


# -- leases ---------------------------------------------------------------------------------------------
def test_acquire_takes_a_free_lease(store: Store) -> None:
    cid = connect(store)
    held = store.connections.acquire(cid, owner="w1", lease=LEASE)
    assert held is not None
    assert (held.record.id, held.record.acquired_by, held.record.lease_token) == (cid, "w1", held.token)
    assert held.record.refresh_token == f"enc-refresh-{cid}"
    assert store.connections.lease_live(cid)
    assert record(store, cid).lease_token == held.token


def test_a_lease_ends_by_the_database_clock(store: Store) -> None:
    cid = connect(store)
    before = db_now(store)
    held = lease(store, cid)
    after = db_now(store)
    assert held.record.acquired_until is not None
    assert before + LEASE <= held.record.acquired_until <= after + LEASE


def test_the_local_deadline_of_a_lease_errs_early(store: Store) -> None:
    cid = connect(store)
    before = time.monotonic()
    held = lease(store, cid)
    after = time.monotonic()
    assert before + LEASE.total_seconds() <= held.expires_at_monotonic <= after + LEASE.total_seconds()
    assert 0 < held.seconds_left() <= LEASE.total_seconds()


def test_a_zero_lease_has_already_run_out(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid, length=GONE)
    assert held.seconds_left() <= 0
    assert not store.connections.lease_live(cid)


def test_acquire_is_refused_while_another_owner_holds_a_live_lease(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid, owner="w1")
    assert store.connections.acquire(cid, owner="w2", lease=LEASE) is None
    assert record(store, cid).acquired_by == "w1"
    assert record(store, cid).lease_token == held.token


def test_the_same_owner_cannot_enter_twice(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid, owner="w1")
    assert store.connections.acquire(cid, owner="w1", lease=LEASE * 2) is None
    assert record(store, cid).acquired_until == held.record.acquired_until  # not extended either


def test_every_acquisition_gets_a_fresh_token(store: Store) -> None:
    cid = connect(store)
    first = lease(store, cid)
    assert store.connections.release(cid, first.token)
    second = lease(store, cid)
    assert second.token != first.token
    assert store.connections.release(cid, first.token) is False  # the first lease is over for good
    assert store.connections.lease_live(cid)


def test_an_expired_lease_is_taken_over_and_its_old_holder_can_write_nothing(store: Store) -> None:
    cid = connect(store)
    dead = lease(store, cid, owner="w1", length=GONE)
    taken = lease(store, cid, owner="w2")
    assert taken.token != dead.token
    assert save(store, dead, "from-the-dead") is False
    assert record(store, cid).lease_token == taken.token
    assert save(store, taken, "from-the-living") is True
    assert record(store, cid).access_token == "enc-access-from-the-living"


def test_an_expired_lease_can_be_taken_over_by_its_own_owner(store: Store) -> None:
    cid = connect(store)
    dead = lease(store, cid, owner="w1", length=GONE)
    again = lease(store, cid, owner="w1")  # the same replica, restarted: still a new acquisition
    assert again.token != dead.token
    assert save(store, dead) is False


def test_lease_live_follows_the_lease(store: Store) -> None:
    cid = connect(store)
    assert not store.connections.lease_live(cid)
    held = lease(store, cid)
    assert store.connections.lease_live(cid)
    store.connections.release(cid, held.token)
    assert not store.connections.lease_live(cid)
    assert not store.connections.lease_live(999)


def test_release_only_under_the_lease_token(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid, owner="w1")
    assert store.connections.release(cid, "not-the-token") is False
    assert record(store, cid).acquired_by == "w1"
    assert store.connections.release(cid, held.token) is True
    found = record(store, cid)
    assert (found.acquired_by, found.acquired_until, found.lease_token) == (None, None, None)
    assert store.connections.release(cid, held.token) is False


def test_release_changes_nothing_but_the_lease(store: Store) -> None:
    cid = connect(store)
    before = record(store, cid)
    store.connections.release(cid, lease(store, cid).token)
    assert record(store, cid) == before


def test_acquire_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.connections.acquire(999, owner="w1", lease=LEASE) is None


# -- claiming, one row at a time -------------------------------------------------------------------------
def test_claim_next_takes_only_connected_and_error_rows(store: Store) -> None:
    ok, failing, dead, gone = (connect(store, account=f"a{i}") for i in range(4))
    fail(store, failing)
    expire(store, dead)
    disconnect(store, gone)
    assert claim_ids(store, start_run(store)) == [ok, failing]


def test_claim_next_leases_the_row_for_the_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    claimed = claim(store, run_id, owner="w1")
    assert claimed is not None
    assert (claimed.record.id, claimed.record.acquired_by, claimed.record.last_run_id) == (cid, "w1", run_id)
    assert claimed.record.lease_token == claimed.token
    assert claimed.seconds_left() > 0
    assert store.connections.lease_live(cid)
    assert store.connections.count_in_flight(run_id) == 1


def test_claim_next_takes_the_lowest_id_first(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(4)]
    run_id = start_run(store)
    assert claim_ids(store, run_id) == ids


def test_claim_next_honours_after_id(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    run_id = start_run(store)
    after_first = claim(store, run_id, after_id=ids[0])
    assert after_first is not None and after_first.record.id == ids[1]
    assert claim(store, run_id, after_id=ids[2]) is None  # ids[0] is still there, but below after_id
    from_start = claim(store, run_id)
    assert from_start is not None and from_start.record.id == ids[0]


def test_claim_next_never_returns_a_row_twice_in_one_run(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    run_id = start_run(store)
    claims = [claim(store, run_id) for _ in ids]
    assert [c.record.id for c in claims if c is not None] == ids
    assert claim(store, run_id) is None
    for held in claims:  # even with every lease released, the run is done with them
        assert held is not None and save(store, held)
    assert claim(store, run_id) is None
    assert not store.connections.has_claimable(run_id)


def test_a_new_run_claims_the_rows_again(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    first = start_run(store)
    for held in [claim(store, first) for _ in ids]:
        assert held is not None and store.connections.release(held.record.id, held.token)
    store.runs.finish(first, status=RunStatus.COMPLETED, now=NOW)
    assert claim_ids(store, start_run(store)) == ids


def test_claim_next_skips_rows_leased_by_someone_else(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    lease(store, ids[1], owner="on-demand")
    assert claim_ids(store, start_run(store)) == [ids[0], ids[2]]
    assert record(store, ids[1]).acquired_by == "on-demand"


def test_claim_next_can_target_one_connection(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    run_id = start_run(store)
    assert claim_ids(store, run_id, connection_id=ids[1]) == [ids[1]]
    assert claim_ids(store, run_id, connection_id=ids[1]) == []
    assert claim_ids(store, run_id) == [ids[0], ids[2]]


def test_claims_of_a_dead_participant_are_taken_over_after_the_lease(store: Store) -> None:
    slow_row, dead_row = (connect(store, account=f"a{i}") for i in range(2))
    run_id = start_run(store)
    slow = claim(store, run_id, owner="slow")
    dead = claim(store, run_id, owner="dead", length=GONE)
    assert slow is not None and slow.record.id == slow_row
    assert dead is not None and dead.record.id == dead_row
    assert store.connections.count_in_flight(run_id) == 2  # a claim that ran out is still the run's

    taken = claim(store, run_id, owner="alive")
    assert taken is not None and taken.record.id == dead_row and taken.token != dead.token
    assert claim(store, run_id, owner="alive") is None  # a live claim stays with its holder
    assert save(store, dead, tally=Tally(run_id, "refreshed")) is False
    assert save(store, taken, tally=Tally(run_id, "refreshed")) is True
    assert counts(store, run_id) == (1, 1, 0, 0, 0)
    assert store.connections.count_in_flight(run_id) == 1


def test_unclaim_gives_the_row_back_to_the_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    stopping = claim(store, run_id, owner="stopping")
    assert stopping is not None
    store.connections.unclaim(cid, stopping.token)
    assert store.connections.count_in_flight(run_id) == 0
    assert not store.connections.lease_live(cid)
    assert claim_ids(store, run_id, owner="other") == [cid]


def test_unclaim_under_a_stale_token_changes_nothing(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    dead = claim(store, run_id, owner="dead", length=GONE)
    assert dead is not None
    assert claim(store, run_id, owner="alive") is not None
    before = record(store, cid)
    store.connections.unclaim(cid, dead.token)
    assert record(store, cid) == before


def test_has_claimable_looks_without_claiming(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(2)]
    run_id = start_run(store)
    assert store.connections.has_claimable(run_id)
    assert store.connections.has_claimable(run_id, ids[1])
    assert not store.connections.lease_live(ids[0]) and not store.connections.lease_live(ids[1])
    assert claim(store, run_id, connection_id=ids[1]) is not None
    assert not store.connections.has_claimable(run_id, ids[1])
    assert store.connections.has_claimable(run_id)
    assert claim(store, run_id) is not None
    assert not store.connections.has_claimable(run_id)
    assert not store.connections.has_claimable(run_id, 999)


def test_count_in_flight_counts_the_runs_unreleased_claims(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    run_id = start_run(store)
    other_run = start_run(store, connection_id=ids[2])
    first, second = claim(store, run_id), claim(store, run_id)
    assert claim(store, other_run) is not None
    assert first is not None and second is not None
    # Its own two claims, and a connection it has not handled that another run holds: it waits for all three.
    assert store.connections.count_in_flight(run_id) == 3
    assert save(store, first)
    assert store.connections.count_in_flight(run_id) == 2
    assert store.connections.release(second.record.id, second.token)
    assert store.connections.count_in_flight(run_id) == 1
    assert store.connections.count_in_flight(run_id, connection_id=ids[0]) == 0  # a one-connection run
    assert store.connections.count_in_flight(other_run, connection_id=ids[2]) == 1


def test_count_in_flight_with_providers_counts_free_rows_not_yet_handled(store: Store) -> None:
    """One look sees a row an on-demand holder just let go: the run does not close without it."""
    cid = connect(store)
    run_id = start_run(store)
    on_demand = lease(store, cid, owner="on-demand")
    assert not store.connections.has_claimable(run_id)  # the participant's first look: nothing free
    assert save(store, on_demand)  # the holder lets go between the two looks
    assert store.connections.count_in_flight(run_id) == 0  # the old second look: nothing held either
    provider = record(store, cid).provider
    assert store.connections.count_in_flight(run_id, providers=[provider]) == 1
    assert store.connections.count_in_flight(run_id, providers=["some-other-provider"]) == 0
    assert claim_ids(store, run_id) == [cid]
    assert store.connections.count_in_flight(run_id, providers=[provider]) == 1  # now its own claim


def test_acquiring_a_runs_expired_claim_hands_the_row_back_to_the_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    assert claim(store, run_id, owner="dead", length=GONE) is not None
    taken = lease(store, cid, owner="on-demand")
    assert taken.record.last_run_id is None
    assert store.connections.count_in_flight(run_id) == 1  # the run waits for the on-demand holder
    assert claim(store, run_id) is None  # leased by on-demand
    assert save(store, taken)
    again = claim(store, run_id)
    assert again is not None and again.record.id == cid


def test_a_lease_on_a_row_the_run_handled_does_not_hand_it_back(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    held = claim(store, run_id)
    assert held is not None and save(store, held)
    on_demand = lease(store, cid, owner="on-demand")
    assert on_demand.record.last_run_id == run_id
    assert save(store, on_demand)
    assert claim(store, run_id) is None


def test_an_on_demand_lease_on_a_handled_row_is_not_the_runs_claim(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    held = claim(store, run_id)
    assert held is not None and save(store, held, tally=Tally(run_id, "refreshed"))
    lease(store, cid, owner="on-demand")
    assert store.connections.count_in_flight(run_id) == 0  # the run is not waiting for anything of its own


def test_a_handled_row_stays_handled_after_an_on_demand_holder_dies(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    held = claim(store, run_id)
    assert held is not None and save(store, held, tally=Tally(run_id, "refreshed"))
    lease(store, cid, owner="on-demand-that-dies", length=GONE)
    assert claim(store, run_id) is None


# -- outcomes: fenced by the lease token, compare-and-swap on token_version ------------------------------
#: Every outcome write, called with a lease token and the version read: (repo, id, token, version, tally) → bool.
Write = Callable[[ConnectionRepo, int, str, int, Tally], bool]
WRITES: dict[str, Write] = {
    "save_tokens": lambda repo, cid, token, version, tally: repo.save_tokens(
        cid, lease_token=token, version=version, tokens=tokens("late"), now=NOW, tally=tally
    ),
    "mark_expired": lambda repo, cid, token, version, tally: repo.mark_expired(
        cid, lease_token=token, version=version, error="invalid_grant", now=NOW, tally=tally
    ),
    "mark_error": lambda repo, cid, token, version, tally: repo.mark_error(
        cid, lease_token=token, version=version, error="timeout", retry_at=NOW + LEASE, now=NOW, tally=tally
    ),
    "release": lambda repo, cid, token, version, tally: repo.release(cid, token, tally=tally),
    "disconnect": lambda repo, cid, token, version, tally: repo.disconnect(cid, lease_token=token, now=NOW),
}
VERSIONED = ["save_tokens", "mark_expired", "mark_error"]


@pytest.mark.parametrize("write", WRITES)
def test_a_write_under_a_stale_lease_token_changes_and_counts_nothing(store: Store, write: str) -> None:
    cid = connect(store)
    run_id = start_run(store)
    dead = claim(store, run_id, owner="dead", length=GONE)
    assert dead is not None
    assert claim(store, run_id, owner="alive") is not None
    before = record(store, cid)
    assert (
        WRITES[write](store.connections, cid, dead.token, dead.record.token_version, Tally(run_id, "errors")) is False
    )
    assert record(store, cid) == before
    assert counts(store, run_id) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("write", WRITES)
def test_a_write_without_a_lease_changes_nothing(store: Store, write: str) -> None:
    cid = connect(store)
    before = record(store, cid)
    assert (
        WRITES[write](store.connections, cid, "never-issued", before.token_version, Tally(start_run(store), "errors"))
        is False
    )
    assert record(store, cid) == before


@pytest.mark.parametrize("write", VERSIONED)
def test_a_write_at_another_version_than_the_one_read_changes_and_counts_nothing(store: Store, write: str) -> None:
    cid = connect(store)
    run_id = start_run(store)
    held = claim(store, run_id)
    assert held is not None
    before = record(store, cid)
    for version in (held.record.token_version - 1, held.record.token_version + 1):
        assert WRITES[write](store.connections, cid, held.token, version, Tally(run_id, "errors")) is False
    assert record(store, cid) == before  # the lease still stands, untouched
    assert counts(store, run_id) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("write", WRITES)
def test_a_write_lands_once_per_lease(store: Store, write: str) -> None:
    cid = connect(store)
    run_id = start_run(store)
    held = lease(store, cid)
    assert WRITES[write](store.connections, cid, held.token, held.record.token_version, Tally(run_id, "errors"))
    after = record(store, cid)
    assert (after.acquired_by, after.acquired_until, after.lease_token) == (None, None, None)
    assert WRITES[write](store.connections, cid, held.token, after.token_version, Tally(run_id, "errors")) is False
    assert record(store, cid) == after
    assert counts(store, run_id)[0] == (0 if write == "disconnect" else 1)


def test_save_tokens_bumps_the_version_and_clears_error_state_and_lease(store: Store) -> None:
    cid = connect(store)
    fail(store, cid)
    held = lease(store, cid)
    later = NOW + timedelta(minutes=1)
    assert store.connections.save_tokens(
        cid, lease_token=held.token, version=held.record.token_version, tokens=tokens("new", later), now=later
    )
    found = record(store, cid)
    assert found.status is Status.CONNECTED
    assert (found.access_token, found.refresh_token) == ("enc-access-new", "enc-refresh-new")
    assert found.token_version == held.record.token_version + 1
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (None, 0, None)
    assert (found.acquired_by, found.acquired_until, found.lease_token) == (None, None, None)
    assert (found.last_token_refresh_at, found.token_expires_at, found.updated_at) == (later, later + LEASE, later)


def test_mark_error_counts_failures_and_keeps_tokens(store: Store) -> None:
    cid = connect(store)
    fail(store, cid, error="HTTP 503", retry_at=NOW + LEASE)
    fail(store, cid, error="timeout", retry_at=NOW + LEASE * 2)
    found = record(store, cid)
    assert found.status is Status.ERROR
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (
        "timeout",
        2,
        NOW + LEASE * 2,
    )
    assert (found.access_token, found.refresh_token) == (f"enc-access-{cid}", f"enc-refresh-{cid}")
    assert found.token_version == 1
    assert (found.acquired_by, found.lease_token) == (None, None)


def test_mark_expired_keeps_tokens(store: Store) -> None:
    cid = connect(store)
    expire(store, cid)
    found = record(store, cid)
    assert (found.status, found.last_error, found.next_attempt_at) == (Status.EXPIRED, "invalid_grant", None)
    assert (found.access_token, found.refresh_token) == (f"enc-access-{cid}", f"enc-refresh-{cid}")
    assert found.token_version == 1
    assert found.lease_token is None


def test_disconnect_forgets_the_tokens(store: Store) -> None:
    cid = connect(store)
    held = lease(store, cid)
    assert store.connections.disconnect(cid, lease_token=held.token, now=NOW) is True
    found = record(store, cid)
    assert found.status is Status.DISCONNECTED
    assert (found.access_token, found.refresh_token, found.token_expires_at) == (None, None, None)
    assert found.token_version == 2
    assert (found.acquired_by, found.lease_token) == (None, None)
    assert store.connections.disconnect(999, lease_token=held.token, now=NOW) is False


def test_an_outcome_is_counted_in_its_run_by_the_same_write(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(4)]
    run_id = start_run(store)
    refreshed, expired, failed, released = (claim(store, run_id) for _ in ids)
    assert refreshed and expired and failed and released
    assert save(store, refreshed, tally=Tally(run_id, "refreshed"))
    assert WRITES["mark_expired"](
        store.connections, ids[1], expired.token, expired.record.token_version, Tally(run_id, "expired")
    )
    assert WRITES["mark_error"](
        store.connections, ids[2], failed.token, failed.record.token_version, Tally(run_id, "errors")
    )
    assert store.connections.release(ids[3], released.token, tally=Tally(run_id, "skipped"))
    assert counts(store, run_id) == (4, 1, 1, 1, 1)


# -- skipping connections in backoff ---------------------------------------------------------------------
def test_skip_in_backoff_marks_and_counts_the_rows_still_backing_off(store: Store) -> None:
    backing_off, due, fine, gone = (connect(store, account=f"a{i}") for i in range(4))
    fail(store, backing_off, retry_at=NOW + LEASE)
    fail(store, due, retry_at=NOW - LEASE)
    fail(store, gone, retry_at=NOW + LEASE)
    disconnect(store, gone)  # not refreshable: not the run's to skip
    run_id = start_run(store)
    assert store.connections.skip_in_backoff(run_id, NOW) == 1
    assert counts(store, run_id) == (1, 0, 0, 0, 1)
    assert record(store, backing_off).last_run_id == run_id
    assert not store.connections.lease_live(backing_off)  # no lease spent on it
    assert claim_ids(store, run_id) == [due, fine]
    assert store.connections.count_in_flight(run_id) == 2


def test_skip_in_backoff_counts_a_row_once_per_run(store: Store) -> None:
    cid = connect(store)
    fail(store, cid, retry_at=NOW + LEASE)
    run_id = start_run(store)
    assert store.connections.skip_in_backoff(run_id, NOW) == 1
    assert store.connections.skip_in_backoff(run_id, NOW) == 0  # a second participant of the run
    assert counts(store, run_id) == (1, 0, 0, 0, 1)
    assert store.connections.skip_in_backoff(start_run(store, connection_id=cid), NOW) == 1  # another run


def test_skip_in_backoff_leaves_rows_leased_or_claimed(store: Store) -> None:
    leased, claimed = (connect(store, account=f"a{i}") for i in range(2))
    for cid in (leased, claimed):
        fail(store, cid, retry_at=NOW + LEASE)
    run_id = start_run(store)
    lease(store, leased, owner="on-demand")
    assert claim(store, run_id, connection_id=claimed) is not None
    assert store.connections.skip_in_backoff(run_id, NOW) == 0
    assert counts(store, run_id) == (0, 0, 0, 0, 0)


def test_skip_in_backoff_of_a_row_whose_lease_ran_out_counts_it_once(store: Store) -> None:
    cid = connect(store)
    fail(store, cid, retry_at=NOW + LEASE)
    lease(store, cid, owner="on-demand-that-died", length=GONE)
    run_id = start_run(store)
    assert store.connections.skip_in_backoff(run_id, NOW) == 1
    assert store.connections.skip_in_backoff(run_id, NOW) == 0
    assert claim(store, run_id) is None
    assert store.connections.count_in_flight(run_id) == 0
    assert counts(store, run_id) == (1, 0, 0, 0, 1)


# -- key ids --------------------------------------------------------------------------------------------
def sealed_under(kid: str) -> EncryptPair:
    """Ciphertexts in the format of ``crypto``: ``lk1:<kid>:<data>``."""
    return lambda cid: (f"lk1:{kid}:access-{cid}", f"lk1:{kid}:refresh-{cid}")


def test_key_ids_counts_the_rows_under_each_key(store: Store) -> None:
    assert store.connections.key_ids() == {}
    under = {"a1": "0badc0de", "a2": "0badc0de", "a3": "feedf00d", "a4": "feedf00d"}
    ids = {
        account: store.connections.upsert_connected(
            user_id="u1",
            account_id=account,
            account_name=None,
            encrypt=sealed_under(kid),
            expires_at=NOW + LEASE,
            now=NOW,
        )
        for account, kid in under.items()
    }
    disconnect(store, ids["a4"])  # no tokens any more: under no key
    assert store.connections.key_ids() == {"0badc0de": 2, "feedf00d": 1}


# -- listing --------------------------------------------------------------------------------------------
def test_list_filters_by_user_and_status(store: Store) -> None:
    mine = connect(store, user="u1", account="a1")
    mine_dead = connect(store, user="u1", account="a2")
    theirs = connect(store, user="u2", account="a1")
    expire(store, mine_dead)

    assert {r.id for r in store.connections.list(user_id="u1")} == {mine, mine_dead}
    assert [r.id for r in store.connections.list(status="expired")] == [mine_dead]
    assert [r.id for r in store.connections.list(user_id="u1", status="connected")] == [mine]
    assert {r.id for r in store.connections.list()} == {mine, mine_dead, theirs}
    assert store.connections.count(status="connected") == 2


def test_iter_pages_through_every_row_once_newest_refresh_first(store: Store) -> None:
    ids = [connect(store, account=f"a{i}", now=NOW + timedelta(minutes=i)) for i in range(23)]
    seen = [r.id for r in store.connections.iter(batch=5)]
    assert seen == list(reversed(ids))


# -- runs -----------------------------------------------------------------------------------------------
def test_start_records_a_running_run(store: Store) -> None:
    before = db_now(store)
    run = store.runs.start(trigger="schedule", owner="replica-1", now=NOW)
    after = db_now(store)
    assert run.status is RunStatus.RUNNING
    assert (run.trigger, run.acquired_by, run.participants) == ("schedule", "replica-1", 0)
    assert (run.started_at, run.finished_at) == (NOW, None)
    assert run.heartbeat_at is not None and before <= run.heartbeat_at <= after  # the database's clock
    assert (run.total, run.refreshed, run.expired, run.errors, run.skipped) == (0, 0, 0, 0, 0)
    assert store.runs.get(run.id) == run


def test_finish_closes_a_run_once(store: Store) -> None:
    run_id = start_run(store)
    done = NOW + timedelta(minutes=1)
    first = store.runs.finish(run_id, status=RunStatus.COMPLETED, now=done, message="all good")
    assert (first.status, first.finished_at, first.message) == (RunStatus.COMPLETED, done, "all good")
    again = store.runs.finish(run_id, status=RunStatus.FAILED, now=done + LEASE, message="late")
    assert (again.status, again.finished_at, again.message) == (RunStatus.COMPLETED, done, "all good")


def test_interrupt_stale_marks_only_runs_that_stopped_beating(store: Store) -> None:
    stale = start_run(store, connection_id=1)
    fresh = start_run(store, connection_id=2)
    done = start_run(store, connection_id=3)
    store.runs.finish(done, status=RunStatus.COMPLETED, now=NOW)
    for run_id in (stale, done):
        age_heartbeat(store, run_id, timedelta(minutes=10))
    aged = store.runs.get(stale)
    assert aged is not None

    assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 1
    interrupted, running, completed = (store.runs.get(i) for i in (stale, fresh, done))
    assert interrupted is not None and interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.finished_at == aged.heartbeat_at and interrupted.message
    assert running is not None and running.status is RunStatus.RUNNING
    assert completed is not None and completed.status is RunStatus.COMPLETED
    assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 0


def test_a_heartbeat_younger_than_stale_after_is_not_stale(store: Store) -> None:
    run_id = start_run(store)
    age_heartbeat(store, run_id, STALE_AFTER - timedelta(minutes=1))
    assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 0
    age_heartbeat(store, run_id, STALE_AFTER + timedelta(minutes=1))
    assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 1


def test_heartbeat_keeps_a_run_from_going_stale(store: Store) -> None:
    run_id = start_run(store)
    age_heartbeat(store, run_id, timedelta(minutes=10))
    before = db_now(store)
    store.runs.heartbeat(run_id)
    beat = store.runs.get(run_id)
    assert beat is not None and beat.heartbeat_at is not None and beat.heartbeat_at >= before
    assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 0


def test_heartbeat_of_a_finished_run_changes_nothing(store: Store) -> None:
    run_id = start_run(store)
    finished = store.runs.finish(run_id, status=RunStatus.COMPLETED, now=NOW)
    store.runs.heartbeat(run_id)
    assert store.runs.get(run_id) == finished


def test_join_and_leave_count_the_participants(store: Store) -> None:
    run_id = start_run(store)
    other = start_run(store, connection_id=7)
    store.runs.join(run_id)
    store.runs.join(run_id)
    store.runs.join(other)
    joined = store.runs.get(run_id)
    assert joined is not None and joined.participants == 2
    assert store.runs.leave(run_id) == 1
    assert store.runs.leave(run_id) == 0  # the last one to leave: it closes the run
    assert store.runs.leave(run_id) == 0  # never below zero (a participant that left twice)
    left, untouched = store.runs.get(run_id), store.runs.get(other)
    assert left is not None and left.participants == 0
    assert untouched is not None and untouched.participants == 1


def test_list_runs_newest_first_with_limit(store: Store) -> None:
    ids = [start_run(store, NOW + timedelta(minutes=i), connection_id=i) for i in range(4)]
    assert [r.id for r in store.runs.list(limit=3)] == ids[:0:-1]


# -- connect sessions and OAuth states ------------------------------------------------------------------
def new_session(store: Store, token_hash: str = "h1") -> int:
    return store.sessions.create_session(
        token_hash=token_hash, user_id="u1", return_to="/back", now=NOW, expires_at=NOW + LEASE
    )


def test_a_connect_session_is_consumed_once(store: Store) -> None:
    sid = new_session(store)
    assert store.sessions.consume_session("h1", NOW) == ConnectSession(sid, "u1", "/back", NOW + LEASE)
    assert store.sessions.consume_session("h1", NOW) is Rejection.USED


def test_an_expired_connect_session_is_refused(store: Store) -> None:
    new_session(store)
    assert store.sessions.consume_session("h1", NOW + LEASE) is Rejection.EXPIRED


def test_an_unknown_connect_session_is_refused(store: Store) -> None:
    assert store.sessions.consume_session("nope", NOW) is Rejection.UNKNOWN


def new_state(store: Store, session_id: int | None) -> None:
    store.sessions.create_state(
        state_hash="s1",
        user_id="u1",
        session_id=session_id,
        code_verifier="enc-verifier",
        now=NOW,
        expires_at=NOW + LEASE,
    )


def test_an_oauth_state_is_consumed_once(store: Store) -> None:
    sid = new_session(store)
    new_state(store, sid)
    assert store.sessions.consume_state("s1", NOW) == OAuthState("u1", sid, "enc-verifier")
    assert store.sessions.consume_state("s1", NOW) is Rejection.USED


def test_an_expired_oauth_state_is_refused(store: Store) -> None:
    new_state(store, None)
    assert store.sessions.consume_state("s1", NOW + LEASE) is Rejection.EXPIRED


def test_an_unknown_oauth_state_is_refused(store: Store) -> None:
    assert store.sessions.consume_state("nope", NOW) is Rejection.UNKNOWN


# -- one clock: the database's ---------------------------------------------------------------------------
def test_a_replica_clock_running_ahead_changes_nothing_on_postgresql(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases, heartbeats and pacing slots are judged by ``statement_timestamp()``, never by this process."""
    store = Store.from_url(pg_database_url)
    try:
        cid = connect(store)
        run_id = start_run(store)
        held = lease(store, cid, owner="w1")
        store.pacing.take("refresh", 60)
        monkeypatch.setattr(dialect, "utcnow", lambda: utcnow() + timedelta(days=1))

        assert store.connections.lease_live(cid)
        assert store.connections.acquire(cid, owner="skewed", lease=LEASE) is None
        assert record(store, cid).lease_token == held.token
        assert store.runs.interrupt_stale(stale_after=STALE_AFTER) == 0
        assert 59 < store.pacing.pending("refresh") <= 60
        assert 59 < store.pacing.take("refresh", 60) <= 60
        running = store.runs.get(run_id)
        assert running is not None and running.status is RunStatus.RUNNING
    finally:
        store.close()


# -- concurrency (invariant 1 across replicas) -----------------------------------------------------------
def in_threads(url: str, workers: int, work: Callable[[Store, int], None]) -> None:
    """Run ``work(replica, index)`` in ``workers`` threads at once, each with a store of its own (like
    another machine), and fail with the first error any of them raised."""
    failures: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def run(index: int) -> None:
        replica = Store.from_url(url)
        try:
            barrier.wait()
            work(replica, index)
        except BaseException as exc:
            failures.append(exc)
        finally:
            replica.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_database_url"], ids=["sqlite", "postgresql"])
def test_concurrent_claims_of_one_run_are_disjoint(request: pytest.FixtureRequest, url_fixture: str) -> None:
    url = str(request.getfixturevalue(url_fixture))
    setup = Store.from_url(url)
    try:
        ids = {connect(setup, account=f"a{i}") for i in range(200)}
        run_id = start_run(setup)
    finally:
        setup.close()

    workers = 4
    claimed: list[list[int]] = [[] for _ in range(workers)]

    def work(replica: Store, index: int) -> None:
        claimed[index].extend(claim_ids(replica, run_id, owner=f"w{index}"))

    in_threads(url, workers, work)
    everything = [cid for batch in claimed for cid in batch]
    assert len(everything) == len(set(everything)), "a connection was claimed twice"
    assert set(everything) == ids


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_database_url"], ids=["sqlite", "postgresql"])
def test_concurrent_acquires_of_one_connection_give_one_lease(request: pytest.FixtureRequest, url_fixture: str) -> None:
    url = str(request.getfixturevalue(url_fixture))
    setup = Store.from_url(url)
    try:
        cid = connect(setup)
    finally:
        setup.close()

    workers = 8
    got: list[Lease | None] = [None] * workers

    def work(replica: Store, index: int) -> None:
        got[index] = replica.connections.acquire(cid, owner="same-replica-name", lease=LEASE)

    in_threads(url, workers, work)
    winners = [held for held in got if held is not None]
    assert len(winners) == 1
    check = Store.from_url(url)
    try:
        assert record(check, cid).lease_token == winners[0].token
    finally:
        check.close()


# -- one full run at a time, ticks, queued requests (sharing runs between replicas) ----------------------
def test_a_second_full_run_joins_the_one_going(store: Store) -> None:
    first = store.runs.start(trigger="manual", owner="a", now=NOW)
    second = store.runs.start(trigger="manual", owner="b", now=NOW)
    assert second.id == first.id
    store.runs.finish(first.id, status=RunStatus.COMPLETED, now=NOW)
    assert store.runs.start(trigger="manual", owner="b", now=NOW).id != first.id


def test_single_connection_runs_do_not_block_each_other(store: Store) -> None:
    full = store.runs.start(trigger="manual", owner="a", now=NOW)
    single = store.runs.start(trigger="manual", owner="a", now=NOW, connection_id=7)
    assert single.id != full.id and single.connection_id == 7


def test_a_tick_starts_one_run_whatever_the_number_of_replicas(store: Store) -> None:
    tick = datetime(2026, 1, 1, 6, tzinfo=UTC)
    first = store.runs.start_tick(job_name=JOB_NAME, tick=tick, owner="a", now=NOW)
    again = store.runs.start_tick(job_name=JOB_NAME, tick=tick, owner="b", now=NOW)
    assert first is not None and first.status is RunStatus.RUNNING and first.scheduled_for == tick
    assert first.trigger == "schedule"
    assert again is None


def test_a_tick_during_a_run_is_recorded_skipped(store: Store) -> None:
    going = store.runs.start(trigger="manual", owner="a", now=NOW)
    tick = datetime(2026, 1, 1, 6, tzinfo=UTC)
    skipped = store.runs.start_tick(job_name=JOB_NAME, tick=tick, owner="b", now=NOW)
    assert skipped is not None and skipped.status is RunStatus.SKIPPED
    assert skipped.message and str(going.id) in skipped.message
    assert store.runs.start_tick(job_name=JOB_NAME, tick=tick, owner="b", now=NOW) is None  # never replayed


def test_queued_requests_are_started_once(store: Store) -> None:
    queued = store.runs.request(trigger="sql", now=NOW)
    assert queued.status is RunStatus.QUEUED
    started = store.runs.activate_queued(owner="a", now=NOW)
    assert started is not None and started.id == queued.id and started.status is RunStatus.RUNNING
    assert store.runs.activate_queued(owner="b", now=NOW) is None
    assert [r.id for r in store.runs.running()] == [queued.id]


def test_a_queued_request_during_a_run_is_skipped(store: Store) -> None:
    going = store.runs.start(trigger="schedule", owner="a", now=NOW)
    queued = store.runs.request(trigger="sql", now=NOW)
    assert store.runs.activate_queued(owner="b", now=NOW) is None
    skipped = store.runs.get(queued.id)
    assert skipped is not None and skipped.status is RunStatus.SKIPPED
    assert skipped.message and str(going.id) in skipped.message


# -- jobs ---------------------------------------------------------------------------------------------
def test_job_is_created_once_and_updated(store: Store) -> None:
    job = store.jobs.ensure(JOB_NAME, schedule="0 */6 * * *", now=NOW)
    assert (job.schedule, job.active, job.owner) == ("0 */6 * * *", True, "embedded")
    assert store.jobs.ensure(JOB_NAME, schedule="* * * * *", now=NOW).schedule == "0 */6 * * *"
    later = NOW + timedelta(hours=1)
    paused = store.jobs.update(JOB_NAME, now=later, active=False, schedule="0 */3 * * *")
    assert (paused.active, paused.schedule, paused.updated_at) == (False, "0 */3 * * *", later)

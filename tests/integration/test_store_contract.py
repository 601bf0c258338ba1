"""The store's contract, proven on SQLite and PostgreSQL alike (every ``store`` test runs on both)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import StatementError

from lightkeeper.errors import SchemaOutOfDate
from lightkeeper.store import (
    JOB_NAME,
    ConnectionRecord,
    ConnectSession,
    NewTokens,
    OAuthState,
    Rejection,
    RunStatus,
    Status,
    Store,
    Tally,
    current_revision,
    ensure_current,
    head_revision,
    make_engine,
    upgrade,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)


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


def claim_ids(
    store: Store,
    run_id: int,
    *,
    owner: str = "w1",
    now: datetime = NOW,
    limit: int = 10,
    connection_id: int | None = None,
) -> list[int]:
    claimed = store.connections.claim_batch(
        run_id=run_id, owner=owner, now=now, until=now + LEASE, limit=limit, connection_id=connection_id
    )
    return [r.id for r in claimed]


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
    ["DELETE FROM alembic_version", "UPDATE alembic_version SET version_num = '0000'"],
    ids=["missing", "older"],
)
def test_ensure_current_refuses_tables_at_an_unknown_revision(store: Store, tamper: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(tamper))
    with pytest.raises(SchemaOutOfDate, match="lightkeeper db upgrade"):
        ensure_current(store.engine, auto_create=True)


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
    store.connections.mark_error(cid, version=1, error="timeout", retry_at=NOW + LEASE, now=NOW)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    later = NOW + timedelta(minutes=1)

    assert connect(store, now=later, tag="-new") == cid
    found = record(store, cid)
    assert found.status is Status.CONNECTED
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (None, 0, None)
    assert (found.acquired_by, found.acquired_until) == (None, None)
    assert found.access_token == f"enc-access-{cid}-new"
    assert found.token_version == 2
    assert (found.created_at, found.updated_at) == (NOW, later)
    assert store.connections.count() == 1


def test_reconnecting_an_expired_connection_makes_it_connected(store: Store) -> None:
    cid = connect(store)
    store.connections.mark_expired(cid, version=1, error="invalid_grant", now=NOW)
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
    leased = store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    assert leased is not None
    assert (leased.acquired_by, leased.acquired_until) == ("w1", NOW + LEASE)
    assert leased.refresh_token == f"enc-refresh-{cid}"


def test_acquire_is_refused_while_another_owner_holds_a_live_lease(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    assert store.connections.acquire(cid, owner="w2", now=NOW + timedelta(minutes=4), until=NOW + LEASE * 2) is None
    assert record(store, cid).acquired_by == "w1"


def test_acquire_succeeds_once_the_lease_has_passed(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    after = NOW + LEASE + timedelta(seconds=1)
    leased = store.connections.acquire(cid, owner="w2", now=after, until=after + LEASE)
    assert leased is not None and leased.acquired_by == "w2"


def test_the_same_owner_can_reacquire_and_extend(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    leased = store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE * 2)
    assert leased is not None and leased.acquired_until == NOW + LEASE * 2


def test_release_only_by_the_owner(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    store.connections.release(cid, "w2")
    assert record(store, cid).acquired_by == "w1"
    store.connections.release(cid, "w1")
    assert (record(store, cid).acquired_by, record(store, cid).acquired_until) == (None, None)


# -- claiming batches -----------------------------------------------------------------------------------
def test_claim_batch_takes_only_connected_and_error_rows(store: Store) -> None:
    ok, failing, dead, gone = (connect(store, account=f"a{i}") for i in range(4))
    store.connections.mark_error(failing, version=1, error="timeout", retry_at=NOW, now=NOW)
    store.connections.mark_expired(dead, version=1, error="invalid_grant", now=NOW)
    store.connections.disconnect(gone, NOW)
    assert claim_ids(store, start_run(store)) == [ok, failing]


def test_claim_batch_leases_the_rows_for_the_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    (claimed,) = store.connections.claim_batch(run_id=run_id, owner="w1", now=NOW, until=NOW + LEASE, limit=10)
    assert (claimed.id, claimed.acquired_by, claimed.acquired_until, claimed.last_run_id) == (
        cid,
        "w1",
        NOW + LEASE,
        run_id,
    )
    assert store.connections.count_in_flight(run_id) == 1


def test_claim_batch_respects_the_limit_and_never_reclaims_in_one_run(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(5)]
    run_id = start_run(store)
    assert claim_ids(store, run_id, limit=3) == ids[:3]
    assert claim_ids(store, run_id, limit=3) == ids[3:]
    assert claim_ids(store, run_id, limit=3) == []
    for cid in ids:  # even with every lease released, the run is done with them
        store.connections.release(cid, "w1")
    assert claim_ids(store, run_id) == []


def test_a_new_run_claims_the_rows_again(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    assert claim_ids(store, start_run(store)) == ids
    later = NOW + LEASE + timedelta(seconds=1)
    assert claim_ids(store, start_run(store, later), now=later) == ids


def test_claim_batch_skips_rows_leased_by_someone_else(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    store.connections.acquire(ids[1], owner="on-demand", now=NOW, until=NOW + LEASE)
    assert claim_ids(store, start_run(store)) == [ids[0], ids[2]]
    assert record(store, ids[1]).acquired_by == "on-demand"


def test_claim_batch_can_target_one_connection(store: Store) -> None:
    ids = [connect(store, account=f"a{i}") for i in range(3)]
    run_id = start_run(store)
    assert claim_ids(store, run_id, connection_id=ids[1]) == [ids[1]]
    assert claim_ids(store, run_id, connection_id=ids[1]) == []
    assert claim_ids(store, run_id) == [ids[0], ids[2]]


# -- compare-and-swap outcomes --------------------------------------------------------------------------
def test_save_tokens_lands_once_per_read_version(store: Store) -> None:
    cid = connect(store)
    version = record(store, cid).token_version
    assert store.connections.save_tokens(cid, version=version, tokens=tokens("first"), now=NOW) is True
    assert store.connections.save_tokens(cid, version=version, tokens=tokens("second"), now=NOW) is False
    found = record(store, cid)
    assert (found.access_token, found.refresh_token) == ("enc-access-first", "enc-refresh-first")
    assert found.token_version == version + 1


def test_save_tokens_clears_error_state_and_lease(store: Store) -> None:
    cid = connect(store)
    store.connections.mark_error(cid, version=1, error="timeout", retry_at=NOW + LEASE, now=NOW)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    later = NOW + timedelta(minutes=1)
    assert store.connections.save_tokens(cid, version=1, tokens=tokens("new", later), now=later)
    found = record(store, cid)
    assert found.status is Status.CONNECTED
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (None, 0, None)
    assert (found.acquired_by, found.acquired_until) == (None, None)
    assert (found.last_token_refresh_at, found.token_expires_at) == (later, later + LEASE)


def test_mark_error_counts_failures_and_keeps_tokens(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    assert store.connections.mark_error(cid, version=1, error="HTTP 503", retry_at=NOW + LEASE, now=NOW)
    assert store.connections.mark_error(cid, version=1, error="timeout", retry_at=NOW + LEASE * 2, now=NOW)
    found = record(store, cid)
    assert found.status is Status.ERROR
    assert (found.last_error, found.consecutive_failures, found.next_attempt_at) == (
        "timeout",
        2,
        NOW + LEASE * 2,
    )
    assert (found.access_token, found.refresh_token) == (f"enc-access-{cid}", f"enc-refresh-{cid}")
    assert found.token_version == 1
    assert found.acquired_by is None


def test_mark_error_at_a_stale_version_changes_nothing(store: Store) -> None:
    cid = connect(store)
    store.connections.save_tokens(cid, version=1, tokens=tokens("winner"), now=NOW)
    assert store.connections.mark_error(cid, version=1, error="timeout", retry_at=NOW, now=NOW) is False
    found = record(store, cid)
    assert (found.status, found.last_error, found.consecutive_failures) == (Status.CONNECTED, None, 0)


def test_mark_expired_keeps_tokens(store: Store) -> None:
    cid = connect(store)
    assert store.connections.mark_expired(cid, version=1, error="invalid_grant", now=NOW)
    found = record(store, cid)
    assert (found.status, found.last_error) == (Status.EXPIRED, "invalid_grant")
    assert (found.access_token, found.refresh_token) == (f"enc-access-{cid}", f"enc-refresh-{cid}")
    assert found.token_version == 1


def test_mark_expired_at_a_stale_version_changes_nothing(store: Store) -> None:
    cid = connect(store)
    store.connections.save_tokens(cid, version=1, tokens=tokens("winner"), now=NOW)
    assert store.connections.mark_expired(cid, version=1, error="invalid_grant", now=NOW) is False
    found = record(store, cid)
    assert (found.status, found.access_token) == (Status.CONNECTED, "enc-access-winner")


def test_disconnect_forgets_the_tokens(store: Store) -> None:
    cid = connect(store)
    store.connections.acquire(cid, owner="w1", now=NOW, until=NOW + LEASE)
    assert store.connections.disconnect(cid, NOW) is True
    found = record(store, cid)
    assert found.status is Status.DISCONNECTED
    assert (found.access_token, found.refresh_token, found.token_expires_at) == (None, None, None)
    assert found.token_version == 2
    assert found.acquired_by is None
    assert store.connections.disconnect(999, NOW) is False


# -- listing --------------------------------------------------------------------------------------------
def test_list_filters_by_user_and_status(store: Store) -> None:
    mine = connect(store, user="u1", account="a1")
    mine_dead = connect(store, user="u1", account="a2")
    theirs = connect(store, user="u2", account="a1")
    store.connections.mark_expired(mine_dead, version=1, error="invalid_grant", now=NOW)

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
    run = store.runs.start(trigger="schedule", owner="replica-1", now=NOW)
    assert run.status is RunStatus.RUNNING
    assert (run.trigger, run.acquired_by) == ("schedule", "replica-1")
    assert (run.started_at, run.heartbeat_at, run.finished_at) == (NOW, NOW, None)
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
    fresh = start_run(store, NOW + timedelta(minutes=9), connection_id=2)
    done = start_run(store, connection_id=3)
    store.runs.finish(done, status=RunStatus.COMPLETED, now=NOW)

    assert store.runs.interrupt_stale(now=NOW + timedelta(minutes=10), stale_after=timedelta(minutes=5)) == 1
    interrupted, running, completed = (store.runs.get(i) for i in (stale, fresh, done))
    assert interrupted is not None and interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.finished_at == NOW and interrupted.message
    assert running is not None and running.status is RunStatus.RUNNING
    assert completed is not None and completed.status is RunStatus.COMPLETED


def test_heartbeat_keeps_a_run_from_going_stale(store: Store) -> None:
    run_id = start_run(store)
    store.runs.heartbeat(run_id, NOW + timedelta(minutes=8))
    assert store.runs.interrupt_stale(now=NOW + timedelta(minutes=10), stale_after=timedelta(minutes=5)) == 0


def test_list_runs_newest_first_with_limit(store: Store) -> None:
    ids = [start_run(store, NOW + timedelta(minutes=i), connection_id=i) for i in range(4)]
    assert [r.id for r in store.runs.list(limit=3)] == ids[:0:-1]


def test_run_public_has_the_documented_keys(store: Store) -> None:
    public = store.runs.start(trigger="api", owner="o", now=NOW).public()
    documented = {
        "run_id",
        "job_name",
        "trigger",
        "status",
        "started_at",
        "finished_at",
        "total",
        "refreshed",
        "expired",
        "errors",
        "skipped",
    }
    assert documented <= public.keys()
    assert public["job_name"] == "refresh-lightspeed-tokens-every-6h"
    assert (public["status"], public["started_at"], public["finished_at"]) == (
        "running",
        NOW.isoformat(),
        None,
    )


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


# -- concurrent claims (invariant 1 across replicas) -------------------------------------------------------
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
    failures: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work(index: int) -> None:
        replica = Store.from_url(url)  # a replica of its own, like another machine
        try:
            barrier.wait()
            while batch := claim_ids(replica, run_id, owner=f"w{index}", limit=10):
                claimed[index].extend(batch)
        except BaseException as exc:
            failures.append(exc)
        finally:
            replica.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    everything = [cid for batch in claimed for cid in batch]
    assert len(everything) == len(set(everything)), "a connection was claimed twice"
    assert set(everything) == ids


# -- one full run at a time, ticks, queued requests, takeovers (sharing runs between replicas) ---------


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


def test_claims_of_a_dead_participant_are_taken_over_after_the_lease(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    assert claim_ids(store, run_id, owner="dead") == [cid]
    assert claim_ids(store, run_id, owner="alive") == []  # leased: not yet
    later = NOW + LEASE + timedelta(seconds=1)
    taken = store.connections.claim_batch(run_id=run_id, owner="alive", now=later, until=later + LEASE, limit=10)
    assert [c.id for c in taken] == [cid]


def test_a_handled_row_is_not_claimed_again_by_the_same_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    assert claim_ids(store, run_id) == [cid]
    store.connections.release(cid, "w1")
    assert store.connections.count_in_flight(run_id) == 0
    later = NOW + LEASE * 2
    assert store.connections.claim_batch(run_id=run_id, owner="w2", now=later, until=later + LEASE, limit=10) == []


def test_unclaim_gives_the_row_back_to_the_run(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    assert claim_ids(store, run_id, owner="stopping") == [cid]
    store.connections.unclaim(cid, "stopping")
    assert store.connections.count_in_flight(run_id) == 0
    assert claim_ids(store, run_id, owner="other") == [cid]


def test_job_is_created_once_and_updated(store: Store) -> None:
    job = store.jobs.ensure(JOB_NAME, schedule="0 */6 * * *", now=NOW)
    assert (job.schedule, job.active, job.owner) == ("0 */6 * * *", True, "embedded")
    assert store.jobs.ensure(JOB_NAME, schedule="* * * * *", now=NOW).schedule == "0 */6 * * *"
    later = NOW + timedelta(hours=1)
    paused = store.jobs.update(JOB_NAME, now=later, active=False, schedule="0 */3 * * *")
    assert (paused.active, paused.schedule, paused.updated_at) == (False, "0 */3 * * *", later)


def test_an_outcome_is_counted_in_its_run_by_the_same_write(store: Store) -> None:
    cid = connect(store)
    run_id = start_run(store)
    (claimed,) = store.connections.claim_batch(run_id=run_id, owner="w1", now=NOW, until=NOW + LEASE, limit=10)
    saved = store.connections.save_tokens(
        cid, version=claimed.token_version, tokens=NewTokens("a", "r", NOW), now=NOW, tally=Tally(run_id, "refreshed")
    )
    stale = store.connections.mark_error(
        cid, version=claimed.token_version, error="x", retry_at=NOW, now=NOW, tally=Tally(run_id, "errors")
    )
    run = store.runs.get(run_id)
    assert saved and not stale
    assert run is not None and (run.total, run.refreshed, run.errors) == (
        1,
        1,
        0,
    )  # a write that changed nothing counts nothing

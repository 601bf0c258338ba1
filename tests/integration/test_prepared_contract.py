"""``store.prepared`` keeps SQLAlchemy's contract while skipping its per-execution work, on SQLite and PostgreSQL.

A ``Prepared`` statement returns what a SQLAlchemy ``Connection`` returns for the same statement (by column name,
aware UTC datetimes, statuses as the stored strings), binds timestamps exactly and refuses naive ones, and binds
the statement's own constants (``.values(status=...)``, ``LIMIT``/``OFFSET``). ``transaction`` commits on success,
rolls every statement back on any exception, and surfaces a driver error as a ``DBAPIError`` whose text carries no
parameter value. The refresh path built on them (``claim_next``, ``save_tokens`` and the run tally) still fences.
"""

from __future__ import annotations

import secrets
import traceback
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import QueuePool

from lightkeeper.store import Lease, NewTokens, Status, Store, Tally
from lightkeeper.store.leases import claim_statement, new_lease_token
from lightkeeper.store.prepared import Prepared, transaction
from lightkeeper.store.schema import connections as t

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)
PLUS_TWO = timezone(timedelta(hours=2))
MICRO = timedelta(microseconds=1)

#: A row with every column set (timestamps with microseconds, some given in another zone), so that every
#: result processor has a value to work on.
FULL_ROW: dict[str, Any] = {
    "account_id": "a1",
    "account_name": "Shop",
    "status": Status.ERROR.value,
    "access_token": "enc-access",
    "refresh_token": "enc-refresh",
    "token_expires_at": datetime(2026, 1, 1, 1, 2, 3, 456789, tzinfo=UTC),
    "last_token_refresh_at": datetime(2026, 1, 1, 2, 0, 0, 1, tzinfo=PLUS_TWO),
    "last_error": "timeout",
    "token_version": 3,
    "consecutive_failures": 2,
    "next_attempt_at": datetime(2026, 1, 1, 0, 10, 0, 999999, tzinfo=UTC),
    "acquired_by": "w1",
    "acquired_until": datetime(2025, 12, 31, 23, 0, 0, 500000, tzinfo=UTC),
    "lease_token": "fence-1",
    "last_run_id": 7,
    "claim_run_id": 7,
    "created_at": NOW,
    "updated_at": NOW,
    "alert": "error",
    "error_since": datetime(2026, 1, 1, 3, 0, 0, 250000, tzinfo=PLUS_TWO),
}

#: Statements run both ways below. Their constants (the status, ``+ 1``) are the statement's own.
RECOVER = (
    update(t)
    .where(t.c.id == bindparam("row_id"))
    .values(status=Status.CONNECTED, last_error=None, updated_at=bindparam("now"))
    .values(consecutive_failures=t.c.consecutive_failures + 1)
    .returning(*t.c)
)
RENAME = update(t).where(t.c.id == bindparam("row_id")).values(account_name=bindparam("name"))
SET_EXPIRY = (
    update(t)
    .where(t.c.id == bindparam("row_id"))
    .values(token_expires_at=bindparam("at"))
    .returning(t.c.token_expires_at)
)
EXPIRING_AT = select(t.c.id).where(t.c.token_expires_at == bindparam("at", type_=t.c.token_expires_at.type))


def insert_row(store: Store, user: str, **values: Any) -> int:
    """A row of ``FULL_ROW`` for ``user``, written through SQLAlchemy."""
    statement = insert(t).values({**FULL_ROW, "user_id": user, **values}).returning(t.c.id)
    with store.engine.begin() as conn:
        return int(conn.execute(statement).scalar_one())


def read(store: Store, row_id: int) -> dict[str, Any]:
    """The row as SQLAlchemy reads it, by column name."""
    with store.engine.connect() as conn:
        return dict(conn.execute(select(t).where(t.c.id == row_id)).one()._mapping)


def counts(store: Store, run_id: int) -> tuple[int, int, int, int, int]:
    """(total, refreshed, expired, errors, skipped) of a run."""
    run = store.runs.get(run_id)
    assert run is not None
    return (run.total, run.refreshed, run.expired, run.errors, run.skipped)


def nothing_checked_out(store: Store) -> bool:
    """Whether every DBAPI connection went back to the engine's pool."""
    pool = store.engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout() == 0


# -- results ---------------------------------------------------------------------------------------------------
def test_returning_gives_what_a_sqlalchemy_connection_gives(store: Store) -> None:
    ours, theirs = insert_row(store, "u-prepared"), insert_row(store, "u-sqlalchemy")
    changed_at = datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=PLUS_TWO)
    with transaction(store.engine) as cursor:
        prepared = Prepared(store.engine, RECOVER, returns=t.c).first(cursor, {"row_id": ours, "now": changed_at})
    with store.engine.begin() as conn:
        row = conn.execute(RECOVER, {"row_id": theirs, "now": changed_at}).first()
    assert prepared is not None and row is not None
    expected = dict(row._mapping)

    assert list(prepared) == [column.name for column in t.c] == list(expected)
    assert (prepared.pop("id"), prepared.pop("user_id")) == (ours, "u-prepared")
    assert (expected.pop("id"), expected.pop("user_id")) == (theirs, "u-sqlalchemy")
    assert prepared == expected
    assert {name: type(value) for name, value in prepared.items()} == {
        name: type(value) for name, value in expected.items()
    }
    assert type(prepared["status"]) is str and prepared["status"] == "connected"
    assert (prepared["consecutive_failures"], prepared["last_error"]) == (3, None)
    assert prepared["updated_at"] == changed_at and prepared["updated_at"].hour == 2  # 04:05 at +02:00
    for name in ("token_expires_at", "last_token_refresh_at", "next_attempt_at", "acquired_until", "error_since"):
        assert prepared[name] == FULL_ROW[name]
        assert prepared[name].tzinfo == UTC, name
    assert read(store, ours) | {"id": theirs, "user_id": "u-sqlalchemy"} == read(store, theirs)


# -- timestamps ------------------------------------------------------------------------------------------------
def test_bound_timestamps_round_trip_to_the_microsecond_in_utc(store: Store) -> None:
    row_id = insert_row(store, "u1")
    set_expiry = Prepared(store.engine, SET_EXPIRY, returns=[t.c.token_expires_at])
    expiring_at = Prepared(store.engine, EXPIRING_AT, returns=[t.c.id])
    instants = [
        datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=8))),
    ]
    for instant in instants:
        with transaction(store.engine) as cursor:
            returned = set_expiry.first(cursor, {"row_id": row_id, "at": instant})
            found = expiring_at.first(cursor, {"at": instant})
            one_later = expiring_at.first(cursor, {"at": instant + MICRO})
        assert returned is not None
        assert returned["token_expires_at"] == instant
        assert returned["token_expires_at"].tzinfo == UTC
        assert returned["token_expires_at"].microsecond == instant.microsecond
        assert found == {"id": row_id} and one_later is None  # bound in a WHERE, matched exactly
        with store.engine.connect() as conn:  # stored as SQLAlchemy stores it: its own bind finds the row
            assert conn.execute(EXPIRING_AT, {"at": instant}).all() == [(row_id,)]
        assert read(store, row_id)["token_expires_at"] == instant


def test_a_claims_due_cutoff_is_bound_to_the_microsecond(store: Store) -> None:
    refreshed = datetime(2026, 1, 1, 2, 3, 4, 567891, tzinfo=PLUS_TWO)
    row_id = insert_row(store, "u1", last_token_refresh_at=refreshed, acquired_until=None, last_run_id=None)
    run_id = store.runs.start(trigger="manual", owner="runner", now=NOW).id

    def claim(due_before: datetime) -> int | None:
        held = store.connections.claim_next(run_id=run_id, owner="w1", lease=LEASE, due_before=due_before)
        return held.record.id if held else None

    assert claim(refreshed) is None  # refreshed at the cutoff: not before it
    assert claim(refreshed + MICRO) == row_id


def test_a_naive_datetime_is_refused_and_nothing_is_written(store: Store) -> None:
    row_id = insert_row(store, "u1")
    before = read(store, row_id)
    rename, set_expiry = Prepared(store.engine, RENAME), Prepared(store.engine, SET_EXPIRY, returns=[t.c.id])
    with pytest.raises(ValueError, match="naive"), transaction(store.engine) as cursor:
        assert rename.run(cursor, {"row_id": row_id, "name": "renamed"}) == 1
        set_expiry.first(cursor, {"row_id": row_id, "at": datetime(2026, 6, 1, 12, 0)})
    assert read(store, row_id) == before
    assert nothing_checked_out(store)


# -- the statement's own constants -----------------------------------------------------------------------------
def test_constants_in_values_and_a_subquerys_limit_are_bound(store: Store) -> None:
    ids = [insert_row(store, f"u{i}") for i in range(3)]
    first_in_error = select(t.c.id).where(t.c.status == Status.ERROR.value).order_by(t.c.id).limit(1)
    recover_one = Prepared(
        store.engine,
        update(t)
        .where(t.c.id == first_in_error.scalar_subquery())
        .values(status=Status.CONNECTED.value, consecutive_failures=0, last_error=None),
    )
    for recovered in (1, 2):
        with transaction(store.engine) as cursor:
            assert recover_one.run(cursor, {}) == 1
        rows = [read(store, row_id) for row_id in ids]
        assert [row["status"] for row in rows] == ["connected"] * recovered + ["error"] * (3 - recovered)
        assert [row["consecutive_failures"] for row in rows] == [0] * recovered + [2] * (3 - recovered)
        assert [row["last_error"] for row in rows] == [None] * recovered + ["timeout"] * (3 - recovered)


def test_limit_and_offset_of_a_select_are_bound(store: Store) -> None:
    ids = [insert_row(store, f"u{i}") for i in range(4)]
    second = Prepared(store.engine, select(t.c.id).order_by(t.c.id).limit(1).offset(1), returns=[t.c.id])
    with transaction(store.engine) as cursor:
        second.run(cursor, {})
        rows = [tuple(row) for row in cursor.fetchall()]
    assert rows == [(ids[1],)]


# -- transaction -----------------------------------------------------------------------------------------------
def test_a_transaction_commits_its_statements_together_at_the_end(store: Store) -> None:
    first, second = insert_row(store, "u1"), insert_row(store, "u2")
    rename = Prepared(store.engine, RENAME)
    with transaction(store.engine) as cursor:
        assert rename.run(cursor, {"row_id": first, "name": "first"}) == 1
        assert read(store, first)["account_name"] == "Shop"  # not visible to others before the commit
        assert rename.run(cursor, {"row_id": second, "name": "second"}) == 1
    assert (read(store, first)["account_name"], read(store, second)["account_name"]) == ("first", "second")
    assert nothing_checked_out(store)


def test_an_exception_in_the_block_rolls_back_every_statement(store: Store) -> None:
    first, second = insert_row(store, "u1"), insert_row(store, "u2")
    before = [read(store, first), read(store, second)]
    rename = Prepared(store.engine, RENAME)
    with pytest.raises(RuntimeError, match="worker stopped"), transaction(store.engine) as cursor:
        assert rename.run(cursor, {"row_id": first, "name": "first"}) == 1
        assert rename.run(cursor, {"row_id": second, "name": "second"}) == 1
        raise RuntimeError("worker stopped")  # not a driver error: it passes through as it is
    assert [read(store, first), read(store, second)] == before
    assert nothing_checked_out(store)


def test_a_failing_second_statement_rolls_back_the_first_and_its_error_shows_no_parameter(store: Store) -> None:
    first, second = insert_row(store, "u1"), insert_row(store, "u2")
    before = [read(store, first), read(store, second)]
    secret = secrets.token_urlsafe(48)  # a refresh token's stand-in
    rename = Prepared(store.engine, RENAME)
    steal = Prepared(  # (u1, a1) is taken by ``first``: a unique violation, raised by the driver
        store.engine,
        update(t).where(t.c.id == bindparam("row_id")).values(user_id=bindparam("user"), refresh_token=bindparam("r")),
    )
    with pytest.raises(DBAPIError) as caught, transaction(store.engine) as cursor:
        assert rename.run(cursor, {"row_id": first, "name": "renamed"}) == 1
        steal.run(cursor, {"row_id": second, "user": "u1", "r": secret})

    assert isinstance(caught.value, IntegrityError)
    assert isinstance(caught.value.orig, store.engine.dialect.loaded_dbapi.Error)
    text = "".join(traceback.format_exception(caught.value))  # with the driver's own error, chained
    leaked = secret in text
    assert not leaked, "a parameter value shows in the error"
    assert [read(store, first), read(store, second)] == before
    assert nothing_checked_out(store)
    with transaction(store.engine) as cursor:  # the pooled connection is usable again
        assert rename.run(cursor, {"row_id": first, "name": "renamed"}) == 1
    assert read(store, first)["account_name"] == "renamed"


def test_a_statement_run_through_sqlalchemy_shows_no_parameter_in_its_error(store: Store) -> None:
    """The engine hides parameters too (``hide_parameters``): the statements not run as ``Prepared``."""
    first, second = insert_row(store, "u1"), insert_row(store, "u2")
    secret = secrets.token_urlsafe(48)
    steal = update(t).where(t.c.id == second).values(user_id="u1", refresh_token=secret)
    with pytest.raises(IntegrityError) as caught, store.engine.begin() as conn:
        conn.execute(steal)

    text = "".join(traceback.format_exception(caught.value))
    assert secret not in text
    assert read(store, first)["user_id"] == "u1" and read(store, second)["user_id"] == "u2"


def test_a_statement_that_would_expand_an_in_list_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="IN lists"):
        Prepared(store.engine, select(t.c.id).where(t.c.status.in_(["connected", "error"])))


# -- the refresh path: claim_next, save_tokens and the run tally -------------------------------------------------
def connect_and_claim(store: Store) -> tuple[int, int, Lease]:
    """A connected row claimed by a new run: (row id, run id, lease)."""
    row_id = store.connections.upsert_connected(
        user_id="u1",
        account_id="a1",
        account_name="Shop",
        encrypt=lambda cid: (f"enc-access-{cid}", f"enc-refresh-{cid}"),
        expires_at=NOW + timedelta(hours=1),
        now=NOW,
    )
    run_id = store.runs.start(trigger="manual", owner="runner", now=NOW).id
    held = store.connections.claim_next(run_id=run_id, owner="w1", lease=LEASE)
    assert held is not None and held.record.id == row_id
    return row_id, run_id, held


def test_a_claim_returns_the_row_as_sqlalchemy_reads_it(store: Store) -> None:
    row_id, run_id, held = connect_and_claim(store)
    found = store.connections.get(row_id)
    assert held.record == found
    assert (held.record.status, held.record.lease_token) == (Status.CONNECTED, held.token)
    assert (held.record.last_run_id, held.record.claim_run_id, held.record.acquired_by) == (run_id, run_id, "w1")
    assert held.record.acquired_until is not None and held.record.acquired_until.tzinfo == UTC


@pytest.mark.parametrize("fault", ["wrong lease token", "stale version"])
def test_a_save_outside_the_fence_changes_nothing_and_is_not_counted(store: Store, fault: str) -> None:
    row_id, run_id, held = connect_and_claim(store)
    before = read(store, row_id)
    new = NewTokens(access_token="enc-access-new", refresh_token="enc-refresh-new", expires_at=NOW + LEASE)
    token, version = held.token, held.record.token_version

    def save(lease_token: str, read_version: int) -> bool:
        return store.connections.save_tokens(
            row_id,
            lease_token=lease_token,
            version=read_version,
            tokens=new,
            now=NOW + MICRO,
            tally=Tally(run_id, "refreshed"),
        )

    bad = (new_lease_token(), version) if fault == "wrong lease token" else (token, version - 1)
    assert save(*bad) is False
    assert read(store, row_id) == before
    assert counts(store, run_id) == (0, 0, 0, 0, 0)

    assert save(token, version) is True  # the holder's own save lands, counted once
    saved = read(store, row_id)
    assert (saved["refresh_token"], saved["token_version"], saved["lease_token"]) == ("enc-refresh-new", 2, None)
    assert saved["updated_at"] == NOW + MICRO
    assert counts(store, run_id) == (1, 1, 0, 0, 0)
    assert save(token, version) is False  # once saved, the same lease and version are stale
    assert counts(store, run_id) == (1, 1, 0, 0, 0)


@pytest.mark.parametrize(("one", "due"), [(False, False), (False, True), (True, False), (True, True)])
def test_a_claim_walks_the_primary_key_on_sqlite(sqlite_url: str, one: bool, due: bool) -> None:
    """No claim gathers and sorts rows (SQLite's status index did that, per claim, for every row above the last
    id): the next connection is found by walking the primary key from the last id claimed."""
    store = Store.from_url(sqlite_url)
    try:
        claim = Prepared(store.engine, claim_statement(store.engine, one=one, due=due), returns=t.c)
        with transaction(store.engine) as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {claim.sql}", [None] * claim.sql.count("?"))
            plan = [str(row[3]) for row in cursor.fetchall()]
    finally:
        store.close()
    assert not any("TEMP B-TREE" in step or "USING INDEX" in step for step in plan), plan
    assert any("PRIMARY KEY" in step and "lightspeed_connections" in step for step in plan), plan

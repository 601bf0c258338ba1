"""Key rotation in-process, on SQLite and PostgreSQL: every secret moves to the primary key and still works."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from lightkeeper.errors import ConfigError
from lightkeeper.rotation import KeyRotation
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import Status
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.store.schema import oauth_states
from tests.helpers import authorize, query
from tests.seeding import seed_connections

from .conftest import KeeperFactory
from .helpers import NEW_KEY, NEW_KID, OLD_KID, ROTATING, STRAY_KEY, kids, plaintexts, set_status

NOW = timedelta(0)


def test_rows_of_every_status_move_to_the_primary_key_and_still_refresh(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    old = make_keeper()
    ids = seed_connections(old, sim, 5, user_prefix="every")
    set_status(old.store, ids[1], Status.EXPIRED.value)
    set_status(old.store, ids[2], Status.ERROR.value, consecutive_failures=1)
    set_status(old.store, ids[3], Status.DISCONNECTED.value, access_token=None, refresh_token=None)
    with_tokens = [r for r in old.connections() if r.refresh_token is not None]
    before = plaintexts(old, with_tokens)
    versions = {r.id: r.token_version for r in with_tokens}

    rotator = make_keeper(**ROTATING)
    seen: list[tuple[int, int]] = []
    summary = rotator.rotate_keys(batch_size=2, progress=lambda done, total: seen.append((done, total)))

    assert summary.complete and summary.problems == []
    assert (summary.reencrypted, summary.verifiers, summary.already_current, summary.total) == (4, 0, 0, 4)
    assert seen[-1] == (4, 4) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    only_new = make_keeper(TOKEN_ENCRYPTION_KEY=NEW_KEY)  # the old key is no longer needed
    after = only_new.connections()
    assert kids(only_new.store) == {NEW_KID: 4}
    for record in after:
        for token in (record.access_token, record.refresh_token):
            assert token is None or token.startswith(f"lk1:{NEW_KID}:")
    assert plaintexts(only_new, [r for r in after if r.refresh_token is not None]) == before
    # Same pairs, so the same versions; statuses untouched, leases released.
    assert {r.id: r.token_version for r in after if r.refresh_token is not None} == versions
    assert {r.id: r.status for r in after} == {
        ids[0]: Status.CONNECTED,
        ids[1]: Status.EXPIRED,
        ids[2]: Status.ERROR,
        ids[3]: Status.DISCONNECTED,
        ids[4]: Status.CONNECTED,
    }
    assert not any(only_new.store.connections.lease_live(i) for i in ids)

    run = only_new.refresh(trigger="manual")  # connected and error rows: Lightspeed takes the same tokens
    assert (run.refreshed, run.errors, run.expired) == (3, 0, 0)
    assert sim.reuse() == 0 and sim.stats()["invalid_grant"] == 0


def test_a_second_rotation_finds_nothing_to_do(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    seed_connections(make_keeper(), sim, 3, user_prefix="again")
    rotator = make_keeper(**ROTATING)
    assert rotator.rotate_keys().reencrypted == 3
    again = rotator.rotate_keys()
    assert again.complete and (again.reencrypted, again.already_current, again.total) == (0, 3, 0)


def test_a_key_that_is_not_configured_is_a_key_problem_and_changes_nothing(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    old = make_keeper()
    seed_connections(old, sim, 2, user_prefix="lost")
    before = {r.id: r.refresh_token for r in old.connections()}
    wrong = make_keeper(TOKEN_ENCRYPTION_KEY=NEW_KEY, TOKEN_ENCRYPTION_OLD_KEYS=STRAY_KEY)  # the wrong old key

    summary = wrong.rotate_keys(wait=NOW)

    assert not summary.complete
    assert summary.unknown_keys == {OLD_KID: 2} and summary.tampered == 0 and summary.reencrypted == 0
    (problem,) = summary.problems
    assert f"2 row(s) are under key id {OLD_KID}, which is not configured" in problem
    assert "add that key to TOKEN_ENCRYPTION_OLD_KEYS" in problem
    assert "authenticate" not in problem and "altered" not in problem
    assert {r.id: r.refresh_token for r in wrong.connections()} == before


def test_a_tampered_row_is_reported_and_left_untouched(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    old = make_keeper()
    first, second, third = seed_connections(old, sim, 3, user_prefix="tamper")
    moved = old.connection(second).refresh_token
    with old.store.engine.begin() as conn:  # another row's ciphertext: it authenticates only for that row
        conn.execute(update(connections_table).where(connections_table.c.id == first).values(refresh_token=moved))
    rotator = make_keeper(**ROTATING)

    summary = rotator.rotate_keys(wait=NOW)

    assert (summary.tampered, summary.tampered_connections, summary.reencrypted) == (1, [first], 2)
    assert summary.unknown_keys == {} and not summary.complete
    (problem,) = summary.problems
    assert f"1 stored secret(s) do not authenticate with their key (connection(s) {first})" in problem
    assert rotator.connection(first).refresh_token == moved
    assert not rotator.store.connections.lease_live(first)
    assert {str(rotator.connection(i).refresh_token)[:13] for i in (second, third)} == {f"lk1:{NEW_KID}:"}


def test_a_row_a_refresh_holds_is_left_then_finished_by_the_next_rotation(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    old = make_keeper()
    ids = seed_connections(old, sim, 3, user_prefix="held")
    held = old.store.connections.acquire(ids[1], owner="a-worker", lease=timedelta(seconds=60))
    assert held is not None
    rotator = make_keeper(**ROTATING)

    summary = rotator.rotate_keys(batch_size=1, wait=NOW)
    assert (summary.reencrypted, summary.left_leased, summary.complete) == (2, 1, False)
    assert "1 connection(s) were held by a refresh" in summary.problems[0]
    assert rotator.connection(ids[1]).refresh_token == held.record.refresh_token  # the holder's row as it was
    assert rotator.store.connections.lease_live(ids[1])

    assert old.store.connections.release(ids[1], held.token)
    resumed = rotator.rotate_keys(wait=NOW)
    assert resumed.complete and (resumed.reencrypted, resumed.already_current) == (1, 2)
    assert kids(rotator.store) == {NEW_KID: 3}


def test_a_row_released_during_the_wait_is_finished_in_the_same_rotation(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    old = make_keeper()
    ids = seed_connections(old, sim, 2, user_prefix="wait")
    held = old.store.connections.acquire(ids[0], owner="a-worker", lease=timedelta(seconds=60))
    assert held is not None
    rotator = make_keeper(**ROTATING)
    naps: list[float] = []

    def sleep(seconds: float) -> None:  # the worker finishes while the rotation waits
        naps.append(seconds)
        old.store.connections.release(ids[0], held.token)

    rotation = KeyRotation(rotator.store, rotator.cipher, owner="rotator", wait=timedelta(seconds=60), sleep=sleep)
    summary = rotation.run(batch_size=10)
    assert summary.complete and summary.reencrypted == 2 and len(naps) == 1
    assert kids(rotator.store) == {NEW_KID: 2}


def test_rotation_alongside_a_refresh_run_loses_no_token(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    ids = seed_connections(make_keeper(), sim, 12, user_prefix="busy")
    sim.configure(token_latency_ms=40)  # refreshes hold their leases while the rotation passes by
    worker, rotator = make_keeper(**ROTATING), make_keeper(**ROTATING)
    runs = []
    refreshing = threading.Thread(target=lambda: runs.append(worker.refresh(trigger="manual")))

    refreshing.start()
    summary = rotator.rotate_keys(batch_size=2, wait=timedelta(seconds=60))
    refreshing.join(timeout=120)

    assert not refreshing.is_alive() and runs[0].refreshed == 12 and runs[0].errors == 0
    assert summary.complete
    # Each row was either re-encrypted here, or re-sealed by its refresh before the rotation reached it.
    assert summary.reencrypted + summary.already_current == 12
    only_new = make_keeper(TOKEN_ENCRYPTION_KEY=NEW_KEY)
    assert kids(only_new.store) == {NEW_KID: 12}
    sim.configure(token_latency_ms=0)
    again = only_new.refresh(trigger="manual")  # every stored refresh token is the live one
    assert (again.refreshed, again.errors, again.expired) == (12, 0, 0)
    assert sim.reuse() == 0 and sim.stats()["invalid_grant"] == 0
    assert sorted(r.id for r in only_new.connections()) == sorted(ids)


def test_the_verifier_of_a_sign_in_in_flight_is_rotated_and_the_sign_in_completes(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    old = make_keeper()
    finished = old.start_connect(query(old.create_link("user-done").url)["session"])
    old.complete_connect(authorize(finished.authorize_url), browser_token=finished.browser_token)  # a used state
    started = old.start_connect(query(old.create_link("user-live").url)["session"])  # consent page open

    summary = make_keeper(**ROTATING).rotate_keys()

    assert summary.complete and (summary.reencrypted, summary.verifiers) == (1, 2)
    only_new = make_keeper(TOKEN_ENCRYPTION_KEY=NEW_KEY)
    with only_new.store.engine.connect() as conn:
        verifiers = conn.execute(select(oauth_states.c.code_verifier)).scalars().all()
    assert len(verifiers) == 2 and all(v.startswith(f"lk1:{NEW_KID}:") for v in verifiers)
    record = only_new.complete_connect(authorize(started.authorize_url), browser_token=started.browser_token)
    assert record.status is Status.CONNECTED and record.user_id == "user-live"
    assert only_new.store.keys.verifier_key_ids() == {NEW_KID: 2}


def test_a_batch_size_below_one_is_refused(make_keeper: KeeperFactory) -> None:
    with pytest.raises(ConfigError, match="batch size"):
        make_keeper(**ROTATING).rotate_keys(batch_size=0)

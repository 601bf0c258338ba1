"""The store's part of a key rotation, on SQLite and PostgreSQL: finding rows by key, fenced rewrites."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import dialect
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.store.schema import oauth_states
from tests.helpers import query
from tests.seeding import seed_connections

from .conftest import KeeperFactory
from .helpers import NEW_KID, OLD_KID, ROTATING, set_status

LEASE = timedelta(seconds=60)


def test_rows_under_another_key_come_in_batches_by_id(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    a, b, c, d = seed_connections(make_keeper(), sim, 4, user_prefix="old")
    new = make_keeper(**ROTATING)
    current = seed_connections(new, sim, 2, user_prefix="new")  # sealed with the new key already
    set_status(new.store, a, "expired", refresh_token="junk")  # no ciphertext at all: under no key
    set_status(new.store, c, "disconnected", access_token=None, refresh_token=None)  # nothing to rotate

    scan = new.store.keys.connections_under_other_key
    assert [r.id for r in scan(NEW_KID, after_id=0, limit=2)] == [a, b]
    assert [r.id for r in scan(NEW_KID, after_id=b, limit=2)] == [d]
    assert scan(NEW_KID, after_id=d, limit=2) == []
    assert new.store.keys.count_connections_under_other_key(NEW_KID) == 3
    assert [r.id for r in scan(OLD_KID, after_id=0, limit=10)] == [a, *current]


def test_reencrypt_is_fenced_on_the_lease_and_the_version(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    (cid,) = seed_connections(keeper, sim, 1, user_prefix="fence")
    repo = keeper.store.connections
    first = repo.acquire(cid, owner="rotation", lease=LEASE)
    assert first is not None
    with keeper.store.engine.begin() as conn:  # the rotation stalled past its lease; a refresh took the row over
        stale = dialect.now_plus(conn, -1)
        conn.execute(update(connections_table).where(connections_table.c.id == cid).values(acquired_until=stale))
    second = repo.acquire(cid, owner="refresh", lease=LEASE)
    assert second is not None
    args = {"version": first.record.token_version, "access_token": "lk1:x", "refresh_token": "lk1:y"}

    assert not repo.reencrypt(cid, lease_token=first.token, **args)  # not ours any more
    assert not repo.reencrypt(cid, lease_token=second.token, **(args | {"version": args["version"] + 1}))
    assert repo.get(cid) == second.record  # nothing written, the holder's lease stands

    assert repo.reencrypt(cid, lease_token=second.token, **args)
    row = repo.get(cid)
    assert row is not None and (row.access_token, row.refresh_token) == ("lk1:x", "lk1:y")
    assert row.token_version == first.record.token_version and not repo.lease_live(cid)


def test_a_verifier_is_swapped_only_while_it_is_the_one_read(make_keeper: KeeperFactory) -> None:
    keeper = make_keeper()
    keeper.start_connect(query(keeper.create_link("user-v").url)["session"])
    ((state_hash, verifier),) = keeper.store.keys.verifiers_under_other_key(NEW_KID, after="", limit=10)
    assert keeper.store.keys.verifiers_under_other_key(NEW_KID, after=state_hash, limit=10) == []
    assert keeper.store.keys.verifier_key_ids() == {OLD_KID: 1}
    sessions = keeper.store.sessions

    assert not sessions.rewrap_verifier(state_hash, old="lk1:something-else", new="lk1:new")
    assert sessions.rewrap_verifier(state_hash, old=verifier, new="lk1:new")
    assert not sessions.rewrap_verifier(state_hash, old=verifier, new="lk1:newer")  # another rotation was first
    with keeper.store.engine.connect() as conn:
        assert conn.execute(select(oauth_states.c.code_verifier)).scalar_one() == "lk1:new"

"""Issue 8 against the strict simulator, on SQLite and PostgreSQL: one refresh per refresh token, failures local.

The simulator counts every refresh token presented after it was already exchanged (``reuse``): each race test
here, having no kills, asserts it stays 0.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from sqlalchemy import update

from lightkeeper import ConfigError, Keeper, RunStatus, Status
from lightkeeper.crypto import key_id, parse_key
from lightkeeper.lightspeed.tokens import jwt_expiry
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import ConnectionRecord
from lightkeeper.store.schema import connections as connections_table
from tests.helpers import TEST_KEY, connect
from tests.integration.conftest import KeeperFactory

OTHER_KEY = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="  # 32 bytes, base64; not TEST_KEY
THIRD_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def connect_many(keeper: Keeper, count: int) -> list[ConnectionRecord]:
    return [connect(keeper, f"user-{n}") for n in range(count)]


def statuses(keeper: Keeper) -> dict[int, Status]:
    return {record.id: record.status for record in keeper.connections()}


# -- races: reuse stays 0 --------------------------------------------------------------------------------


def test_a_run_and_token_calls_on_one_keeper_never_spend_a_token_twice(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    """The `serve` case: the scheduler's run and the token route share one Keeper (one lease owner)."""
    keeper = make_keeper(REFRESH_CONCURRENCY="3")
    records = connect_many(keeper, 6)
    rejected = {r.id: keeper.vault.access_token(r) for r in records}  # force refreshes on demand
    sim.configure(token_latency_ms=400)
    with ThreadPoolExecutor(8) as pool:
        run = pool.submit(keeper.refresh, trigger="api")
        calls = [pool.submit(keeper.tokens.fresh_token, r.id, rejected=rejected[r.id]) for r in records * 2]
        grants = [call.result() for call in calls]
        assert run.result().status is RunStatus.COMPLETED
    assert sim.reuse() == 0
    assert set(statuses(keeper).values()) == {Status.CONNECTED}
    current = {r.id: keeper.vault.access_token(r) for r in keeper.connections()}
    assert all(grant.access_token != rejected[grant.connection_id] for grant in grants)
    assert sim.stats()["invalid_grant"] == 0 and set(current) == set(rejected)


def test_leases_shorter_than_a_queue_of_slow_refreshes_never_spend_a_token_twice(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    """Two participants, 1.5 s refreshes, a 10 s lease, 12 connections: a batch leased at once would run out."""
    env = {"REFRESH_LEASE_S": "10", "HTTP_TIMEOUT_S": "3", "REFRESH_MAX_RETRY_AFTER_S": "2", "REFRESH_CONCURRENCY": "2"}
    first, second = make_keeper(**env), make_keeper(**env)
    connect_many(first, 12)
    sim.configure(token_latency_ms=1500)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(k.refresh, trigger="manual") for k in (first, second)]
        results = [run.result() for run in runs]
    assert len({r.id for r in results}) == 1  # one run, shared
    final = first.store.runs.get(results[0].id)
    assert final is not None and final.status is RunStatus.COMPLETED
    assert (final.total, final.refreshed) == (12, 12)  # every outcome counted exactly once
    assert sim.reuse() == 0 and sim.stats()["refreshes"] == 12


def test_a_token_request_has_one_total_deadline(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(HTTP_TIMEOUT_S="1")
    (record,) = connect_many(keeper, 1)
    sim.configure(token_latency_ms=4000)
    started = time.monotonic()
    run = keeper.refresh(trigger="manual", connection_id=record.id)
    elapsed = time.monotonic() - started
    assert run.errors == 1 and elapsed < 2.5  # the slow answer was abandoned at the deadline
    after = keeper.store.connections.get(record.id)
    assert after is not None and after.status is Status.ERROR and "in time" in (after.last_error or "")


# -- errors stay local -------------------------------------------------------------------------------------


def test_an_html_401_is_one_connections_transient_error(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="1")
    first, second = connect_many(keeper, 2)
    sim.inject_fault("token", "html_401")
    run = keeper.refresh(trigger="manual")
    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 1, 1)
    assert statuses(keeper) == {first.id: Status.ERROR, second.id: Status.CONNECTED}
    failed = keeper.store.connections.get(first.id)
    assert failed is not None and "HTTP 401" in (failed.last_error or "")
    assert failed.token_version == first.token_version  # tokens kept


def test_a_401_carrying_invalid_grant_expires_that_connection(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="1")
    first, second = connect_many(keeper, 2)
    sim.inject_fault("token", "invalid_grant_401")
    run = keeper.refresh(trigger="manual")
    assert (run.status, run.refreshed, run.expired) == (RunStatus.COMPLETED, 1, 1)
    assert statuses(keeper) == {first.id: Status.EXPIRED, second.id: Status.CONNECTED}


def test_only_an_oauth_invalid_client_stops_the_run(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_CONCURRENCY="1")
    records = connect_many(keeper, 4)
    versions = {r.id: r.token_version for r in records}
    sim.inject_fault("token", "invalid_client_json")
    before = sim.stats()["token_requests"]
    with pytest.raises(ConfigError, match="invalid_client"):
        keeper.refresh(trigger="manual")
    assert sim.stats()["token_requests"] == before + 1  # no new request after the answer
    assert set(statuses(keeper).values()) == {Status.CONNECTED}
    assert {r.id: r.token_version for r in keeper.connections()} == versions
    (failed,) = keeper.run_history(limit=1)
    assert failed.status is RunStatus.FAILED


def test_an_answer_without_expires_in_is_saved(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    (record,) = connect_many(keeper, 1)
    sim.inject_fault("token", "no_expires_in")
    assert keeper.refresh(trigger="manual").refreshed == 1
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and saved.token_version == record.token_version + 1
    assert saved.token_expires_at == jwt_expiry(keeper.vault.access_token(saved))  # the new JWT's exp
    assert keeper.refresh(trigger="manual").refreshed == 1  # the saved refresh token is the live one
    assert sim.reuse() == 0 and sim.stats()["invalid_grant"] == 0


# -- keys: a wrong key stops, a missing old key is local -----------------------------------------------------


def test_rows_under_an_unconfigured_key_are_their_own_error(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    old = make_keeper()
    (orphan,) = connect_many(old, 1)
    rotated = make_keeper(TOKEN_ENCRYPTION_KEY=OTHER_KEY, TOKEN_ENCRYPTION_OLD_KEYS=TEST_KEY)
    fresh = connect(rotated, "user-new")
    keeper = make_keeper(TOKEN_ENCRYPTION_KEY=OTHER_KEY)  # the old key was dropped too early
    run = keeper.refresh(trigger="manual")
    old_kid = key_id(parse_key(TEST_KEY))
    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 1, 1)
    assert run.message is not None and f"1 under key {old_kid}" in run.message
    row = keeper.store.connections.get(orphan.id)
    assert row is not None and row.status is Status.ERROR and old_kid in (row.last_error or "")
    assert statuses(keeper)[fresh.id] is Status.CONNECTED


def test_a_mistyped_key_stops_before_anything_changes(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    records = connect_many(keeper, 2)
    wrong = make_keeper(TOKEN_ENCRYPTION_KEY=THIRD_KEY)
    with pytest.raises(ConfigError) as caught:
        wrong.refresh(trigger="manual")
    assert key_id(parse_key(TEST_KEY)) in str(caught.value) and key_id(parse_key(THIRD_KEY)) in str(caught.value)
    assert wrong.store.runs.list() == [] and sim.stats()["refreshes"] == 0
    assert {r.id: r.status for r in records} == statuses(keeper)


def test_a_tampered_row_is_marked_error_and_the_run_goes_on(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    first, second = connect_many(keeper, 2)
    assert second.refresh_token is not None
    with keeper.store.engine.begin() as conn:  # another row's ciphertext: authenticates only for that row
        conn.execute(
            update(connections_table)
            .where(connections_table.c.id == first.id)
            .values(refresh_token=second.refresh_token)
        )
    run = keeper.refresh(trigger="manual")
    assert (run.status, run.refreshed, run.errors) == (RunStatus.COMPLETED, 1, 1)
    row = keeper.store.connections.get(first.id)
    assert row is not None and row.status is Status.ERROR and "tampered" in (row.last_error or "")


# -- a shared run survives its participants -----------------------------------------------------------------


class _DiesOnFirstRefresh(httpx2.BaseTransport):
    """A participant that hits an unexpected, non-Exception failure (think: a signal) mid-run."""

    def __init__(self) -> None:
        self.inner, self.died = httpx2.HTTPTransport(), threading.Event()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/oauth/token") and not self.died.is_set():
            self.died.set()
            raise SystemExit("participant dies")
        return self.inner.handle_request(request)


def test_a_participant_that_fails_leaves_the_run_to_the_others(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    steady = make_keeper(REFRESH_CONCURRENCY="1")
    connect_many(steady, 6)
    sim.configure(token_latency_ms=200)
    run = steady.runs.begin(trigger="manual")
    dying = make_keeper(transport=_DiesOnFirstRefresh(), REFRESH_CONCURRENCY="1")
    with ThreadPoolExecutor(2) as pool:
        survivor = pool.submit(steady.runs.execute, run)
        time.sleep(0.1)
        with pytest.raises(SystemExit):
            dying.runs.execute(run)
        still = steady.store.runs.get(run.id)
        assert still is not None and still.status is RunStatus.RUNNING  # left open for the survivor
        final = survivor.result()
    assert final.status is RunStatus.COMPLETED
    assert (final.total, final.refreshed) == (6, 6)  # the dying one's claim was handed back and counted once
    assert sim.reuse() == 0


def test_a_run_waits_for_a_connection_leased_on_demand_and_handles_it(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper, other = make_keeper(REFRESH_CONCURRENCY="1"), make_keeper()
    records = connect_many(keeper, 3)
    last = records[-1]
    rejected = other.vault.access_token(last)
    sim.configure(token_latency_ms=300)
    timer = threading.Timer(0.45, lambda: other.tokens.fresh_token(last.id, rejected=rejected))
    timer.start()
    run = keeper.refresh(trigger="manual")
    timer.join()
    assert (run.status, run.total) == (RunStatus.COMPLETED, 3)  # none left out while someone else held it
    assert sim.reuse() == 0


def test_joining_a_run_another_participant_closed_returns_at_once(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    one, two = make_keeper(), make_keeper()
    connect_many(one, 2)
    first = one.refresh(trigger="manual")
    two.refresh(trigger="manual")  # a newer run marks every row
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(one.runs.execute, first)
        assert late.result(timeout=10).status is RunStatus.COMPLETED  # no endless loop over a closed run

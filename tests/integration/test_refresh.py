"""The refresh engine against the simulator over real HTTP, on SQLite and PostgreSQL (invariants 1-5)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select

from lightkeeper import ConfigError, Keeper, RunStatus, Status
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import ConnectionRecord, Store
from lightkeeper.store.schema import connections as connections_table
from lightkeeper.views import ConnectionView, RunView
from tests.conftest import FakeClock
from tests.helpers import age_heartbeat, connect
from tests.integration.conftest import KeeperFactory


@pytest.fixture
def keeper(make_keeper: KeeperFactory, sim: SimulatorControl) -> Keeper:
    return make_keeper()


def token_columns(store: Store) -> dict[int, tuple[object, ...]]:
    """What a failure must never touch: the stored ciphertexts, expiry and version of every row."""
    columns = connections_table.c
    query = select(
        columns.id, columns.access_token, columns.refresh_token, columns.token_expires_at, columns.token_version
    )
    with store.engine.connect() as conn:
        return {row.id: tuple(row[1:]) for row in conn.execute(query)}


def account_of(keeper: Keeper, record: ConnectionRecord) -> str:
    return record.account_id


# -- the happy path -----------------------------------------------------------------------------------


def test_run_refreshes_every_connection_and_records_it(keeper: Keeper, sim: SimulatorControl) -> None:
    records = [connect(keeper, f"user-{n}") for n in range(3)]
    before = {r.id: keeper.vault.refresh_token(r) for r in records}

    run = keeper.refresh(trigger="manual")

    assert (run.status, run.total, run.refreshed, run.expired, run.errors) == (RunStatus.COMPLETED, 3, 3, 0, 0)
    assert sim.stats()["refreshes"] == 3
    for record in keeper.connections():
        assert record.status is Status.CONNECTED
        assert record.last_error is None
        assert record.last_token_refresh_at is not None and record.last_token_refresh_at >= run.started_at
        assert keeper.vault.refresh_token(record) != before[record.id]  # the rotated token was stored
    assert keeper.run_history()[0].id == run.id


def test_new_tokens_work_after_the_run(keeper: Keeper, sim: SimulatorControl) -> None:
    record = connect(keeper, "user-1")
    keeper.refresh(trigger="manual")
    fresh = keeper.store.connections.get(record.id)
    assert fresh is not None
    assert keeper.api.account(keeper.vault.access_token(fresh)).account_id == record.account_id
    # The rotated pair is the live one: refreshing again with it works, and nobody used a stale token.
    assert keeper.refresh(trigger="manual").refreshed == 1
    assert sim.stats()["invalid_grant"] == 0


def test_run_streams_in_batches(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper(REFRESH_BATCH_SIZE="2", REFRESH_CONCURRENCY="2")
    for n in range(5):
        connect(keeper, f"user-{n}")
    run = keeper.refresh(trigger="manual")
    assert (run.total, run.refreshed) == (5, 5)
    assert sim.stats()["refreshes"] == 5


def test_single_connection_run(keeper: Keeper, sim: SimulatorControl) -> None:
    first, _second = connect(keeper, "a"), connect(keeper, "b")
    run = keeper.refresh(trigger="manual", connection_id=first.id)
    assert (run.total, run.refreshed, run.connection_id) == (1, 1, first.id)
    assert sim.stats()["refreshes"] == 1


# -- failures (invariant 3) ---------------------------------------------------------------------------


def test_invalid_grant_marks_only_that_connection_expired(keeper: Keeper, sim: SimulatorControl) -> None:
    dead, alive = connect(keeper, "a"), connect(keeper, "b")
    sim.revoke_account(dead.account_id)

    run = keeper.refresh(trigger="manual")

    assert (run.refreshed, run.expired, run.errors) == (1, 1, 0)
    expired = keeper.store.connections.get(dead.id)
    assert expired is not None and expired.status is Status.EXPIRED
    assert expired.last_error and "invalid_grant" in expired.last_error
    assert keeper.store.connections.get(alive.id).status is Status.CONNECTED  # type: ignore[union-attr]
    # Expired connections are left alone by later runs: the merchant must reconnect.
    assert keeper.refresh(trigger="manual").total == 1


def test_refresh_token_idle_for_30_days_expires(keeper: Keeper, sim: SimulatorControl) -> None:
    record = connect(keeper, "a")
    sim.advance(record.account_id, 31 * 24 * 3600)
    assert keeper.refresh(trigger="manual").expired == 1


def test_transient_failure_marks_error_and_keeps_tokens(keeper: Keeper, sim: SimulatorControl) -> None:
    records = [connect(keeper, "a"), connect(keeper, "b")]
    before = token_columns(keeper.store)
    sim.inject_fault("token", "status", status=503, count=2)

    run = keeper.refresh(trigger="manual")

    assert (run.status, run.errors, run.refreshed) == (RunStatus.COMPLETED, 2, 0)
    assert token_columns(keeper.store) == before
    for record in records:
        failed = keeper.store.connections.get(record.id)
        assert failed is not None and failed.status is Status.ERROR
        assert failed.last_error and "503" in failed.last_error
        assert failed.consecutive_failures == 1 and failed.next_attempt_at is not None
    # The tokens still work: the next run recovers every connection.
    assert keeper.refresh(trigger="manual").refreshed == 2
    assert {r.status for r in keeper.connections()} == {Status.CONNECTED}


@pytest.mark.parametrize("kind", ["timeout", "reset", "garbage", "rate_limit"])
def test_every_transient_kind_keeps_tokens(make_keeper: KeeperFactory, sim: SimulatorControl, kind: str) -> None:
    keeper = make_keeper(HTTP_TIMEOUT_S="1")
    record = connect(keeper, "a")
    before = token_columns(keeper.store)
    sim.inject_fault("token", kind, count=5, retry_after=120)
    run = keeper.refresh(trigger="manual")
    assert run.errors == 1, kind
    assert token_columns(keeper.store) == before
    assert keeper.store.connections.get(record.id).status is Status.ERROR  # type: ignore[union-attr]


def test_scheduled_runs_respect_backoff_but_manual_runs_retry(
    make_keeper: KeeperFactory, sim: SimulatorControl, clock: FakeClock
) -> None:
    keeper = make_keeper(clock=clock)
    connect(keeper, "a")
    sim.inject_fault("token", "status", status=502, count=1)
    assert keeper.refresh(trigger="schedule").errors == 1

    clock.advance(seconds=30)  # inside the first backoff step (1 minute)
    assert keeper.refresh(trigger="schedule").skipped == 1
    assert sim.stats()["refreshes"] == 0

    clock.advance(minutes=2)
    assert keeper.refresh(trigger="schedule").refreshed == 1


def test_invalid_client_stops_the_run_and_changes_no_connection(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    good = make_keeper()
    for n in range(3):
        connect(good, f"user-{n}")
    before = {r.id: (r.status, r.last_error, r.consecutive_failures) for r in good.connections()}
    tokens_before = token_columns(good.store)
    wrong = make_keeper(LIGHTSPEED_CLIENT_SECRET="wrong-secret")

    with pytest.raises(ConfigError, match="LIGHTSPEED_CLIENT_SECRET"):
        wrong.refresh(trigger="manual")

    after = {r.id: (r.status, r.last_error, r.consecutive_failures) for r in good.connections()}
    assert after == before
    assert token_columns(good.store) == tokens_before
    run = good.run_history()[0]
    assert run.status is RunStatus.FAILED and run.message and "invalid_client" in run.message
    assert all(r.acquired_by is None for r in good.connections())  # leases released


def test_missing_refresh_token_in_response_keeps_the_old_one(
    make_keeper: KeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    keeper = make_keeper()
    record = connect(keeper, "a")
    old_refresh = keeper.vault.refresh_token(record)
    strip = _StripRefreshToken(httpx2.HTTPTransport())
    stripped = make_keeper(transport=strip)

    assert stripped.refresh(trigger="manual").refreshed == 1
    saved = stripped.store.connections.get(record.id)
    assert saved is not None and strip.stripped == 1
    assert stripped.vault.refresh_token(saved) == old_refresh
    assert stripped.vault.access_token(saved) != keeper.vault.access_token(record)


class _StripRefreshToken(httpx2.BaseTransport):
    """A provider that leaves ``refresh_token`` out of refresh answers (Nango #298)."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner, self.stripped = inner, 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/oauth/token"):
            return response
        response.read()
        body = response.json()
        body.pop("refresh_token", None)
        self.stripped += 1
        return httpx2.Response(response.status_code, json=body)


# -- a lost refresh response (invariant 2) ------------------------------------------------------------


class _LoseResponses(httpx2.BaseTransport):
    """Lightspeed answers, but the answer never arrives: the process 'crashes' before it can commit."""

    def __init__(self, inner: httpx2.BaseTransport, count: int) -> None:
        self.inner, self.remaining = inner, count

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        if self.remaining and request.url.path.endswith("/oauth/token"):
            self.remaining -= 1
            response.read()
            raise httpx2.ReadError("connection reset after the server answered")
        return response


def test_lost_refresh_response_is_recovered_by_the_next_run(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    record = connect(keeper, "a")
    losing = make_keeper(transport=_LoseResponses(httpx2.HTTPTransport(), count=1))

    assert losing.refresh(trigger="manual").errors == 1
    assert sim.stats()["refreshes"] == 1  # Lightspeed did rotate; we never saw the new pair

    # The old refresh token still works: the lost pair's access token was never used (grace window).
    assert keeper.refresh(trigger="manual").refreshed == 1
    fresh = keeper.store.connections.get(record.id)
    assert fresh is not None and fresh.status is Status.CONNECTED
    assert keeper.api.account(keeper.vault.access_token(fresh)).account_id == record.account_id


# -- one refresh per connection at a time (invariant 1) ----------------------------------------------


def test_concurrent_runs_never_refresh_a_connection_twice(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    setup = make_keeper()
    for n in range(6):
        connect(setup, f"user-{n}")
    sim.configure(token_latency_ms=300)
    keepers = [make_keeper(REFRESH_CONCURRENCY="3", REFRESH_BATCH_SIZE="1") for _ in range(4)]
    barrier = threading.Barrier(len(keepers))
    results = []

    def run(k: Keeper) -> None:
        barrier.wait()
        results.append(k.refresh(trigger="manual"))

    threads = [threading.Thread(target=run, args=(k,)) for k in keepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stats = sim.stats()
    # One full run at a time: the four processes joined the same run and shared its connections.
    assert len({r.id for r in results}) == 1
    assert max(r.refreshed for r in results) == stats["refreshes"] == 6
    assert stats["invalid_grant"] == 0 and stats["refreshes_in_grace"] == 0
    assert {r.status for r in setup.connections()} == {Status.CONNECTED}


def test_a_refresher_whose_lease_ran_out_cannot_write_over_the_new_holder(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    slow = make_keeper()
    record = connect(slow, "a")
    held = slow.store.connections.acquire(record.id, owner=slow.owner, lease=timedelta(0))
    assert held is not None  # a lease that has already run out: a paused process, or one on a skewed clock

    other = make_keeper()
    assert other.refresh(trigger="manual").refreshed == 1  # takes the connection over
    winner = other.store.connections.get(record.id)
    assert winner is not None

    # The slow refresher wakes up: it must not send (its lease has no time left), and cannot write.
    assert slow.refresher.refresh_claimed(held, trigger="manual").value == "skipped"
    assert (
        slow.store.connections.mark_error(
            record.id,
            lease_token=held.token,
            version=held.record.token_version,
            error="late",
            retry_at=slow.clock(),
            now=slow.clock(),
        )
        is False
    )
    after = slow.store.connections.get(record.id)
    assert after is not None and after.status is Status.CONNECTED
    assert slow.vault.refresh_token(after) == other.vault.refresh_token(winner)
    assert sim.stats()["refreshes"] == 1


def test_a_refresh_whose_lease_is_shorter_than_the_timeout_is_not_sent(
    make_keeper: KeeperFactory, sim: SimulatorControl
) -> None:
    keeper = make_keeper()
    record = connect(keeper, "a")
    # 5 s left, HTTP_TIMEOUT_S 20: the answer could come after the lease ended, so nothing is sent.
    held = keeper.store.connections.acquire(record.id, owner=keeper.owner, lease=timedelta(seconds=5))
    assert held is not None
    assert keeper.refresher.refresh(held).outcome.value == "skipped"
    assert sim.stats()["refreshes"] == 0
    after = keeper.store.connections.get(record.id)
    assert after is not None and after.lease_token is None and after.token_version == record.token_version


def test_a_run_waits_for_a_connection_leased_elsewhere(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    keeper = make_keeper()
    record = connect(keeper, "a")
    held = keeper.store.connections.acquire(record.id, owner="someone-else", lease=timedelta(seconds=2))
    assert held is not None
    started = time.monotonic()
    run = keeper.refresh(trigger="manual")
    # Never both at once: the run refreshed it only once the other holder's lease had ended.
    assert (run.total, run.refreshed) == (1, 1) and time.monotonic() - started >= 1.5
    assert sim.stats()["refreshes"] == 1 and sim.reuse() == 0


def test_the_same_process_cannot_enter_a_lease_twice(keeper: Keeper) -> None:
    record = connect(keeper, "a")
    first = keeper.store.connections.acquire(record.id, owner=keeper.owner, lease=timedelta(minutes=1))
    assert first is not None
    assert keeper.store.connections.acquire(record.id, owner=keeper.owner, lease=timedelta(minutes=1)) is None


# -- runs leave records (invariant 5) -----------------------------------------------------------------


def test_a_run_whose_worker_vanished_is_shown_interrupted(keeper: Keeper, clock: FakeClock) -> None:
    stale = keeper.store.runs.start(trigger="schedule", owner="dead-worker", now=clock() - timedelta(minutes=10))
    age_heartbeat(keeper.store, stale.id, timedelta(minutes=10))
    history = {run.id: run for run in keeper.run_history()}
    assert history[stale.id].status is RunStatus.INTERRUPTED
    assert history[stale.id].finished_at is not None


# -- spacing (the guide's 200 ms) ---------------------------------------------------------------------


class _SendTimes(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner, self.times, self.lock = inner, [], threading.Lock()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/oauth/token"):
            import time

            with self.lock:
                self.times.append(time.monotonic())
        return self.inner.handle_request(request)


def test_refresh_requests_are_spaced_by_refresh_delay(make_keeper: KeeperFactory, sim: SimulatorControl) -> None:
    setup = make_keeper()
    for n in range(5):
        connect(setup, f"user-{n}")
    recorder = _SendTimes(httpx2.HTTPTransport())
    keeper = make_keeper(transport=recorder, REFRESH_DELAY_MS="500", REFRESH_CONCURRENCY="4")
    assert keeper.refresh(trigger="manual").refreshed == 5
    gaps = [b - a for a, b in zip(recorder.times, recorder.times[1:], strict=False)]
    # Slots are 500 ms apart; the claim between a slot and its send adds some jitter either way.
    assert len(gaps) == 4 and min(gaps) >= 0.45


# -- secrets (invariant 4) ----------------------------------------------------------------------------


def test_no_token_in_logs_records_or_database_file(
    make_keeper: KeeperFactory, sim: SimulatorControl, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    keeper = make_keeper()
    records = [connect(keeper, f"user-{n}") for n in range(3)]
    sim.revoke_account(records[0].account_id)
    sim.inject_fault("token", "garbage", count=1)
    keeper.refresh(trigger="manual")
    keeper.refresh(trigger="manual")
    secrets = {keeper.vault.refresh_token(r) for r in keeper.connections()}
    secrets |= {keeper.vault.access_token(r) for r in keeper.connections()}
    secrets |= {keeper.vault.refresh_token(r) for r in records} | {keeper.vault.access_token(r) for r in records}
    written = caplog.text + repr([RunView.model_validate(r).document() for r in keeper.run_history()])
    written += repr([ConnectionView.model_validate(r).document() for r in keeper.connections()])
    written += repr(keeper.connections())
    for secret in secrets:
        assert secret not in written
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        for secret in secrets:
            assert secret.encode() not in raw

"""A 429 from X-Series' token endpoint, whose ``Retry-After`` is an HTTP date, holds X-Series token requests in
every process of the deployment (one pacing row per provider client, ``refresh:x-series``) and holds nothing of
R-Series, on SQLite and PostgreSQL.

Two keepers of a deployment with both providers stand for two processes: each has its own pacers and reads the
shared hold from the database. The simulator runs in this process, so the send times the recording transports
note are on its clock too.
"""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

from lightkeeper import RunStatus
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.faults.support import wait_for
from tests.seeding import seed_connections
from tests.xseries.conftest import XKeeperFactory
from tests.xseries.support import (
    RecordingTransport,
    holds_the_live_pair,
    reuse_both,
    seed_x_connections,
    status_counts,
)

RETRY_AFTER_S = 3
X_SLOTS, R_SLOTS = "refresh:x-series", "refresh"
#: How early a request may seem to leave: the two monotonic readings are a few statements apart.
SLACK_S = 0.05


def test_an_http_date_retry_after_holds_x_series_everywhere_and_r_series_nowhere(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    first_wire, second_wire = RecordingTransport(), RecordingTransport()
    first = make_x_keeper(both=True, transport=first_wire)
    second = make_x_keeper(both=True, transport=second_wire)
    [r_id] = seed_connections(first, sim, 1, user_prefix="r")
    sim.configure(x_access_token_ttl=60)  # due in any full run
    held_run, held_run_2, held_on_demand = seed_x_connections(first, sim, 3)
    sim.inject_fault("x_token", "rate_limit", retry_after=RETRY_AFTER_S)

    told = threading.Thread(target=lambda: first.refresh(connection_id=held_run), name="told-to-wait")
    told.start()
    wait_for(lambda: sim.stats()["faults_served"] == 1, what="the 429")
    # The simulator counts the fault as it answers; the client's transport records the answer a moment later.
    wait_for(lambda: len(first_wire.retry_afters) == 1, what="the 429 to reach the keeper")
    [limited] = first_wire.token_requests(x_series=True)
    hold_end = limited.at + RETRY_AFTER_S  # at the earliest: the date is rounded up to the second

    # The 429 said when, as X-Series does: an HTTP date, not seconds.
    [retry_after] = first_wire.retry_afters
    assert not retry_after.strip().isdigit() and parsedate_to_datetime(retry_after).tzinfo is not None, retry_after
    # One hold for the deployment, on X-Series' row only.
    wait_for(lambda: second.store.pacing.pending(X_SLOTS) > 0, what="the hold to be shared", timeout=2)
    assert RETRY_AFTER_S - 1 < second.store.pacing.pending(X_SLOTS) <= RETRY_AFTER_S + 1
    assert second.store.pacing.pending(R_SLOTS) == 0.0

    # The other process, meanwhile: its R-Series refresh goes at once, its X-Series ones wait for the date.
    started = time.monotonic()
    r_run = second.refresh(connection_id=r_id)
    r_elapsed = time.monotonic() - started
    assert (r_run.status, r_run.refreshed) == (RunStatus.COMPLETED, 1), r_run
    [r_sent] = second_wire.token_requests(x_series=False)
    assert r_sent.at < hold_end - 1 and r_elapsed < 1.5, "R-Series was held by X-Series' Retry-After"

    on_demand = threading.Thread(target=second.fresh_token, args=(held_on_demand,), name="on-demand")
    on_demand.start()
    x_run = second.refresh(connection_id=held_run_2)
    on_demand.join(30)
    told.join(30)
    assert not on_demand.is_alive() and not told.is_alive()

    assert x_run.refreshed == 1, x_run
    after = first_wire.token_requests(x_series=True)[1:] + second_wire.token_requests(x_series=True)
    assert len(after) == 3, after  # the told one's retry, the other process's run and its on-demand refresh
    early = [round(sent.at - hold_end, 3) for sent in after if sent.at < hold_end - SLACK_S]
    assert not early, f"X-Series token requests sent during the hold (s before its end): {early}"
    stats = sim.stats()
    assert (stats["x_token_requests"], stats["x_refreshes"]) == (4, 3), stats  # the 429, then one grant each
    assert reuse_both(sim) == (0, 0) and status_counts(first) == {"connected": 4}
    assert all(holds_the_live_pair(first, simulator_server, cid) for cid in (held_run, held_run_2, held_on_demand))


def test_a_retry_after_longer_than_a_refresh_may_wait_still_holds_every_x_series_request(
    make_x_keeper: XKeeperFactory, sim: SimulatorControl
) -> None:
    """``REFRESH_MAX_RETRY_AFTER_S`` 2 and a date 8 s away: that store is left in error with its tokens (for a later
    run), the run's R-Series connections are refreshed, and no other X-Series token request leaves before the date."""
    wire = RecordingTransport()
    keeper = make_x_keeper(both=True, transport=wire, REFRESH_MAX_RETRY_AFTER_S="2", REFRESH_CONCURRENCY="1")
    r_ids = seed_connections(keeper, sim, 2, user_prefix="r")
    sim.configure(x_access_token_ttl=60)
    x_ids = seed_x_connections(keeper, sim, 2)
    versions_before = {cid: keeper.connection(cid).token_version for cid in x_ids}
    sim.inject_fault("x_token", "rate_limit", retry_after=8)

    run = keeper.refresh()

    assert run.status is RunStatus.COMPLETED and run.expired == 0, run
    assert all(keeper.connection(cid).status.value == "connected" for cid in r_ids)
    [limited, *later] = wire.token_requests(x_series=True)
    [told] = [cid for cid in x_ids if f"/x/{keeper.connection(cid).account_id}/" in limited.url]
    failed = keeper.connection(told)
    assert failed.status.value == "error" and failed.token_version == versions_before[told]  # tokens kept
    assert failed.last_error and "rate-limited" in failed.last_error, failed.last_error
    hold_end = limited.at + 8
    early = [round(sent.at - hold_end, 3) for sent in later if sent.at < hold_end - SLACK_S]
    assert not early, f"X-Series token requests sent before the Retry-After date (s before it): {early}"
    assert reuse_both(sim) == (0, 0)

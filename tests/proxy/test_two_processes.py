"""Two ``lightkeeper serve`` processes, one account, one small bucket: Lightspeed never answers 429.

Both processes are the installed console script on free ports, against one migrated PostgreSQL clone (where the
account's bucket row is shared) and the session's simulator, configured with a small bucket: size 20, drip
5/s, burst limit 10 a second. One merchant is connected in-process (the real OAuth code exchange). Four caller
threads, released at once, send 100 GETs and 20 stock PUTs (cost ``LIGHTSPEED_WRITE_COST`` 1.5) through the
proxy, call n through process n % 2. The bucket's own minimum is what does not fit in it at the start,
drained at the drip rate: (100 x 1 + 20 x 1.5 - 20) / 5 = 22 s. The run must take at least that (less than
a second under it would mean the bucket was not binding) and at most 15 % more, with every answer 200 and no
429 of either kind at the simulator.

At the default ``PROXY_MAX_WAIT_S`` (10 s): four callers queue behind each other's bookings, about a second
each at this drip, so none is answered the proxy's own 429. ``bench/proxy.py`` runs the same callers for its
two-process measurement.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.proxy import minimum_s, pacing_calls, run_callers, serve_processes

from lightkeeper import Keeper
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.acceptance.conftest import API_KEY
from tests.helpers import connect, make_env, make_settings
from tests.integration.conftest import pg_clones, pg_database_url, pg_template  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres

GETS, PUTS = 100, 20
BUCKET, DRIP, BURST = 20.0, 5.0, 10
CALLERS = 4
SLACK = 1.15  # at most 15 % over the bucket's own minimum


def test_two_serves_share_one_accounts_bucket_without_a_429(
    tmp_path: Path,
    pg_database_url: str,  # noqa: F811 (the fixture imported above)
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
) -> None:
    with Keeper(make_settings(pg_database_url, simulator_server.url)) as keeper:
        record = connect(keeper, "merchant-1")
    sim.configure(bucket_size=BUCKET, drip_rate=DRIP, burst_limit=BURST)
    home = tmp_path / "home"
    home.mkdir()
    env = make_env(
        pg_database_url,
        simulator_server.url,
        LIGHTKEEPER_API_KEY=API_KEY,
        LOG_LEVEL="WARNING",
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        HOME=str(home),
    )
    minimum = minimum_s(GETS, PUTS, bucket=BUCKET, drip=DRIP, write_cost=1.5)
    assert minimum == 22.0

    with serve_processes(2, env, tmp_path) as serves:
        before = sim.stats()
        run = run_callers([s.url for s in serves], API_KEY, record.id, pacing_calls(GETS, PUTS), callers=CALLERS)
        stats = sim.stats()
        logs = "\n".join(f"--- {s.log_path.name}\n{s.log()[-2000:]}" for s in serves)

    assert not run.failures, f"{run.failures[:5]}\n{logs}"
    assert run.statuses == {"200": GETS + PUTS}, run.statuses
    print(f"two serves: {run.elapsed_s:.2f} s for {GETS} GETs + {PUTS} PUTs, minimum {minimum} s")
    assert stats["rate_limited"] - before["rate_limited"] == 0, stats  # counts both kinds of 429
    assert stats["burst_limited"] - before["burst_limited"] == 0, stats
    assert stats["api_requests"] - before["api_requests"] == GETS + PUTS, stats  # nothing was retried
    assert run.elapsed_s <= SLACK * minimum, f"{run.elapsed_s:.2f} s, over {SLACK} x the minimum {minimum} s"
    assert run.elapsed_s >= minimum - 1.0, f"{run.elapsed_s:.2f} s: the bucket was not binding ({minimum} s)"

"""100 concurrent ``fresh_token`` callers in 4 processes on one expired token: exactly one refresh at Lightspeed.

Each process is started with ``spawn`` (a clean interpreter, as separate machines would be), builds its own
``Keeper`` from an environment mapping and runs 25 threads; all 100 callers are released by one
``multiprocessing.Barrier``. The simulator answers token requests after 300 ms, so every caller arrives while
the one refresh is in flight.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from queue import Empty

from lightkeeper import Keeper
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.helpers import connect, make_env

from .callers import fresh_token_callers
from .conftest import set_row

PROCESSES = 4
THREADS = 25
TOKEN_LATENCY_MS = 300
DEADLINE_S = 60.0


def test_100_callers_in_4_processes_cause_exactly_one_refresh(
    database_url: str,
    simulator_server: SimulatorServer,
    sim: SimulatorControl,
    keeper: Keeper,
) -> None:
    record = connect(keeper, "user-1")
    old_token = keeper.vault.access_token(record)
    set_row(keeper, record.id, token_expires_at=keeper.clock() - timedelta(minutes=1))  # expired in our books
    sim.configure(token_latency_ms=TOKEN_LATENCY_MS)

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES * THREADS)
    results = context.Queue()
    env = make_env(database_url, simulator_server.url)
    processes = [
        context.Process(
            target=fresh_token_callers, args=(env, record.id, THREADS, start, results), name=f"callers-{n}", daemon=True
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [outcome for _ in processes for outcome in results.get(timeout=DEADLINE_S)]
    except Empty:
        outcomes = []
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    errors = [detail for status, detail, _ in outcomes if status != "ok"]
    assert not errors, errors[:3]
    assert len(outcomes) == PROCESSES * THREADS, "not every process reported"
    assert all(process.exitcode == 0 for process in processes), [p.exitcode for p in processes]

    stats = sim.stats()
    assert stats["refreshes"] == 1, stats  # exactly one refresh reached Lightspeed
    assert stats["invalid_grant"] == 0
    tokens = {token for _, token, _ in outcomes}
    assert len(tokens) == 1, f"{len(tokens)} different tokens"  # everyone got the winner's token
    (token,) = tokens
    assert token != old_token
    saved = keeper.store.connections.get(record.id)
    assert saved is not None and keeper.vault.access_token(saved) == token  # the one committed
    assert saved.token_version == record.token_version + 1 and saved.acquired_by is None
    assert {expires for _, _, expires in outcomes} == {saved.token_expires_at.isoformat()}  # type: ignore[union-attr]
    assert saved.token_expires_at - keeper.clock() > timedelta(minutes=55)  # type: ignore[operator]
    assert keeper.api.account(token).account_id == record.account_id  # and it works at Account.json

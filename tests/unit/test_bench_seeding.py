"""The benchmarks' bulk seeding and child accounting: what they measure must be real connections and real numbers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.bulk import bulk_seed
from bench.child import high_water_kb, run_child

from lightkeeper import Keeper
from lightkeeper.crypto import TokenCipher
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import Trigger

from ..helpers import TEST_KEY, make_settings


def test_bulk_seeded_rows_are_connections_lightkeeper_refreshes(
    tmp_path: Path, simulator_server: SimulatorServer, sim: SimulatorControl
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'bulk.db'}", simulator_server.url)
    with Keeper(settings) as keeper:
        keeper.ensure_schema()
        first = bulk_seed(keeper.store.engine, TokenCipher.from_texts(TEST_KEY), simulator_server, 12)
        records = [keeper.store.connections.get(row_id) for row_id in range(first, first + 12)]
        assert all(record is not None and record.status == "connected" for record in records)
        # Each ciphertext opens only as its own row's token: the refresh tokens are the simulator's, all distinct.
        refresh_tokens = {keeper.vault.refresh_token(record) for record in records if record}
        assert len(refresh_tokens) == 12
        run = keeper.refresh(trigger=Trigger.MANUAL)
    assert (run.total, run.refreshed, run.errors) == (12, 12, 0)
    assert sim.stats()["refreshes"] == 12
    assert sim.reuse() == 0


def test_a_second_bulk_seed_continues_after_the_existing_rows(
    tmp_path: Path, simulator_server: SimulatorServer, sim: SimulatorControl
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'bulk.db'}", simulator_server.url)
    cipher = TokenCipher.from_texts(TEST_KEY)
    with Keeper(settings) as keeper:
        keeper.ensure_schema()
        first = bulk_seed(keeper.store.engine, cipher, simulator_server, 3)
        second = bulk_seed(keeper.store.engine, cipher, simulator_server, 2)
        assert second == first + 3
        assert keeper.refreshable_count() == 5


def test_a_child_is_accounted_alone() -> None:
    script = "import sys; sum(range(3_000_000)); print('done'); sys.exit(3)"
    result = run_child([sys.executable, "-c", script], {})
    assert (result.returncode, result.stdout.strip()) == (3, "done")
    assert result.cpu_s > 0


def test_a_childs_peak_memory_is_its_own_not_its_parents() -> None:
    # ru_maxrss would report at least this (pytest's) process's peak, carried over the fork; VmHWM does not.
    parent_mb = high_water_kb(os.getpid()) / 1024
    hold = "import time; data = b'x' * ({mb} * 2**20); time.sleep(0.5)"  # alive long enough to be read
    small = run_child([sys.executable, "-c", hold.format(mb=1)], {})
    large = run_child([sys.executable, "-c", hold.format(mb=64)], {})
    assert 0 < small.max_rss_mb < parent_mb
    assert large.max_rss_mb - small.max_rss_mb >= 60

"""``PacingRepo.take`` after a stall, on SQLite and PostgreSQL: a taker that waited for the pacing row computes its
slot from the moment it got the row, not from the moment it asked.

PostgreSQL computes an UPDATE's new values before waiting for the row lock and re-computes them only when the
holder changed the row; a holder that let go of it unchanged (``SELECT … FOR UPDATE``) left every waiter a stale
"now", and two takers that asked a second apart during the stall got slots 7 ms apart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from lightkeeper.store import Store, sqlite_path
from tests.integration.conftest import _url_with_database

INTERVAL_S = 0.5
STALL_S = 1.5


@contextmanager
def row_held_unchanged(store: Store, database_url: str, seconds: float) -> Iterator[None]:
    """Another connection holds the pacing row for ``seconds`` and lets go of it unchanged (SQLite: the whole
    database). The body runs while it is held; leaving waits for the release."""
    ready = threading.Event()

    def hold() -> None:
        path = sqlite_path(database_url)
        if path is not None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            ready.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
            conn.close()
            return
        with psycopg.connect(_url_with_database(store.engine.url.database or "")) as conn:
            conn.execute("SELECT * FROM lightkeeper_pacing FOR UPDATE")
            ready.set()
            time.sleep(seconds)
            conn.rollback()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    ready.wait(10)
    yield
    holder.join(seconds + 10)


def test_takers_that_waited_for_the_row_are_spaced_from_when_they_got_it(store: Store, database_url: str) -> None:
    pacing = store.pacing
    pacing.take("refresh", INTERVAL_S)  # the row exists, and its next slot is INTERVAL_S from now
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = pacing.take("refresh", INTERVAL_S)
        with lock:
            slots.append(time.monotonic() + wait)

    with row_held_unchanged(store, database_url, STALL_S):
        first = threading.Thread(target=take)
        first.start()
        time.sleep(1.0)  # the second asks a second later, both wait for the held row
        second = threading.Thread(target=take)
        second.start()
    first.join(10)
    second.join(10)
    assert len(slots) == 2
    earlier, later = sorted(slots)
    assert later - earlier >= 0.9 * INTERVAL_S, (earlier, later)

"""``PacingRepo.take`` after a stall, on SQLite and PostgreSQL: a taker that waited for the pacing row computes its
slot from the moment it got the row, not from the moment it asked.

PostgreSQL computes an UPDATE's new values before waiting for the row lock and re-computes them only when the
holder changed the row; a holder that let go of it unchanged (``SELECT … FOR UPDATE``) left every waiter a stale
"now", and two takers that asked a second apart during the stall got slots 7 ms apart.
"""

from __future__ import annotations

import threading
import time

from lightkeeper.store import Store
from tests.integration.test_spacing import database_held

INTERVAL_S = 0.5
STALL_S = 1.5


def test_takers_that_waited_for_the_row_are_spaced_from_when_they_got_it(store: Store, database_url: str) -> None:
    pacing = store.pacing
    pacing.take("refresh", INTERVAL_S)  # the row exists, and its next slot is INTERVAL_S from now
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = pacing.take("refresh", INTERVAL_S)
        with lock:
            slots.append(time.monotonic() + wait)

    with database_held(database_url, store.engine.url.database or "", STALL_S):
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

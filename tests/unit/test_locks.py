"""The per-connection locks of one process: exclusive, and kept only while in use (memory flat with the table)."""

from __future__ import annotations

import threading

from lightkeeper.refresh import ConnectionLocks


def test_a_lock_is_exclusive_per_connection_and_independent_across_connections() -> None:
    locks = ConnectionLocks()
    first = locks.get(1)
    assert first.acquire(timeout=1)
    assert not locks.get(1).acquire(timeout=0.01)  # the same connection waits
    other = locks.get(2)
    assert other.acquire(timeout=0.01)  # another connection does not
    other.release()
    first.release()
    again = locks.get(1)
    assert again.acquire(timeout=0.01)
    again.release()


def test_locks_are_forgotten_once_nobody_holds_or_waits_for_them() -> None:
    locks = ConnectionLocks()
    for connection_id in range(10_000):
        lock = locks.get(connection_id)
        assert lock.acquire()
        lock.release()
    assert len(locks) == 0


def test_a_waiter_keeps_the_lock_alive_and_a_timed_out_one_lets_it_go() -> None:
    locks = ConnectionLocks()
    holder = locks.get(7)
    assert holder.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(locks.get(7).acquire(timeout=5)))
    waiter.start()
    holder.release()  # the waiter takes it over: the entry must survive the holder's release
    waiter.join()
    assert got == [True] and len(locks) == 1
    assert not locks.get(7).acquire(timeout=0.01)  # still held by the waiter, who never released it
    assert len(locks) == 1

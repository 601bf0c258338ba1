"""One lock per connection in the process, shared by run workers and on-demand callers.

The database lease decides between processes; this lock makes the callers inside one process queue for a
connection instead of polling the database, and keeps a run worker and an on-demand caller of the same
``Keeper`` (``serve``) from ever both working on one connection.

A connection's lock exists only while someone holds it or waits for it: a long-running ``serve`` or a run over
50,000 connections must not keep one lock per connection it ever touched (that grew memory with the table).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # holders and waiters


class ConnectionLock:
    """A caller's use of one connection's lock: ``acquire`` once, then ``release`` if it was acquired."""

    def __init__(self, owner: ConnectionLocks, connection_id: int, entry: _Entry) -> None:
        self._owner, self._id, self._entry = owner, connection_id, entry

    def acquire(self, timeout: float = -1) -> bool:
        if self._entry.lock.acquire(timeout=timeout):
            return True
        self._owner._leave(self._id)  # gave up waiting: no longer a user
        return False

    def acquire_now(self) -> bool:
        """Take the lock if it is free; on False, still a user: ``acquire`` (waiting) must follow."""
        return self._entry.lock.acquire(blocking=False)

    def release(self) -> None:
        self._entry.lock.release()
        self._owner._leave(self._id)


class ConnectionLocks:
    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._guard = threading.Lock()

    def get(self, connection_id: int) -> ConnectionLock:
        """The connection's lock, to ``acquire`` right away (each ``get`` counts as one user until then)."""
        with self._guard:
            entry = self._entries.setdefault(connection_id, _Entry())
            entry.users += 1
        return ConnectionLock(self, connection_id, entry)

    def __len__(self) -> int:
        """How many connections have a lock now (held or waited for)."""
        with self._guard:
            return len(self._entries)

    def _leave(self, connection_id: int) -> None:
        with self._guard:
            entry = self._entries[connection_id]
            entry.users -= 1
            if entry.users == 0:
                del self._entries[connection_id]


__all__ = ["ConnectionLock", "ConnectionLocks"]

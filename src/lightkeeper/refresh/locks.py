"""One lock per connection in the process, shared by run workers and on-demand callers.

The database lease decides between processes; this lock makes the callers inside one process queue for a
connection instead of polling the database, and keeps a run worker and an on-demand caller of the same
``Keeper`` (``serve``) from ever both working on one connection.
"""

from __future__ import annotations

import threading


class ConnectionLocks:
    def __init__(self) -> None:
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, connection_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(connection_id, threading.Lock())


__all__ = ["ConnectionLocks"]

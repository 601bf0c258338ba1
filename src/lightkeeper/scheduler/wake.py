"""Waking workers early: PostgreSQL ``LISTEN`` when available, the poll interval always.

A missed NOTIFY (a dropped connection, a worker starting late) costs at most one poll interval, because
workers also look for work on a timer.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import make_url

from ..store import NOTIFY_CHANNEL, normalise_url

log = logging.getLogger(__name__)


class Wake:
    """An event that a stop request, a notification or the poll timer ends the wait on."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()


class PgListener:
    """LISTENs on the runs channel on its own thread and sets ``wake`` for each notification."""

    def __init__(self, database_url: str, wake: Wake, stop: threading.Event) -> None:
        url = make_url(normalise_url(database_url)).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._wake, self._stop = wake, stop
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> PgListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # reconnect: polling covers the gap
                log.warning("LISTEN connection lost (%s); polling until it is back", type(exc).__name__)
                self._stop.wait(5)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self._wake.set()


__all__ = ["PgListener", "Wake"]

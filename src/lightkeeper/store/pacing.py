"""All SQL on ``lightkeeper_pacing``: send slots shared by every process of one deployment.

Lightspeed limits the OAuth client as a whole, so ``REFRESH_DELAY_MS`` must space the requests of every
process sharing the database, not of each one. One row per limiter holds the earliest moment the next request
may go; taking a slot is one ``UPDATE … RETURNING`` (the row lock serialises takers, by the database's clock).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, literal, select, update

from . import dialect
from .schema import pacing as t

REFRESH = "refresh"


class PacingRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def take(self, name: str, interval_s: float) -> float:
        """Reserve the next slot ``interval_s`` after the previous one; seconds to wait until it."""
        with self._engine.begin() as conn:
            wait = self._take(conn, name, interval_s)
            if wait is None:  # the first slot ever: create the row, then take it
                self._ensure(conn, name)
                wait = self._take(conn, name, interval_s)
        return max(0.0, float(wait or 0.0))

    @staticmethod
    def _take(conn: Connection, name: str, interval_s: float) -> float | None:
        # The row is locked first (a no-op on SQLite, whose write lock comes with the UPDATE): PostgreSQL computes
        # an UPDATE's new values before it waits for the row, and re-computes them only if the holder changed
        # the row. A holder that let go of it unchanged (SELECT … FOR UPDATE, a rolled-back write) left every
        # waiter a "now" from before its wait: slots bunched after the stall.
        conn.execute(select(t.c.name).where(t.c.name == name).with_for_update())
        now = dialect.epoch(conn)
        stmt = (
            update(t)
            .where(t.c.name == name)
            .values(next_at=dialect.greatest(conn, t.c.next_at, now) + interval_s)
            .returning((t.c.next_at - literal(interval_s) - now).label("wait"))
        )
        return conn.execute(stmt).scalar()

    def hold(self, name: str, seconds: float) -> None:
        """No slot is handed out for ``seconds`` from now (a ``Retry-After`` holds every process)."""
        with self._engine.begin() as conn:
            self._ensure(conn, name)
            until = dialect.epoch(conn) + seconds
            conn.execute(
                update(t)
                .where(t.c.name == name)
                .values(
                    next_at=dialect.greatest(conn, t.c.next_at, until),
                    hold_until=dialect.greatest(conn, t.c.hold_until, until),
                )
            )

    def pending(self, name: str) -> float:
        """Seconds until the limiter lets a request go, without taking a slot (0 when free)."""
        with self._engine.connect() as conn:
            wait = conn.execute(select(t.c.next_at - dialect.epoch(conn)).where(t.c.name == name)).scalar()
        return max(0.0, float(wait or 0.0))

    def hold_left(self, name: str) -> float:
        """Seconds until the latest ``Retry-After`` hold ends (0 when none is on): read right before a send, since
        a hold binds the slots handed out before it came too."""
        with self._engine.connect() as conn:
            left = conn.execute(select(t.c.hold_until - dialect.epoch(conn)).where(t.c.name == name)).scalar()
        return max(0.0, float(left or 0.0))

    @staticmethod
    def _ensure(conn: Connection, name: str) -> None:
        conn.execute(dialect.insert(conn, t).values(name=name, next_at=0.0).on_conflict_do_nothing())


__all__ = ["REFRESH", "PacingRepo"]

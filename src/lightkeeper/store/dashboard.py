"""All SQL on the dashboard's shared state: signed-out sessions (``lightkeeper_dashboard_signouts``) and wrong
keys per client address (``lightkeeper_login_failures``).

Why in the database: several ``serve`` replicas behind one load balancer answer one operator. Kept in each
process's memory, a session signed out on one replica still opened the dashboard on the others, and a guesser
spreading wrong keys over the replicas was counted by each apart. The policy (how many failures, how long to
wait) is the dashboard's (``web.dashboard_auth``); this module keeps the counts exact while replicas write at
once, and the tables small:

- a failure is one upsert that counts it and returns the count, and the block that count earns is written in the
  same transaction: the upsert holds the row's lock until then, so two replicas never lose a count;
- rows are pruned as new ones come (a sign-out after its session's end, an address after the caller's
  ``forget_before``), and neither table keeps more than about ``max_tracked`` rows: a flood of addresses forgets
  the oldest, as the in-memory version did.

Times are the caller's (the dashboard's clock), timezone-aware (``UTCDateTime``). Sessions are stored as hashes
of their ids, never as cookies.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, Engine, case, delete, null, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from . import dialect
from .schema import dashboard_signouts as s
from .schema import login_failures as f

#: More rows than this in either table: the oldest are forgotten (a flood cannot grow them without limit).
MAX_TRACKED = 10_000
#: An address is kept to this many characters. An IP address has at most 45; a longer one comes only from a
#: client trusted to name itself, and PostgreSQL's index refuses keys of a few kilobytes.
ADDRESS_MAX = 200
#: At most this many rows are pruned by one write. A write adds at most one row, so the tables stay bounded.
PRUNE_BATCH = 100
#: A sign-out is kept this long after its session's end: replicas whose clocks run a little behind still refuse it.
CLOCK_SKEW = timedelta(minutes=5)


class DashboardRepo:
    """The dashboard's state on this database (``web.dashboard_state.DashboardState``)."""

    def __init__(self, engine: Engine, *, max_tracked: int = MAX_TRACKED) -> None:
        self._engine = engine
        self._max_tracked = max_tracked

    # -- sign-outs ------------------------------------------------------------------------------------
    def end_session(self, session_hash: str, *, expires_at: datetime, now: datetime) -> None:
        """Refuse the session ``session_hash`` (a hash of its id) until ``expires_at``, its own end."""
        with self._engine.begin() as conn:
            stmt = dialect.insert(conn, s).values(session_hash=session_hash, expires_at=expires_at)
            stmt = stmt.on_conflict_do_update(index_elements=[s.c.session_hash], set_={"expires_at": expires_at})
            conn.execute(stmt)
            ended = s.c.expires_at < now - CLOCK_SKEW
            _prune(conn, s.c.session_hash, s.c.expires_at, self._max_tracked, old=ended, keep=session_hash)

    def session_ended(self, session_hash: str) -> bool:
        """Whether the session was signed out (on any replica)."""
        with self._engine.connect() as conn:
            found = conn.execute(select(s.c.session_hash).where(s.c.session_hash == session_hash)).first()
        return found is not None

    # -- wrong keys per client address -------------------------------------------------------------------
    def login_blocked_until(self, address: str) -> datetime | None:
        """Until when ``address`` is refused unchecked (None: never blocked, or forgotten)."""
        with self._engine.connect() as conn:
            query = select(f.c.blocked_until).where(f.c.address == _kept(address))
            return conn.execute(query).scalar_one_or_none()

    def login_failed(
        self, address: str, *, now: datetime, forget_before: datetime, block_s: Callable[[int], int | None]
    ) -> int | None:
        """Count a wrong key from ``address``: one more, or the first when its last one came before
        ``forget_before``. When ``block_s(failures)`` gives seconds, the address is blocked for them from
        ``now``; those seconds, or None."""
        address = _kept(address)
        with self._engine.begin() as conn:
            forgotten = f.c.last_at < forget_before
            stmt = dialect.insert(conn, f).values(address=address, failures=1, last_at=now, blocked_until=None)
            counted = {
                "failures": case((forgotten, 1), else_=f.c.failures + 1),
                "blocked_until": case((forgotten, null()), else_=f.c.blocked_until),
                "last_at": now,
            }
            stmt = stmt.on_conflict_do_update(index_elements=[f.c.address], set_=counted)
            failures = int(conn.execute(stmt.returning(f.c.failures)).scalar_one())
            wait = block_s(failures)
            if wait is not None:
                until = now + timedelta(seconds=wait)
                conn.execute(update(f).where(f.c.address == address).values(blocked_until=until))
            if failures == 1:  # a new (or forgotten) address: only such a failure adds a row
                _prune(conn, f.c.address, f.c.last_at, self._max_tracked, old=forgotten, keep=address)
        return wait

    def login_succeeded(self, address: str) -> None:
        """The right key from ``address``: its count starts again."""
        with self._engine.begin() as conn:
            conn.execute(delete(f).where(f.c.address == _kept(address)))


def _prune(
    conn: Connection, key: Column[str], when: Column[datetime], limit: int, *, old: ColumnElement[bool], keep: str
) -> None:
    """Delete up to ``PRUNE_BATCH`` rows that are ``old``, or older by ``when`` than the ``limit`` newest (ties at
    the cut go too), but never the row ``keep`` (just written). Rows another transaction holds are skipped, never
    waited for: two replicas pruning while they write never deadlock. The keys are read first and deleted as a
    list (a ``LIMIT`` inside ``IN (…)`` may be evaluated more than once by PostgreSQL). Both reads walk ``when``'s
    index."""
    cut = conn.execute(select(when).order_by(when.desc()).offset(limit).limit(1)).scalar_one_or_none()
    which = (old if cut is None else or_(old, when <= cut)) & (key != keep)
    found = select(key).where(which).limit(PRUNE_BATCH).with_for_update(skip_locked=True)
    keys = list(conn.execute(found).scalars())
    if keys:
        conn.execute(delete(key.table).where(key.in_(keys), which))


def _kept(address: str) -> str:
    return address[:ADDRESS_MAX]


__all__ = ["ADDRESS_MAX", "MAX_TRACKED", "DashboardRepo"]

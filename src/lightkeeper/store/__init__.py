"""The store: schema, migrations and every SQL statement, for SQLite and PostgreSQL alike.

``Store`` is the one object the rest of lightkeeper talks to; it knows nothing of HTTP or of tokens in
plaintext (ciphertexts are made and read by ``crypto``).
"""

from __future__ import annotations

from sqlalchemy import Engine

from . import dialect
from .api_buckets import ApiBucketRepo
from .connections import ConnectionRepo, EncryptPair, Lease, NewTokens, Tally
from .dashboard import DashboardRepo
from .engine import make_engine, normalise_url, soft_engine, sqlite_path
from .events import EVENT_VERSION, EventLease, EventsRepo
from .jobs import EMBEDDED, PG_CRON, JobRepo
from .keyscan import KeyScan, StoredVerifier
from .migrate import current_revision, ensure_current, head_revision, upgrade
from .pacing import REFRESH, PacingRepo
from .records import (
    AUTOMATIC_TRIGGERS,
    REFRESHABLE,
    ConnectionRecord,
    ConnectSession,
    DailyOutcomes,
    EventRecord,
    EventStatus,
    EventType,
    Job,
    OAuthState,
    RunRecord,
    RunStatus,
    Status,
    StrictCutoffs,
    Trigger,
)
from .runs import JOB_NAME, NOTIFY_CHANNEL, RunRepo
from .sessions import Rejection, SessionRepo


class Store:
    """The database, by table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Connection changes write their webhook events to the outbox in every process (delivery is the
        # notifier's, with NOTIFY_WEBHOOK_URL).
        self.connections = ConnectionRepo(engine)
        self.events = EventsRepo(engine)
        self.runs = RunRepo(engine)
        self.sessions = SessionRepo(engine)
        self.jobs = JobRepo(engine)
        self.pacing = PacingRepo(engine)
        self.api_buckets = ApiBucketRepo(soft_engine(engine))  # each account's API limits (proxy, stock, client)
        self.keys = KeyScan(engine)  # ciphertexts by key id, across tables (key rotation)
        # The dashboard's sign-outs and wrong keys per address: every ``serve`` behind a load balancer shares them.
        self.dashboard = DashboardRepo(engine)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    @property
    def can_listen(self) -> bool:
        """Whether workers can be woken by LISTEN/NOTIFY (PostgreSQL); elsewhere they poll."""
        return dialect.is_postgresql(self.engine)

    @property
    def in_process(self) -> bool:
        """Whether the database runs inside this process (SQLite): a call costs microseconds and never waits
        on a network, so an event loop may make it directly (``refresh.drain``)."""
        return dialect.is_sqlite(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self.api_buckets.close()


__all__ = [
    "AUTOMATIC_TRIGGERS",
    "EMBEDDED",
    "EVENT_VERSION",
    "JOB_NAME",
    "NOTIFY_CHANNEL",
    "PG_CRON",
    "REFRESH",
    "REFRESHABLE",
    "ApiBucketRepo",
    "ConnectSession",
    "ConnectionRecord",
    "ConnectionRepo",
    "DailyOutcomes",
    "DashboardRepo",
    "EncryptPair",
    "EventLease",
    "EventRecord",
    "EventStatus",
    "EventType",
    "EventsRepo",
    "Job",
    "JobRepo",
    "KeyScan",
    "Lease",
    "NewTokens",
    "OAuthState",
    "PacingRepo",
    "Rejection",
    "RunRecord",
    "RunRepo",
    "RunStatus",
    "SessionRepo",
    "Status",
    "Store",
    "StoredVerifier",
    "StrictCutoffs",
    "Tally",
    "Trigger",
    "current_revision",
    "ensure_current",
    "head_revision",
    "make_engine",
    "normalise_url",
    "sqlite_path",
    "upgrade",
]

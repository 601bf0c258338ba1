"""The store: schema, migrations and every SQL statement, for SQLite and PostgreSQL alike.

``Store`` is the one object the rest of lightkeeper talks to; it knows nothing of HTTP or of tokens in
plaintext (ciphertexts are made and read by ``crypto``).
"""

from __future__ import annotations

from sqlalchemy import Engine

from . import dialect
from .connections import ConnectionRepo, EncryptPair, Lease, NewTokens, Tally
from .engine import make_engine, normalise_url, sqlite_path
from .jobs import EMBEDDED, PG_CRON, JobRepo
from .migrate import current_revision, ensure_current, head_revision, upgrade
from .pacing import REFRESH, PacingRepo
from .records import (
    REFRESHABLE,
    ConnectionRecord,
    ConnectSession,
    Job,
    OAuthState,
    RunRecord,
    RunStatus,
    Status,
    Trigger,
)
from .runs import JOB_NAME, NOTIFY_CHANNEL, RunRepo
from .sessions import Rejection, SessionRepo


class Store:
    """The database, by table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connections = ConnectionRepo(engine)
        self.runs = RunRepo(engine)
        self.sessions = SessionRepo(engine)
        self.jobs = JobRepo(engine)
        self.pacing = PacingRepo(engine)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    @property
    def can_listen(self) -> bool:
        """Whether workers can be woken by LISTEN/NOTIFY (PostgreSQL); elsewhere they poll."""
        return dialect.is_postgresql(self.engine)

    def close(self) -> None:
        self.engine.dispose()


__all__ = [
    "EMBEDDED",
    "JOB_NAME",
    "NOTIFY_CHANNEL",
    "PG_CRON",
    "REFRESH",
    "REFRESHABLE",
    "ConnectSession",
    "ConnectionRecord",
    "ConnectionRepo",
    "EncryptPair",
    "Job",
    "JobRepo",
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

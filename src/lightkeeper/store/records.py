"""Plain records the store hands out. Token fields hold ciphertext; decrypting is the vault's job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A connection's status, with the seed guide's names."""

    CONNECTED = "connected"
    EXPIRED = "expired"
    ERROR = "error"
    DISCONNECTED = "disconnected"


#: The statuses a refresh run works on; ``expired`` and ``disconnected`` need the merchant.
REFRESHABLE = (Status.CONNECTED, Status.ERROR)


class Trigger(StrEnum):
    """What started a run (the guide's job history shows it)."""

    SCHEDULE = "schedule"  # a cron tick of the embedded schedulers
    MANUAL = "manual"  # `lightkeeper refresh`
    API = "api"  # POST /api/refresh
    SQL = "sql"  # refresh_lightspeed_tokens(), by hand or by pg_cron


#: Run triggers that are automatic: they respect per-connection backoff, and ``REFRESH_DUE_AFTER``. A person
#: asking for a run (``manual``, ``api``) gets every refreshable connection tried now (unless ``--due``).
AUTOMATIC_TRIGGERS = frozenset({Trigger.SCHEDULE, Trigger.SQL})


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    #: A tick or request that came while another run of the job was still going: not doubled.
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ConnectionRecord:
    id: int
    user_id: str
    account_id: str
    account_name: str | None
    status: Status
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_expires_at: datetime | None
    last_token_refresh_at: datetime | None
    last_error: str | None
    token_version: int
    consecutive_failures: int
    next_attempt_at: datetime | None
    acquired_by: str | None
    acquired_until: datetime | None
    lease_token: str | None = field(repr=False)
    last_run_id: int | None
    claim_run_id: int | None
    created_at: datetime
    updated_at: datetime
    #: The last alert the host app was sent and not yet recovered from: ``expired`` or ``error`` (or None).
    alert: str | None = None
    #: When the row entered ``error`` (None unless it is in ``error``): ``connection.error`` waits on it.
    error_since: datetime | None = None
    #: Which Lightspeed platform: ``r-series`` or ``x-series`` (``lightspeed.providers``).
    provider: str = "r-series"
    #: The provider revokes a refresh token as it issues the next: runs refresh it only when needed.
    strict_rotation: bool = False

    @classmethod
    def from_row(cls, row: Any) -> ConnectionRecord:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, Any]) -> ConnectionRecord:
        values = dict(mapping)
        values["status"] = Status(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class RunRecord:
    id: int
    job_name: str
    trigger: str
    status: RunStatus
    connection_id: int | None
    scheduled_for: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    acquired_by: str | None
    total: int
    refreshed: int
    expired: int
    errors: int
    skipped: int
    message: str | None
    participants: int = 0
    #: A due-based run refreshes only connections last refreshed before this (None: every connection).
    due_before: datetime | None = None
    #: Connections of strict rotation are refreshed only when their access token expires before this, or they
    #: were last refreshed before ``idle_before`` (None: every one, as in a run of one connection).
    expiring_before: datetime | None = None
    idle_before: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        values = dict(row._mapping)
        values["status"] = RunStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class StrictCutoffs:
    """When a full run refreshes a connection of strict rotation (no grace window: every refresh risks the chain):
    its access token expires before ``expiring_before`` (the next tick plus the leeway), or it was last refreshed
    before ``idle_before`` (a guard against an idle expiry nobody documents)."""

    expiring_before: datetime
    idle_before: datetime


@dataclass(frozen=True)
class DailyOutcomes:
    """One UTC day of refresh outcomes: the runs started that day, their counts summed."""

    day: date
    refreshed: int = 0
    expired: int = 0
    errors: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Job:
    """The seed guide's ``cron.job`` row: which schedule, whether active, and who ticks it."""

    name: str
    schedule: str
    active: bool
    owner: str  # "embedded" (lightkeeper's schedulers) or "pg_cron"
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(**dict(row._mapping))


class EventType(StrEnum):
    """What the host app's webhook is told (exactly these)."""

    EXPIRED = "connection.expired"  # the merchant must reconnect
    ERROR = "connection.error"  # in ``error`` for longer than NOTIFY_ERROR_AFTER_S
    RECOVERED = "connection.recovered"  # ``connected`` again after an expired or error alert


class EventStatus(StrEnum):
    """An outbox event's delivery state."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # never delivered within NOTIFY_GIVE_UP_S


@dataclass(frozen=True)
class EventRecord:
    """One outbox event: ``body`` is the exact JSON every attempt sends; it never holds a token."""

    id: str
    type: str
    version: int
    connection_id: int | None
    body: str
    status: EventStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    acquired_by: str | None
    acquired_until: datetime | None
    lease_token: str | None = field(repr=False)

    @classmethod
    def from_row(cls, row: Any) -> EventRecord:
        values = dict(row._mapping)
        values["status"] = EventStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class ConnectSession:
    id: int
    user_id: str
    return_to: str | None
    expires_at: datetime
    #: What the confirm page names (the host app's words); None: the page shows the user id.
    label: str | None = None
    #: The provider the link connects to.
    provider: str = "r-series"


@dataclass(frozen=True)
class OAuthState:
    user_id: str
    session_id: int | None
    code_verifier: str = field(repr=False)  # ciphertext
    #: The provider whose authorize URL carried the state.
    provider: str = "r-series"


__all__ = [
    "AUTOMATIC_TRIGGERS",
    "REFRESHABLE",
    "ConnectSession",
    "ConnectionRecord",
    "DailyOutcomes",
    "EventRecord",
    "EventStatus",
    "EventType",
    "Job",
    "OAuthState",
    "RunRecord",
    "RunStatus",
    "Status",
    "StrictCutoffs",
    "Trigger",
]

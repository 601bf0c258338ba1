"""What lightkeeper shows: one set of views for the JSON API and for every ``--json`` of the CLI.

A view is read from what the library hands out (``ConnectionView.model_validate(record)``), holds no
secret unless that is its point (``TokenView``), and keeps the keys users script against. The API
answers with these models, the CLI prints their ``document()`` and renders its tables from them.

Timestamps are RFC 3339 in UTC with ``Z`` and six digits of fraction, in the API and the CLI alike:
``2026-11-30T18:00:00.000000Z``. Microseconds, as stored, so no two moments the store tells apart print
alike (a refresh right after a connect still shows); always six digits, so the text sorts as the time does.

Pydantic only, never FastAPI: CLI commands import this module, and the CLI must stay quick to start.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator


def rfc3339(value: datetime) -> str:
    """``value`` as every view writes a time: ``2026-11-30T18:00:00.000000Z`` (UTC, microseconds)."""
    if value.tzinfo is None:  # the store hands out aware UTC; a naive time is UTC, never local time
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: A point in time: a ``datetime`` in Python, :func:`rfc3339` text in JSON (and ``format: date-time``
#: in the OpenAPI schema, which the serializer alone would reduce to a bare string).
Timestamp = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
ConnectionStatus = Literal["connected", "expired", "error", "disconnected"]


class View(BaseModel):
    """A read-only document built from a record's attributes."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    def document(self, *, include: Set[str] | None = None) -> dict[str, Any]:
        """The JSON document (only the ``include`` keys, if given): what the API answers and ``--json``
        prints, times as RFC 3339 text."""
        return self.model_dump(mode="json", include=set(include) if include is not None else None)


class ConnectionView(View):
    """A connection as operators and the host app see it: never a token."""

    id: int
    user_id: str
    #: ``r-series`` or ``x-series``.
    provider: str
    account_id: str
    account_name: str | None
    status: ConnectionStatus
    token_expires_at: Timestamp | None
    last_token_refresh_at: Timestamp | None
    last_error: str | None
    consecutive_failures: int
    next_attempt_at: Timestamp | None


class RunView(View):
    """A refresh run in the job history (``lightkeeper runs``, ``GET /api/runs``)."""

    run_id: int
    job_name: str
    trigger: str
    status: str
    connection_id: int | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    total: int
    refreshed: int
    expired: int
    errors: int
    skipped: int
    message: str | None
    #: A due-based run refreshed only connections last refreshed before this; null: every connection.
    due_before: Timestamp | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_record(cls, data: Any) -> Any:
        """A ``RunRecord``'s ``id`` is the ``run_id``; a run not started yet (queued) shows its request time."""
        if isinstance(data, Mapping):
            return data
        values = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        return values | {"run_id": data.id, "started_at": data.started_at or data.created_at}


#: The fields of ``RunView`` that ``lightkeeper refresh --json`` prints: the outcome of the run it did.
REFRESH_FIELDS = frozenset({"run_id", "status", "total", "refreshed", "expired", "errors", "skipped", "message"})


class RunStartedView(View):
    """A run started in the background (``POST /api/refresh``): follow it in the run history."""

    run_id: int


class ScheduleView(View):
    """The refresh job's schedule (``lightkeeper schedule …``)."""

    job_name: str
    schedule: str
    active: bool
    owner: str
    next_run_at: Timestamp | None
    note: str | None = None


EventTypeName = Literal["connection.expired", "connection.error", "connection.recovered"]


class EventView(View):
    """A webhook event in the outbox and its delivery (``lightkeeper events``): never the body's secret
    parts, because the body holds none, and never the signature."""

    id: str
    type: EventTypeName
    connection_id: int | None
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    created_at: Timestamp
    next_attempt_at: Timestamp | None
    last_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    last_error: str | None


class ConnectLinkView(View):
    """A one-time connect link (``POST /api/connect-sessions``, ``lightkeeper connect-link``)."""

    url: str = Field(description="One-time link, valid for an hour: hand it to the user.")
    expires_at: Timestamp


class TokenView(View):
    """An access token for Lightspeed: the one view that holds a secret, because that is its point."""

    access_token: str = Field(description="Valid for at least TOKEN_REFRESH_LEEWAY_S.")
    expires_at: Timestamp
    account_id: str


class StockRowView(View):
    """One stock update's result."""

    line: int = Field(description="The row's line in the CSV, or its index in `updates`.")
    item_id: int
    status: Literal["done", "failed", "not_sent"]
    error: str | None


class StockView(View):
    """A batch of stock updates (``lightkeeper update-stock --json``): a row not sent says why."""

    total: int
    done: int
    failed: int
    rows: list[StockRowView]

    @model_validator(mode="before")
    @classmethod
    def _from_result(cls, data: Any) -> Any:
        """A ``BatchResult`` counts its rows but does not store the total."""
        if isinstance(data, Mapping):
            return data
        values = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        return values | {"total": len(data.rows)}


class StockAnswerView(StockView):
    """``POST /api/connections/{id}/stock``: the batch, and why it ended early (the CLI says it in words)."""

    stopped: str | None


class KeyRowsView(View):
    """How many stored connections one encryption key id holds, and whether that key is configured."""

    key_id: str
    rows: int
    configured: bool


class ConfigView(View):
    """``lightkeeper check-config --json``: the settings that matter, never a secret."""

    ok: bool
    database_url: str
    #: The providers in use (their client id is set): ``r-series``, ``x-series``.
    providers: list[str]
    lightspeed_oauth_url: str
    lightspeed_api_url: str
    redirect_uri: str
    public_url: str
    encryption_key_id: str
    refresh_schedule: str
    refresh_lease_s: int
    #: X-Series' store URL template and connect page (None when X-Series is not in use).
    lightspeed_x_base_url: str | None = None
    lightspeed_x_connect_url: str | None = None
    #: None: there is no lightkeeper database yet (or it cannot be reached).
    rows_per_key: list[KeyRowsView] | None
    #: The same count for the PKCE verifiers of sign-ins (OAuth states): ``rotate-key`` re-encrypts these too.
    verifiers_per_key: list[KeyRowsView] | None = None


class RotationView(View):
    """``lightkeeper rotate-key --json``: what a key rotation re-encrypted and what it had to leave."""

    primary_key_id: str
    complete: bool = Field(description="Every stored secret is under the primary key: the old keys can go.")
    reencrypted: int = Field(description="Connections whose tokens were re-encrypted.")
    verifiers: int = Field(description="PKCE verifiers of sign-ins re-encrypted.")
    already_current: int
    left_leased: int
    unknown_keys: dict[str, int] = Field(description="Rows per key id that is not configured.")
    tampered: int
    tampered_connections: list[int]
    problems: list[str]


__all__ = [
    "REFRESH_FIELDS",
    "ConfigView",
    "ConnectLinkView",
    "ConnectionStatus",
    "ConnectionView",
    "EventTypeName",
    "EventView",
    "KeyRowsView",
    "RotationView",
    "RunStartedView",
    "RunView",
    "ScheduleView",
    "StockAnswerView",
    "StockRowView",
    "StockView",
    "Timestamp",
    "TokenView",
    "rfc3339",
]

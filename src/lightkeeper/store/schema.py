"""The tables, in SQLAlchemy Core. Dialect differences in queries live in ``dialect.py``.

Names follow the seed guide: ``lightspeed_connections`` keeps the guide's column names; the lease columns
follow APScheduler 4 (``acquired_by`` / ``acquired_until``).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from .dialect import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

connections = Table(
    "lightspeed_connections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    # Which Lightspeed platform (``lightspeed.providers``): ``r-series`` or ``x-series``.
    Column("provider", Text, nullable=False, server_default="r-series"),
    # For R-Series the numeric account id; for X-Series the store's domain_prefix.
    Column("account_id", Text, nullable=False),
    Column("account_name", Text),
    Column("status", Text, nullable=False),
    # Ciphertexts (crypto.TokenCipher), bound to this row's id: never plaintext.
    Column("access_token", Text),
    Column("refresh_token", Text),
    Column("token_expires_at", UTCDateTime),
    Column("last_token_refresh_at", UTCDateTime),
    Column("last_error", Text),
    # Bumped on every token save: the compare-and-swap guard of invariant 1.
    Column("token_version", Integer, nullable=False, server_default="0"),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime),
    # The lease: who holds it (for people), until when (the database's clock), and the fencing token of
    # this one acquisition. Every outcome is written only under the token it was given (invariant 1).
    Column("acquired_by", Text),
    Column("acquired_until", UTCDateTime),
    Column("lease_token", Text),
    # The last run that claimed this row: a run never refreshes a connection twice.
    Column("last_run_id", Integer),
    # The run whose claim the current lease is (NULL for a plain lease, e.g. an on-demand refresh).
    Column("claim_run_id", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The last alert the host app was sent and not yet recovered from (``expired`` | ``error``): a return to
    # ``connected`` sends ``connection.recovered`` only after one of these.
    Column("alert", Text),
    # When the row entered ``error`` (kept through further errors): ``connection.error`` waits on it.
    Column("error_since", UTCDateTime),
    # The provider revokes a refresh token as it issues the next (no grace window): runs refresh the row only
    # when its access token would expire before the next tick, or it has been idle too long (see ``leases``).
    Column("strict_rotation", Boolean, nullable=False, server_default=text("false")),
    UniqueConstraint("user_id", "provider", "account_id", name="uq_lightspeed_connections_user_provider_account"),
    Index("ix_lightspeed_connections_status", "status"),
    # Due-based runs (REFRESH_DUE_AFTER) claim only connections last refreshed before a cutoff.
    Index("ix_lightspeed_connections_last_refresh", "last_token_refresh_at"),
)

runs = Table(
    "lightkeeper_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("connection_id", Integer),
    # The cron tick this run belongs to: unique per job, so one tick starts one run across replicas.
    Column("scheduled_for", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("heartbeat_at", UTCDateTime),
    Column("acquired_by", Text),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("refreshed", Integer, nullable=False, server_default="0"),
    Column("expired", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("message", Text),
    # Processes working on the run now: the last one to leave closes it (a crashed one never leaves;
    # then the stale heartbeat marks the run interrupted).
    Column("participants", Integer, nullable=False, server_default="0"),
    # A due-based run (REFRESH_DUE_AFTER, or `refresh --due`) refreshes only connections last refreshed before
    # this; the others are counted skipped when the run starts. NULL: every refreshable connection.
    Column("due_before", UTCDateTime),
    # Connections of strict rotation are due when their access token expires before ``expiring_before`` or they
    # were last refreshed before ``idle_before``. NULL (a run of one connection): every one is due.
    Column("expiring_before", UTCDateTime),
    Column("idle_before", UTCDateTime),
    UniqueConstraint("job_name", "scheduled_for", name="uq_lightkeeper_runs_tick"),
    Index("ix_lightkeeper_runs_status", "status"),
    # At most one full run of a job at a time, across every process: a second one joins it instead.
    Index(
        "uq_lightkeeper_runs_one_running",
        "job_name",
        unique=True,
        sqlite_where=text("status = 'running' AND connection_id IS NULL"),
        postgresql_where=text("status = 'running' AND connection_id IS NULL"),
    ),
)

jobs = Table(
    "lightkeeper_jobs",
    metadata,
    Column("name", Text, primary_key=True),
    Column("schedule", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("owner", Text, nullable=False, server_default="embedded"),
    Column("updated_at", UTCDateTime, nullable=False),
)

connect_sessions = Table(
    "lightkeeper_connect_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of the one-time link token: a database leak does not hand out live links.
    Column("token_hash", Text, nullable=False, unique=True),
    Column("user_id", Text, nullable=False),
    # The provider the merchant connects to (the confirm page and the authorize URL follow it).
    Column("provider", Text, nullable=False, server_default="r-series"),
    Column("return_to", Text),
    # Shown on the confirm page (whose store the link connects); none: the page shows the user id.
    Column("label", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    # The browser session the link opens (an HttpOnly cookie): its token's sha256 and its end.
    Column("browser_hash", Text, unique=True),
    Column("browser_expires_at", UTCDateTime),
)

oauth_states = Table(
    "lightkeeper_oauth_states",
    metadata,
    Column("state_hash", Text, primary_key=True),
    Column("session_id", Integer, ForeignKey("lightkeeper_connect_sessions.id", ondelete="CASCADE")),
    Column("user_id", Text, nullable=False),
    # The provider whose authorize URL carried this state: the one callback route knows whom to ask.
    Column("provider", Text, nullable=False, server_default="r-series"),
    Column("code_verifier", Text, nullable=False),  # ciphertext
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
)

pacing = Table(
    "lightkeeper_pacing",
    metadata,
    # One row per limiter ("refresh"): the earliest moment, in epoch seconds of the database's clock, at
    # which the next request may be sent. Every process sharing the database takes its slots here.
    Column("name", Text, primary_key=True),
    Column("next_at", Float, nullable=False, server_default="0"),
    # The end of the latest Retry-After hold (same clock): a slot handed out before the hold came is bound by it
    # too, so a sender reads it right before it sends.
    Column("hold_until", Float, nullable=False, server_default="0"),
)

api_buckets = Table(
    "lightkeeper_api_buckets",
    metadata,
    # One row per (OAuth client, account): Lightspeed's leaky bucket and burst window as every process of the
    # deployment has booked them (``lightspeed.bucket``'s state, as JSON), on the database's clock.
    Column("name", Text, primary_key=True),
    Column("state", Text, nullable=False, server_default=""),
)

events = Table(
    "lightkeeper_events",
    metadata,
    Column("id", Text, primary_key=True),  # evt_ + 32 hex: the receiver dedupes on it
    Column("type", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("connection_id", Integer),
    # The exact JSON every attempt sends, fixed when the event is made (never a token or a link).
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime),
    Column("last_attempt_at", UTCDateTime),
    Column("last_error", Text),  # short: the receiver's status or the network error, never the body
    Column("delivered_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    # The delivery lease, fenced like a connection's: one process sends one attempt.
    Column("acquired_by", Text),
    Column("acquired_until", UTCDateTime),
    Column("lease_token", Text),
    Index("ix_lightkeeper_events_status_next", "status", "next_attempt_at"),
)

# The dashboard's state, shared by every ``serve`` behind one load balancer (``store/dashboard.py``): a sign-out
# on one replica is refused by the others, and guesses spread over replicas are counted together.
dashboard_signouts = Table(
    "lightkeeper_dashboard_signouts",
    metadata,
    # sha256 of a signed-out session's id, never the cookie: a copy of the table signs nobody in or out.
    Column("session_hash", Text, primary_key=True),
    # The session's own end: after it the cookie is refused anyway, and the row is pruned.
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_lightkeeper_dashboard_signouts_expires_at", "expires_at"),
)

login_failures = Table(
    "lightkeeper_login_failures",
    metadata,
    # One row per client address with recent wrong keys at the dashboard (its sign-in form and bearer keys).
    Column("address", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    # Tries before this are refused unchecked (429); NULL: not blocked.
    Column("blocked_until", UTCDateTime),
    # Forgetting old addresses, and the oldest ones beyond the bound, walks this index.
    Index("ix_lightkeeper_login_failures_last_at", "last_at"),
)

__all__ = [
    "UTCDateTime",
    "api_buckets",
    "connect_sessions",
    "connections",
    "dashboard_signouts",
    "events",
    "jobs",
    "login_failures",
    "metadata",
    "oauth_states",
    "pacing",
    "runs",
]

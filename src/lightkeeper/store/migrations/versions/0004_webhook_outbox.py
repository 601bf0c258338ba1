"""webhook outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00

``lightkeeper_events`` is the durable outbox of webhook alerts to the host app: an event is written in the
same transaction as the connection change it reports and delivered later under a lease, at least once.
``lightspeed_connections.alert`` remembers the last alert not yet recovered from, ``error_since`` when
the row entered ``error``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lightkeeper.store.dialect import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.add_column(sa.Column("alert", sa.Text(), nullable=True))
        batch.add_column(sa.Column("error_since", UTCDateTime(), nullable=True))
    op.create_table(
        "lightkeeper_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("acquired_by", sa.Text(), nullable=True),
        sa.Column("acquired_until", UTCDateTime(), nullable=True),
        sa.Column("lease_token", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lightkeeper_events")),
    )
    op.create_index("ix_lightkeeper_events_status_next", "lightkeeper_events", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_lightkeeper_events_status_next", table_name="lightkeeper_events")
    op.drop_table("lightkeeper_events")
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.drop_column("error_since")
        batch.drop_column("alert")

"""due-based runs: a run's cutoff, and an index on the last refresh

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 21:40:00

``lightkeeper_runs.due_before``: a due-based run (``REFRESH_DUE_AFTER`` on automatic runs, ``refresh --due``
by hand) refreshes only connections last refreshed before it, stored on the run so every process working on
the run claims by the same cutoff. The index lets the claim query find those connections without reading the
others.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lightkeeper.store.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.add_column(sa.Column("due_before", lightkeeper.store.schema.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_lightspeed_connections_last_refresh", "lightspeed_connections", ["last_token_refresh_at"])


def downgrade() -> None:
    op.drop_index("ix_lightspeed_connections_last_refresh", table_name="lightspeed_connections")
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.drop_column("due_before")

"""fenced leases, shared pacing, run participants

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 18:20:00

A lease is now fenced by a token unique to each acquisition (``lease_token``); ``acquired_by`` stays, for
people; ``claim_run_id`` says which run's claim a lease is (NULL for a plain lease). ``lightkeeper_pacing``
holds the next free send slot of every process sharing the database, and ``lightkeeper_runs.participants``
lets the last process working on a run close it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.add_column(sa.Column("lease_token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("claim_run_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.add_column(sa.Column("participants", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "lightkeeper_pacing",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("next_at", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lightkeeper_pacing")),
    )
    # Leases taken by older code carry no token: they are released, so no row stays held by a process
    # that is gone (every process was stopped before the upgrade).
    op.execute("UPDATE lightspeed_connections SET acquired_by = NULL, acquired_until = NULL")


def downgrade() -> None:
    op.drop_table("lightkeeper_pacing")
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.drop_column("participants")
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.drop_column("claim_run_id")
        batch.drop_column("lease_token")

"""dashboard state: sign-outs and failed sign-ins, shared by every replica

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 09:00:00

Behind a load balancer several ``serve`` replicas answer one operator. Kept in each process's memory, a session
signed out on one replica still opened the dashboard on the others, and a guesser spreading wrong keys over the
replicas was counted by each apart (so waited less). ``lightkeeper_dashboard_signouts`` holds the sha256 of each
signed-out session's id (never the cookie) until the session would have ended; ``lightkeeper_login_failures``
holds each client address's recent wrong keys and how long it must wait. Both are small: expired rows are
pruned as new ones come, and neither holds more than a bounded number of rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lightkeeper.store.dialect import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lightkeeper_dashboard_signouts",
        sa.Column("session_hash", sa.Text(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_lightkeeper_dashboard_signouts")),
    )
    op.create_index("ix_lightkeeper_dashboard_signouts_expires_at", "lightkeeper_dashboard_signouts", ["expires_at"])
    op.create_table(
        "lightkeeper_login_failures",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("blocked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_lightkeeper_login_failures")),
    )
    op.create_index("ix_lightkeeper_login_failures_last_at", "lightkeeper_login_failures", ["last_at"])


def downgrade() -> None:
    op.drop_index("ix_lightkeeper_login_failures_last_at", table_name="lightkeeper_login_failures")
    op.drop_table("lightkeeper_login_failures")
    op.drop_index("ix_lightkeeper_dashboard_signouts_expires_at", table_name="lightkeeper_dashboard_signouts")
    op.drop_table("lightkeeper_dashboard_signouts")

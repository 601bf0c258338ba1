"""connect link label

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 12:00:00

A connect link may carry a label from the host app (shown on the confirm page, so a merchant sees whose
store a forwarded link would connect). Existing links have none: the page shows their user id instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lightkeeper_connect_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lightkeeper_connect_sessions", schema=None) as batch_op:
        batch_op.drop_column("label")

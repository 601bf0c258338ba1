"""pacing hold: the end of the latest Retry-After hold, apart from the next slot

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:00:00

``lightkeeper_pacing.hold_until``: a token endpoint's ``Retry-After`` holds every process, including the
requests whose slots were handed out before it came; a sender reads it right before it sends. ``next_at``
alone could not say whether a later slot was due to a hold or to the slots booked ahead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lightkeeper_pacing") as batch:
        batch.add_column(sa.Column("hold_until", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("lightkeeper_pacing") as batch:
        batch.drop_column("hold_until")

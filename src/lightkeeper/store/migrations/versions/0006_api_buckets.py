"""api buckets: each account's Lightspeed API limits, shared by every process

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00

``lightkeeper_api_buckets`` holds one row per (OAuth client, account): the leaky bucket and burst window that
the proxy, update-stock and the Python client book before every API request, so that every process of a
deployment paces one account's requests as the one client Lightspeed sees.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lightkeeper_api_buckets",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("lightkeeper_api_buckets")

"""providers: a connection's provider, its rotation discipline, and a run's cutoffs for strict rotation

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 13:00:00

``lightspeed_connections.provider`` (``r-series`` for every existing row) says which Lightspeed platform a
connection belongs to; a connection is unique per (user, provider, account), so the same account id on two
platforms is two connections. ``strict_rotation`` is true for a provider that revokes a refresh token the moment
it issues the next one (no grace window): runs refresh such connections only when needed (``expiring_before``,
``idle_before`` on the run, the same for every process working on it). Connect sessions and OAuth states record
the provider that started the flow, so one callback serves every provider.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lightkeeper.store.schema

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WHEN = lightkeeper.store.schema.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.add_column(sa.Column("provider", sa.Text(), nullable=False, server_default="r-series"))
        batch.add_column(sa.Column("strict_rotation", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.drop_constraint("uq_lightspeed_connections_user_account", type_="unique")
        batch.create_unique_constraint(
            "uq_lightspeed_connections_user_provider_account", ["user_id", "provider", "account_id"]
        )
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.add_column(sa.Column("expiring_before", _WHEN, nullable=True))
        batch.add_column(sa.Column("idle_before", _WHEN, nullable=True))
    with op.batch_alter_table("lightkeeper_connect_sessions") as batch:
        batch.add_column(sa.Column("provider", sa.Text(), nullable=False, server_default="r-series"))
    with op.batch_alter_table("lightkeeper_oauth_states") as batch:
        batch.add_column(sa.Column("provider", sa.Text(), nullable=False, server_default="r-series"))


def downgrade() -> None:
    with op.batch_alter_table("lightkeeper_oauth_states") as batch:
        batch.drop_column("provider")
    with op.batch_alter_table("lightkeeper_connect_sessions") as batch:
        batch.drop_column("provider")
    with op.batch_alter_table("lightkeeper_runs") as batch:
        batch.drop_column("idle_before")
        batch.drop_column("expiring_before")
    op.execute("DELETE FROM lightspeed_connections WHERE provider <> 'r-series'")
    with op.batch_alter_table("lightspeed_connections") as batch:
        batch.drop_constraint("uq_lightspeed_connections_user_provider_account", type_="unique")
        batch.create_unique_constraint("uq_lightspeed_connections_user_account", ["user_id", "account_id"])
        batch.drop_column("strict_rotation")
        batch.drop_column("provider")

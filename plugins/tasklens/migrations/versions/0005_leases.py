"""Leader leases: one killed-task reconciler across api-server workers and replicas.

Every api-server worker starts a reconciler; only the holder of the ``reconciler`` lease runs passes. The holder
renews it each pass; another process takes it over once ``expires_at`` has passed. ``expires_at`` is epoch seconds
by the database's own clock (set and compared in SQL), so the hosts' clocks do not have to agree.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasklens_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tasklens_leases")

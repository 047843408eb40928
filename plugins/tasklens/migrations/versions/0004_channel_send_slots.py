"""One send schedule per channel, shared by every dispatcher.

Each api-server worker runs a dispatcher, and ``tasklens dispatch`` may run next to them. Claims already keep them
from sending a delivery twice; this table keeps them from exceeding a channel's rate limit together: a dispatcher
sends to a channel only after taking its next send slot here (``next_allowed_at``), and a 429's Retry-After pushes
that time back for all of them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasklens_channel_slots",
        sa.Column("channel", sa.String(250), primary_key=True),
        sa.Column("next_allowed_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tasklens_channel_slots")

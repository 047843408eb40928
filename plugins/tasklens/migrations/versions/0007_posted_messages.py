"""Where each alert's message went: a Slack channel id and ts per alert and channel (tasklens.posted_messages).

A resolve, or an acknowledgement made elsewhere, then updates the message instead of posting another.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasklens_posted_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(250), nullable=False),
        sa.Column("message_channel", sa.String(250), nullable=False),
        sa.Column("message_ts", sa.String(64), nullable=False),
        sa.Column("posted_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("alert_id", "channel", name="uq_tasklens_posted_messages_alert_id_channel"),
    )
    op.create_index("ix_tasklens_posted_messages_channel_message_ts", "tasklens_posted_messages",
                    ["channel", "message_ts"])


def downgrade() -> None:
    op.drop_table("tasklens_posted_messages")

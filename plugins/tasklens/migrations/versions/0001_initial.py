"""The first tasklens store schema: alerts, occurrences, deliveries (outbox), events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasklens_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("template", sa.String(200), nullable=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=True),
        sa.Column("max_tries", sa.Integer, nullable=True),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("exception_type", sa.String(250), nullable=True),
        sa.Column("exception_message", sa.String(2000), nullable=True),
        sa.Column("log_url", sa.Text, nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("routes", sa.JSON, nullable=False),
        sa.Column("acked_by", sa.String(250), nullable=True),
        sa.Column("acked_at", sa.DateTime, nullable=True),
        sa.Column("resolved_by", sa.String(250), nullable=True),
        sa.Column("resolved_at", sa.DateTime, nullable=True),
        sa.Column("muted_until", sa.DateTime, nullable=True),
        sa.Column("undelivered", sa.Boolean, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_notified_at", sa.DateTime, nullable=True),
        sa.Column("escalate_at", sa.DateTime, nullable=True),
        sa.Column("escalated_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasklens_alerts"),
        sa.UniqueConstraint("open_key", name="uq_tasklens_alerts_open_key"),
    )
    for columns in (
        ("status", "last_seen"),
        ("severity", "last_seen"),
        ("dag_id", "last_seen"),
        ("last_seen",),
        ("fingerprint",),
        ("dag_id", "task_id", "rule"),
        ("escalate_at",),
    ):
        op.create_index(f"ix_tasklens_alerts_{'_'.join(columns)}", "tasklens_alerts", list(columns))

    op.create_table(
        "tasklens_occurrences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=True),
        sa.Column("occurred_at", sa.String(40), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("exception_type", sa.String(250), nullable=True),
        sa.Column("exception_message", sa.String(2000), nullable=True),
        sa.Column("discriminator", sa.String(80), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasklens_occurrences"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["tasklens_alerts.id"], name="fk_tasklens_occurrences_alert_id_tasklens_alerts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "rule", "dag_id", "task_id", "run_id", "map_index", "try_number", "discriminator",
            name="uq_tasklens_occurrences_attempt",
        ),
    )
    op.create_index("ix_tasklens_occurrences_alert_id", "tasklens_occurrences", ["alert_id"])

    op.create_table(
        "tasklens_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("channel_type", sa.String(20), nullable=False),
        sa.Column("group_key", sa.String(500), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_attempt_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_until", sa.DateTime, nullable=True),
        sa.Column("sent_at", sa.DateTime, nullable=True),
        sa.Column("batch_id", sa.String(40), nullable=True),
        sa.Column("fallback_channels", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasklens_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["tasklens_alerts.id"], name="fk_tasklens_deliveries_alert_id_tasklens_alerts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_tasklens_deliveries_state_next_attempt_at", "tasklens_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_tasklens_deliveries_alert_id", "tasklens_deliveries", ["alert_id"])
    op.create_index(
        "ix_tasklens_deliveries_channel_group_key_state", "tasklens_deliveries", ["channel", "group_key", "state"]
    )

    op.create_table(
        "tasklens_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasklens_events"),
        sa.UniqueConstraint(
            "dag_id", "task_id", "run_id", "map_index", "try_number", "event",
            name="uq_tasklens_events_attempt",
        ),
    )
    op.create_index(
        "ix_tasklens_events_dag_id_task_id_event_id", "tasklens_events", ["dag_id", "task_id", "event", "id"]
    )
    op.create_index("ix_tasklens_events_ts", "tasklens_events", ["ts"])


def downgrade() -> None:
    op.drop_table("tasklens_events")
    op.drop_table("tasklens_deliveries")
    op.drop_table("tasklens_occurrences")
    op.drop_table("tasklens_alerts")

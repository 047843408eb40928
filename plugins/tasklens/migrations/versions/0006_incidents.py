"""Incidents: failures across DAGs that share a cause (tasklens.incident_store).

``tasklens_incidents`` holds one row per incident (its signature, dependency, counts, who acknowledged it, the
messages each channel got); ``tasklens_incident_members`` ties each failure alert to at most one incident.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
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
        "tasklens_incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("signature_hash", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(400), nullable=False),
        sa.Column("dependency", sa.String(260), nullable=True),
        sa.Column("failure_class", sa.String(16), nullable=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("members", sa.Integer, nullable=False),
        sa.Column("dags", sa.Integer, nullable=False),
        sa.Column("acked_by", sa.String(250), nullable=True),
        sa.Column("acked_at", sa.DateTime, nullable=True),
        sa.Column("resolved_at", sa.DateTime, nullable=True),
        sa.Column("messages", sa.JSON, nullable=False),
    )
    op.create_index("ix_tasklens_incidents_status_last_seen", "tasklens_incidents", ["status", "last_seen"])
    op.create_index("ix_tasklens_incidents_signature_hash_last_seen", "tasklens_incidents",
                    ["signature_hash", "last_seen"])
    op.create_index("ix_tasklens_incidents_dependency_last_seen", "tasklens_incidents", ["dependency", "last_seen"])
    op.create_index("ix_tasklens_incidents_last_seen", "tasklens_incidents", ["last_seen"])
    op.create_table(
        "tasklens_incident_members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("tasklens_incidents.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("alert_id", name="uq_tasklens_incident_members_alert_id"),
    )
    op.create_index("ix_tasklens_incident_members_incident_id_id", "tasklens_incident_members", ["incident_id", "id"])
    op.create_index("ix_tasklens_incident_members_dag_id_incident_id", "tasklens_incident_members",
                    ["dag_id", "incident_id"])


def downgrade() -> None:
    op.drop_table("tasklens_incident_members")
    op.drop_table("tasklens_incidents")

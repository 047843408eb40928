"""Indexes of the UI's reads (tasklens.ui.queries), so the Alerts page stays fast with 100,000+ alerts.

- alerts (status, severity, dag_id): the summary's counts by status, severity and DAG read this index alone,
  also under a user's per-DAG filter;
- events (outcome, ts, dag_id): the failures-per-hour chart reads this index alone, also under the per-DAG filter
  (a covering extension of (outcome, ts));
- occurrences (dag_id, task_id, run_id, map_index): the task-instance tab finds the alerts one task instance raised.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_tasklens_alerts_status_severity_dag_id", "tasklens_alerts", ["status", "severity", "dag_id"]
    )
    op.create_index("ix_tasklens_events_outcome_ts_dag_id", "tasklens_events", ["outcome", "ts", "dag_id"])
    op.create_index(
        "ix_tasklens_occurrences_dag_id_task_id_run_id_map_index",
        "tasklens_occurrences",
        ["dag_id", "task_id", "run_id", "map_index"],
    )


def downgrade() -> None:
    op.drop_index("ix_tasklens_occurrences_dag_id_task_id_run_id_map_index", "tasklens_occurrences")
    op.drop_index("ix_tasklens_events_outcome_ts_dag_id", "tasklens_events")
    op.drop_index("ix_tasklens_alerts_status_severity_dag_id", "tasklens_alerts")

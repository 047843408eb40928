"""One failure outcome per task attempt; the store remembers when it started watching.

The worker listener, the scheduler listener, the dag-processor's (doubled) failure callback and the
reconciler may each report the same failed attempt, as ``failed``, ``up_for_retry`` or ``killed``.
``outcome`` is ``"failure"`` for those events and NULL otherwise; a unique index on the attempt plus
``outcome`` lets exactly one of them through, whichever process writes first.

``tasklens_meta`` holds ``watching_since``: the reconciler never reports failures older than the store,
so installing tasklens does not turn the last hours of ordinary failures into "killed" alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ATTEMPT = ["dag_id", "task_id", "run_id", "map_index", "try_number"]


def upgrade() -> None:
    op.add_column("tasklens_events", sa.Column("outcome", sa.String(16), nullable=True))
    op.execute(
        "UPDATE tasklens_events SET outcome = 'failure' "
        "WHERE event IN ('failed', 'up_for_retry', 'killed') AND id IN ("
        "  SELECT MIN(id) FROM tasklens_events WHERE event IN ('failed', 'up_for_retry', 'killed') "
        "  GROUP BY dag_id, task_id, run_id, map_index, try_number)"
    )
    op.create_index("uq_tasklens_events_attempt_outcome", "tasklens_events", [*ATTEMPT, "outcome"], unique=True)
    op.create_index("ix_tasklens_events_outcome_ts", "tasklens_events", ["outcome", "ts"])
    meta = op.create_table(
        "tasklens_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    op.bulk_insert(meta, [{"key": "watching_since", "value": datetime.now(timezone.utc).isoformat()}])


def downgrade() -> None:
    op.drop_table("tasklens_meta")
    op.drop_index("ix_tasklens_events_outcome_ts", "tasklens_events")
    op.drop_index("uq_tasklens_events_attempt_outcome", "tasklens_events")
    op.drop_column("tasklens_events", "outcome")

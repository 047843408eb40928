"""The store's tables, their column types and the limits writes fit into (the schema migrations build).

Tables (all prefixed ``tasklens_``; the migrations under ``tasklens/migrations`` create them):

- ``alerts``: one record per problem (fingerprint) while it is open; later occurrences fold into it.
- ``occurrences``: one row per (rule, dag_id, task_id, run_id, map_index, try_number): whoever reports an attempt
  (worker listener, scheduler listener, the dag-processor's double callback, the reconciler), it counts once.
- ``deliveries``: the outbox, one row per alert per channel per message kind, with its delivery state.
- ``events``: terminal TaskEvents (for the UI tab and the recent durations of the duration rule).
- ``meta``, ``channel_slots``, ``leases``: when the store started watching, channel rate slots, leader leases.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from tasklens.alerts import Status

__all__ = [
    "ALERT_KEY_CHARS",
    "DELIVERY_KEY_CHARS",
    "DELIVERY_STATES",
    "DISCRIMINATOR_CHARS",
    "EVENT_KEY_CHARS",
    "FAILURE_EVENTS",
    "HEAD_REVISION",
    "LIVE_STATES",
    "MAX_ERROR",
    "MAX_EXCEPTION_MESSAGE",
    "MAX_SUMMARY",
    "MAX_TITLE",
    "OCCURRED_AT_CHARS",
    "TERMINAL_EVENTS",
    "UNRESOLVED",
    "VERSION_TABLE",
    "UTCDateTime",
    "alerts_table",
    "channel_slots_table",
    "deliveries_table",
    "events_table",
    "leases_table",
    "meta_table",
    "metadata",
    "occurrences_table",
]

#: The newest migration in ``tasklens/migrations/versions``; a unit test keeps the two in step.
HEAD_REVISION = "0007"
VERSION_TABLE = "tasklens_alembic_version"
DELIVERY_STATES = ("pending", "sent", "failed", "dead")
#: Delivery states that still lead to a message (the channel "got or will get" the alert).
LIVE_STATES = ("pending", "sent", "failed")
UNRESOLVED = (Status.OPEN.value, Status.ACKNOWLEDGED.value, Status.MUTED.value)
TERMINAL_EVENTS = ("success", "failed", "up_for_retry", "skipped", "killed")
#: Events that end an attempt in failure; only the first report of an attempt among them raises alerts.
FAILURE_EVENTS = ("failed", "up_for_retry", "killed")

MAX_TITLE = 500
MAX_SUMMARY = 4_000
MAX_EXCEPTION_MESSAGE = 2_000
MAX_ERROR = 2_000


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones): stored naive UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

alerts_table = sa.Table(
    "tasklens_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The fingerprint while the alert is unresolved, NULL after: UNIQUE makes "one open alert per fingerprint"
    # hold across processes (NULLs are distinct on SQLite and PostgreSQL).
    sa.Column("open_key", sa.String(64), nullable=True, unique=True),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("title", sa.String(MAX_TITLE), nullable=False),
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("template", sa.String(200), nullable=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("map_index", sa.Integer, nullable=False, default=-1),
    sa.Column("try_number", sa.Integer, nullable=True),
    sa.Column("max_tries", sa.Integer, nullable=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False, default=1),
    sa.Column("exception_type", sa.String(250), nullable=True),
    sa.Column("exception_message", sa.String(MAX_EXCEPTION_MESSAGE), nullable=True),
    sa.Column("log_url", sa.Text, nullable=True),
    sa.Column("labels", sa.JSON, nullable=False, default=dict),
    sa.Column("data", sa.JSON, nullable=False, default=dict),
    sa.Column("routes", sa.JSON, nullable=False, default=list),
    sa.Column("acked_by", sa.String(250), nullable=True),
    sa.Column("acked_at", UTCDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(250), nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("muted_until", UTCDateTime, nullable=True),
    sa.Column("undelivered", sa.Boolean, nullable=False, default=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_notified_at", UTCDateTime, nullable=True),
    sa.Column("escalate_at", UTCDateTime, nullable=True),
    sa.Column("escalated_at", UTCDateTime, nullable=True),
    sa.Index(None, "status", "last_seen"),
    sa.Index(None, "severity", "last_seen"),
    sa.Index(None, "dag_id", "last_seen"),
    sa.Index(None, "last_seen"),
    sa.Index(None, "fingerprint"),
    sa.Index(None, "dag_id", "task_id", "rule"),
    sa.Index(None, "escalate_at"),
    sa.Index(None, "status", "severity", "dag_id"),  # the UI's counts, index-only (migration 0003)
)

occurrences_table = sa.Table(
    "tasklens_occurrences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=True),
    sa.Column("occurred_at", sa.String(40), nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("exception_type", sa.String(250), nullable=True),
    sa.Column("exception_message", sa.String(MAX_EXCEPTION_MESSAGE), nullable=True),
    # "" for rule-raised alerts; the fingerprint for custom alerts, so two different alerts raised by one attempt
    # both count while the same one reported twice (a notifier in the doubled callback) counts once.
    sa.Column("discriminator", sa.String(80), nullable=False, default=""),
    sa.UniqueConstraint(
        "rule", "dag_id", "task_id", "run_id", "map_index", "try_number", "discriminator",
        name="uq_tasklens_occurrences_attempt",  # explicit: PostgreSQL truncates names past 63 characters
    ),
    sa.Index(None, "alert_id"),
    sa.Index(None, "dag_id", "task_id", "run_id", "map_index"),  # the UI's task-instance tab (migration 0003)
)

deliveries_table = sa.Table(
    "tasklens_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # alert | repeat | escalation | fallback | resolve
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("channel_type", sa.String(20), nullable=False),
    sa.Column("group_key", sa.String(500), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("batch_id", sa.String(40), nullable=True),  # deliveries sent together as one message (a digest)
    sa.Column("fallback_channels", sa.JSON, nullable=False, default=list),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "alert_id"),
    sa.Index(None, "channel", "group_key", "state"),
)

events_table = sa.Table(
    "tasklens_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    # "failure" for failed / up_for_retry / killed, NULL otherwise: one failure outcome per attempt (0002).
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.UniqueConstraint(
        "dag_id", "task_id", "run_id", "map_index", "try_number", "event", name="uq_tasklens_events_attempt"
    ),
    sa.Index(None, "dag_id", "task_id", "event", "id"),
    sa.Index(None, "ts"),
    sa.Index(
        "uq_tasklens_events_attempt_outcome",
        "dag_id", "task_id", "run_id", "map_index", "try_number", "outcome",
        unique=True,
    ),
    sa.Index("ix_tasklens_events_outcome_ts", "outcome", "ts"),
    sa.Index(None, "outcome", "ts", "dag_id"),  # the UI's failures-per-hour chart, index-only (migration 0003)
)


meta_table = sa.Table(
    "tasklens_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)


channel_slots_table = sa.Table(
    "tasklens_channel_slots",
    metadata,
    sa.Column("channel", sa.String(250), primary_key=True),
    sa.Column("next_allowed_at", UTCDateTime, nullable=False),  # no dispatcher sends to the channel before
)


leases_table = sa.Table(
    "tasklens_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # what is led ("reconciler")
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds by the database's clock (migration 0005)
)


def _column_chars(table: sa.Table, *names: str) -> dict[str, int]:
    return {name: int(table.c[name].type.length) for name in names}  # type: ignore[attr-defined]


ALERT_KEY_CHARS = _column_chars(alerts_table, "fingerprint", "rule", "dag_id", "task_id", "run_id", "template")
EVENT_KEY_CHARS = _column_chars(events_table, "dag_id", "task_id", "run_id")
DELIVERY_KEY_CHARS = _column_chars(deliveries_table, "route", "channel", "channel_type", "group_key")
DISCRIMINATOR_CHARS = int(occurrences_table.c.discriminator.type.length)  # type: ignore[attr-defined]
OCCURRED_AT_CHARS = int(occurrences_table.c.occurred_at.type.length)  # type: ignore[attr-defined]

"""The alert data model shared by rules, routing, the store and the channels (pure data, no I/O)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "Alert", "AlertKind", "AlertSnapshot", "Delivery", "Notification", "PostedMessage", "Severity", "Status",
    "fingerprint",
]


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ("info", "warning", "critical").index(self.value)


class Status(str, enum.Enum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    MUTED = "muted"


class AlertKind(str, enum.Enum):
    FAILURE = "failure"  # final failure of a task attempt
    RETRY = "retry"  # attempt failed, a retry is scheduled
    KILLED = "killed"  # attempt killed outside Python (SIGKILL/OOM, worker lost, heartbeat timeout)
    DURATION = "duration"  # task ran longer than its threshold
    OVERRUN = "overrun"  # an attempt still running is far past its usual duration
    STUCK = "stuck"  # an attempt has waited in queued / scheduled too long
    DEADLINE = "deadline"  # a DAG run is forecast to miss its deadline, or missed it
    LATE = "late"  # a scheduled DAG run has not started in time
    HEARTBEAT = "heartbeat"  # an Airflow component stopped heartbeating
    METRIC = "metric"  # a task-emitted metric crossed its threshold
    CUSTOM = "custom"  # raised by task code (tasklens.alert / AlertOperator)
    RESOLVE = "resolve"  # the condition behind earlier alerts of this fingerprint cleared


def fingerprint(*parts: Any) -> str:
    """Stable identity of "the same problem": dag_id + task_id + rule (+ exception type for failures)."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8", errors="replace")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert occurrence produced by a rule. The store folds occurrences with the same
    ``fingerprint`` into one alert record; ``kind == RESOLVE`` closes the open record instead."""

    fingerprint: str
    rule: str
    kind: AlertKind
    severity: Severity
    title: str
    summary: str
    dag_id: str
    task_id: str | None = None
    run_id: str | None = None
    map_index: int = -1
    try_number: int | None = None
    max_tries: int | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    log_url: str | None = None
    template: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    occurred_at: str = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def failure_class(self) -> str | None:
        """infra, timeout, dependency, data, code or upstream (:mod:`tasklens.failures`); None unless a failure.
        Kept in ``labels``, so the store keeps it and routes can group by it."""
        return self.labels.get("failure_class")

    @property
    def occurrence_key(self) -> tuple[str, str, str | None, str | None, int, int | None]:
        """One occurrence per task attempt and rule, whoever reports it (listener, callback, reconciler)."""
        return (self.rule, self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Where routing sends an alert: one channel target, with the route's timing knobs."""

    route: str
    channel: str  # channel name from the rules file, e.g. "slack_data_eng"
    channel_type: str  # "slack" | "email"
    group_key: str  # alerts with the same key within group_wait_s go out as one digest
    group_wait_s: float = 0.0
    repeat_interval_s: float = 3600.0
    escalate_after_s: float | None = None
    escalation_channels: tuple[str, ...] = ()
    fallback_channels: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class AlertSnapshot:
    """What a message shows about one stored alert: its latest occurrence and its record's state."""

    id: int
    alert: Alert
    status: Status
    occurrences: int
    first_seen: str
    last_seen: str
    alert_url: str | None = None  # the tasklens UI page of this alert


@dataclasses.dataclass(frozen=True)
class PostedMessage:
    """Where a channel put a message it can change later: Slack's channel id and message ``ts`` (bot tokens)."""

    channel: str
    ts: str


@dataclasses.dataclass(frozen=True)
class Notification:
    """One message to one channel. ``digest`` groups several alerts of one DAG run (group_wait)."""

    kind: str  # "alert" | "digest" | "resolve" | "escalation" | "test"
    channel: str
    items: tuple[AlertSnapshot, ...]
    #: The same on every send of this message (derived from its deliveries): channels that take an idempotency
    #: key pass it on (email: Message-ID), so a message sent again after a dispatcher crash can be recognised.
    idempotency_key: str | None = None
    #: The reader's language and timezone (the route's, else the channel's ``locale``/``timezone``); None: English, UTC.
    locale: str | None = None
    timezone: str | None = None
    #: Set when ``items`` are members of one incident (``tasklens.incident_store.Incident.view``): the message names
    #: the incident and counts the members it does not list.
    incident: Mapping[str, Any] | None = None
    #: The channel's own id of an earlier message to reply under (a Slack thread's ``ts``).
    thread: str | None = None
    #: An earlier message to replace with this one (Slack ``chat.update``); a channel that cannot, or finds it
    #: gone, posts a new message instead.
    replace: PostedMessage | None = None

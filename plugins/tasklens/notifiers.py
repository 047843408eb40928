"""Airflow notifiers that go through tasklens: ``on_failure_callback=[TasklensSlackNotifier(...)]``.

They are thin templated config objects (like the Slack provider's ``SlackWebhookNotifier``), but they never post
inline: ``notify`` turns the callback context into a TaskEvent and records a custom alert addressed to their channel
in the alert store. The dispatcher delivers it, so the message gets the store's dedup (the dag-processor's doubled
failure callback counts once), retries with backoff, rate limits and fallback, and the callback returns in
milliseconds even when Slack or the SMTP server is down::

    from tasklens.notifiers import TasklensSlackNotifier

    @task(on_failure_callback=[TasklensSlackNotifier(title="Load failed: {{ ti.task_id }}", severity="critical")])
    def load(): ...

``channel`` names a channel of the rules file (``slack``/``email`` are the built-in ones). Like every notifier,
an instance is rendered in place: do not share one instance between callbacks of different tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from tasklens import callbacks, events, pipeline

__all__ = ["TasklensEmailNotifier", "TasklensNotifier", "TasklensSlackNotifier"]

log = logging.getLogger(__name__)


class TasklensNotifier(BaseNotifier):
    """Record a custom alert for ``channel`` from a task/DAG callback context. Never raises."""

    template_fields: Sequence[str] = ("title", "severity", "data")
    default_channel = "slack"

    def __init__(
        self,
        *,
        title: str = "{{ ti.dag_id }}.{{ ti.task_id }} failed",
        severity: str = "critical",
        template: str | None = None,
        channel: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.title = title
        self.severity = severity
        self.template = template
        self.channel = channel or self.default_channel
        self.data = dict(data or {})

    def _event(self, context: Mapping[str, Any]) -> Any:
        if context.get("ti") is None and context.get("task_instance") is None:
            return events.from_context("failed", context, source="callback")
        return callbacks._event_from_failure_context(context)

    def notify(self, context: Any) -> None:
        """Record the alert in the store (outbox); the dispatcher sends it."""

        event = pipeline.run_stage("notifier.event", self._event, context)
        data = {**self.data, pipeline.NOTIFY_CHANNELS_KEY: [self.channel]}
        if event is not None and event.exception_type:
            data.setdefault("exception", f"{event.exception_type}: {event.exception_message or ''}".strip())
        pipeline.raise_custom_alert(str(self.title), str(self.severity), self.template, data, context=event)


class TasklensSlackNotifier(TasklensNotifier):
    """A tasklens alert to Slack (channel ``slack`` of the rules file by default)."""

    default_channel = "slack"


class TasklensEmailNotifier(TasklensNotifier):
    """A tasklens alert by email (channel ``email`` of the rules file by default)."""

    default_channel = "email"

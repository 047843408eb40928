"""``AlertOperator``: an explicit alert step in a DAG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from tasklens import events, pipeline
from tasklens.api import check_alert_arguments

__all__ = ["AlertOperator"]


class AlertOperator(BaseOperator):
    """Record a tasklens alert when this task runs (``title``, ``severity``, ``template`` and ``data`` are
    templated). The alert is stored at once and delivered by the dispatcher; the task does not wait for Slack::

        AlertOperator(task_id="drift_alert", title="Drift {{ ds }}", severity="warning",
                      data={"score": "{{ ti.xcom_pull('score') }}"})

    An unknown ``severity`` or ``template`` raises :class:`~tasklens.exceptions.ConfigError` naming the fix: when
    the DAG is parsed if the value is literal, else when the task runs (the task fails; nothing is dropped
    silently).
    """

    template_fields: Sequence[str] = ("title", "severity", "template", "data")
    ui_color = "#f6c26b"

    def __init__(
        self,
        *,
        title: str,
        severity: str = "warning",
        template: str | None = None,
        data: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.severity = severity
        self.template = template
        self.data = dict(data or {})
        if not _is_templated(severity) and not _is_templated(template):
            check_alert_arguments(severity, template, where=f"AlertOperator {self.task_id!r}")

    def execute(self, context: Any) -> None:
        severity, template = check_alert_arguments(self.severity, self.template,
                                                   where=f"AlertOperator {self.task_id!r}")
        event = pipeline.run_stage("alerts.context", events.from_context, "running", context, source="worker")
        pipeline.raise_custom_alert(str(self.title), severity, template, dict(self.data), context=event)


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)

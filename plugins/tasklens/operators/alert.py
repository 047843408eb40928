"""``AlertOperator``: an explicit alert step in a DAG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

__all__ = ["AlertOperator"]


class AlertOperator(BaseOperator):
    """Record a tasklens alert when this task runs (``title``, ``severity``, ``template`` and ``data`` are
    templated). The alert is stored at once and delivered by the dispatcher; the task does not wait for Slack::

        AlertOperator(task_id="drift_alert", title="Drift {{ ds }}", severity="warning",
                      data={"score": "{{ ti.xcom_pull('score') }}"})
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

    def execute(self, context: Any) -> None:
        from tasklens import events, pipeline

        event = pipeline.run_stage("alerts.context", events.from_context, "running", context, source="worker")
        pipeline.raise_custom_alert(str(self.title), str(self.severity), self.template, dict(self.data),
                                    context=event)

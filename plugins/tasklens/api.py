"""What task code calls: ``tasklens.alert(...)``."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["alert"]

log = logging.getLogger(__name__)


def _current_event() -> Any:
    """The running task as a TaskEvent, or None outside a task."""
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:
        return None
    from tasklens import events

    return events.from_context("running", context, source="worker")


def alert(title: str, *, severity: str = "warning", template: str | None = None, **data: Any) -> None:
    """Raise an alert from task code; it is stored at once and delivered by the dispatcher.

    ``severity`` is ``info``, ``warning`` or ``critical``; ``template`` names a message template
    (``templates_dir``); every other keyword is data shown in the message. Never raises and never waits for
    Slack or SMTP::

        tasklens.alert("Model drift", severity="warning", template="ml_model_drift", drift_score=0.85)
    """
    from tasklens import pipeline

    event = pipeline.run_stage("alerts.context", _current_event)
    pipeline.raise_custom_alert(title, severity, template, data, context=event)

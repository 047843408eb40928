"""What task code calls: ``tasklens.alert(...)``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasklens import config, events, pipeline
from tasklens.alerts import Severity
from tasklens.exceptions import ConfigError

__all__ = ["alert", "check_alert_arguments"]

log = logging.getLogger(__name__)

_SEVERITIES = tuple(s.value for s in Severity)
_BUILTIN_TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def _current_event() -> Any:
    """The running task as a TaskEvent, or None outside a task."""
    try:
        from airflow.sdk import get_current_context  # noqa: PLC0415 - Airflow's task SDK: only inside a running task

        context = get_current_context()
    except Exception:
        return None

    return events.from_context("running", context, source="worker")


def _template_names(templates_dir: Path | None) -> list[str]:
    names = {path.stem for path in _BUILTIN_TEMPLATES_DIR.glob("*.j2") if not path.name.startswith("_")}
    if templates_dir is not None:
        names |= {path.stem for path in templates_dir.glob("*.j2")}
    return sorted(names)


def check_alert_arguments(severity: Any, template: Any, *, where: str = "tasklens.alert()") -> tuple[str, str | None]:
    """``(severity, template)`` of an explicit alert, normalised; raises :class:`ConfigError` naming the argument
    and the fix for an unknown severity or a template that is neither built in nor in ``[tasklens] templates_dir``.
    """
    severity_text = str(getattr(severity, "value", severity)).strip().lower()
    if severity_text not in _SEVERITIES:
        raise ConfigError(where, "severity", f"unknown severity {severity!r}", f"use one of: {', '.join(_SEVERITIES)}")
    if template is None or template == "":
        return severity_text, None
    name = str(template).strip()
    templates_dir = config.templates_dir()
    known = _template_names(templates_dir)
    if name not in known:
        place = f"built in or in [tasklens] templates_dir ({templates_dir})" if templates_dir else "built in"
        raise ConfigError(
            where, "template", f"unknown template {template!r} (no {name}.j2 {place})",
            f"use one of: {', '.join(known)}, or add {name}.j2 to [tasklens] templates_dir",
        )
    return severity_text, name


def alert(title: str, *, severity: str = "warning", template: str | None = None, **data: Any) -> None:
    """Raise an alert from task code; it is stored at once and delivered by the dispatcher.

    ``severity`` is ``info``, ``warning`` or ``critical``; ``template`` names a message template (built in, or a
    ``<name>.j2`` in ``[tasklens] templates_dir``); every other keyword is data shown in the message::

        tasklens.alert("Model drift", severity="warning", template="ml_model_drift", drift_score=0.85)

    Raises :class:`~tasklens.exceptions.ConfigError` for an unknown severity or template (your call, so it fails
    loudly); otherwise never raises and never waits for Slack or SMTP.
    """

    severity_text, template_name = check_alert_arguments(severity, template)
    event = pipeline.run_stage("alerts.context", _current_event)
    pipeline.raise_custom_alert(title, severity_text, template_name, data, context=event)

"""The only place the tasklens stages are wired together.

``handle(event)`` runs each stage in turn: bind into the task log, append to the event stream,
emit StatsD metrics, turn the event into alerts and persist them to the store (outbox). Each
stage is isolated: one that raises is logged once, counted in ``tasklens.errors{stage=...}``
and skipped; the others still run, and the task's state is never affected.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tasklens.events import TaskEvent

__all__ = ["ERROR_COUNTS", "handle", "handle_metric", "raise_custom_alert", "run_stage"]

log = logging.getLogger(__name__)

#: Failures per stage in this process; also sent as ``tasklens.errors`` with a ``stage`` label.
ERROR_COUNTS: collections.Counter[str] = collections.Counter()
_warned: set[str] = set()
_warn_lock = threading.Lock()


def run_stage(stage: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; on any error log a warning (once per stage and process), count it, return None."""
    try:
        return func(*args, **kwargs)
    except Exception:
        ERROR_COUNTS[stage] += 1
        with _warn_lock:
            first = stage not in _warned
            _warned.add(stage)
        if first:
            log.warning(
                "tasklens stage %r failed; the task state is not affected (further failures of this stage "
                "are counted in tasklens.errors only)",
                stage,
                exc_info=True,
            )
        try:
            from tasklens import metrics

            metrics.count_error(stage)
        except Exception:  # noqa: S110 - counting the error must never raise either
            pass
        return None


def _bind_log_context(event: TaskEvent) -> None:
    from tasklens import logs

    logs.bind_task_context(event)


def _write_event_stream(event: TaskEvent) -> None:
    from tasklens import logs

    logs.write_event(event)


def _emit_metrics(event: TaskEvent) -> None:
    from tasklens import metrics

    metrics.record_event(event)


def _raise_alerts(event: TaskEvent) -> None:
    """Rules -> routing -> store (the alert engine wires this stage)."""


_EVENT_STAGES: tuple[tuple[str, Callable[[TaskEvent], None]], ...] = (
    ("logs.context", _bind_log_context),
    ("logs.stream", _write_event_stream),
    ("metrics", _emit_metrics),
    ("alerts", _raise_alerts),
)


def handle(event: TaskEvent) -> None:
    """Run ``event`` through every stage. Never raises."""
    from tasklens import config

    if not run_stage("config", config.enabled):
        return
    for stage, func in _EVENT_STAGES:
        run_stage(stage, func, event)


def handle_metric(name: str, value: float, labels: Mapping[str, str], context: TaskEvent | None = None) -> None:
    """A task emitted a custom metric: evaluate the metric threshold rules on it. Never raises."""
    # The alert engine evaluates metric threshold rules here.


def raise_custom_alert(title: str, severity: str, template: str | None, data: Mapping[str, Any],
                       context: TaskEvent | None = None) -> None:
    """Task code raised an alert itself (``tasklens.alert(...)``). Never raises."""
    # The alert engine records the custom alert here.

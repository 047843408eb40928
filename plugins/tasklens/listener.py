"""Airflow listener: turns task-instance hooks into TaskEvents. Thin by design.

Runs in the task process (``RuntimeTaskInstance``), in the scheduler (heartbeat timeouts,
``error`` is a str) and in the api-server (manual state changes, ``previous_state`` None).
No hook raises: there is no impact on task execution whatever tasklens does.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from tasklens import callbacks, events, pipeline

__all__ = [
    "on_task_instance_failed", "on_task_instance_running", "on_task_instance_skipped", "on_task_instance_success",
]

log = logging.getLogger(__name__)


def _source(task_instance: Any, previous_state: Any) -> str:
    if type(task_instance).__name__ == "RuntimeTaskInstance":
        return "worker"
    return "api" if previous_state is None else "scheduler"


def _build_event(kind: str, task_instance: Any, previous_state: Any, error: Any) -> events.TaskEvent:
    if kind == "failed" and events.state_name(getattr(task_instance, "state", None)) == "up_for_retry":
        kind = "up_for_retry"
    return events.from_task_instance(
        kind, task_instance, previous_state=previous_state, error=error, source=_source(task_instance, previous_state)
    )


def _emit(kind: str, task_instance: Any, previous_state: Any, error: Any = None) -> None:
    event = pipeline.run_stage("events", _build_event, kind, task_instance, previous_state, error)
    if event is None:
        return
    if kind == "running" and event.source == "worker":
        callbacks.mark_listener_saw(event)
    pipeline.handle(event)


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _emit("running", task_instance, previous_state)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _emit("success", task_instance, previous_state)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _emit("failed", task_instance, previous_state, error)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _emit("skipped", task_instance, previous_state)

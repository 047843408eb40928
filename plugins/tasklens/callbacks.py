"""Task callbacks for the paths Airflow's listeners do not reach.

Listeners cover every transition seen by the task process. When the worker is lost or the
heartbeat times out, Airflow runs only the task's ``on_failure_callback`` (in the dag-processor,
twice, without ``exception``). :class:`FailureCallback` turns that into a tasklens event; in the
task process it stays silent because the listener already reports the same attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklens import events, pipeline
from tasklens.schedule import retry_schedule

__all__ = ["FailureCallback", "listener_saw", "mark_listener_saw", "on_failure"]

# Attempts whose ``running`` transition the listener reported in this process.
_listener_attempts: set[tuple[str, str, str, int, int]] = set()


def mark_listener_saw(event: events.TaskEvent) -> None:
    _listener_attempts.add(event.attempt_key)


def listener_saw(event: events.TaskEvent) -> bool:
    return event.attempt_key in _listener_attempts


def _event_from_failure_context(context: Mapping[str, Any]) -> events.TaskEvent:
    reason = (None if context.get("exception") is not None
              else "task failed outside its process (worker lost or heartbeat timeout)")
    event = events.from_context("failed", context, source="callback", reason=reason)
    ti = context.get("ti") or context.get("task_instance")
    if events.state_name(getattr(ti, "state", None)) == "up_for_retry":
        retry_fields: dict[str, Any] = {"event": "up_for_retry"}
        try:
            next_retry_at, policy_reason = retry_schedule(ti, context.get("exception"))
            retry_fields.update(next_retry_at=next_retry_at, reason=event.reason or policy_reason)
        except Exception:  # noqa: S110 - the event matters more than its retry time
            pass
        return events.TaskEvent.from_dict({**event.to_dict(), **retry_fields})
    return event


class FailureCallback:
    """``on_failure_callback`` that reports failures the listener cannot see. Never raises."""

    def __call__(self, context: Mapping[str, Any]) -> None:
        event = pipeline.run_stage("events", _event_from_failure_context, context)
        if event is None or listener_saw(event):
            return
        pipeline.handle(event)

    def __repr__(self) -> str:
        return "tasklens.FailureCallback()"


def on_failure() -> FailureCallback:
    """tasklens's ``on_failure_callback``, for DAGs that adopt it explicitly (the cluster policy adds it too).

    ::

        default_args = {"on_failure_callback": tasklens.on_failure(), "retries": 2}

    Combine with your own callbacks in a list: ``[my_callback, tasklens.on_failure()]``. The
    cluster policy sees it there and does not add a second one.
    """
    return FailureCallback()

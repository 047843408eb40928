"""Retry schedule arithmetic: when Airflow will retry an attempt, and why.

The bottom layer's copy of ``TaskInstance.next_retry_datetime()`` (Airflow 3.3), used by the event builder
(``TaskEvent.next_retry_at``) and the callbacks; :mod:`tasklens.retry` re-exports both functions.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["next_retry_at", "retry_schedule"]

_DEFAULT_MAX_RETRY_DELAY_S = 24 * 60 * 60  # Airflow's [core] max_task_retry_delay default


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def next_retry_at(
    task: Any,
    try_number: int,
    end_date: datetime,
    *,
    logical_date: datetime | None = None,
    delay_override: timedelta | float | None = None,
    dag_id: str | None = None,
    task_id: str | None = None,
) -> datetime:
    """When Airflow will retry an attempt of ``task`` that ended at ``end_date``.

    The same arithmetic as ``TaskInstance.next_retry_datetime()`` in Airflow 3.3: a retry
    policy's delay wins; otherwise ``retry_delay``, and with a backoff multiplier
    ``ceil(delay * multiplier ** (try_number - 1))`` plus a deterministic jitter of up to as
    much again, hashed from dag_id, task_id, logical date and try number, capped at
    ``max_retry_delay`` and ``[core] max_task_retry_delay``.
    """
    end = _utc(end_date)
    if delay_override is not None:
        seconds = delay_override.total_seconds() if isinstance(delay_override, timedelta) else float(delay_override)
        return end + timedelta(seconds=seconds)
    delay = getattr(task, "retry_delay", None) or timedelta(0)
    if not isinstance(delay, timedelta):
        delay = timedelta(seconds=float(delay))
    multiplier = getattr(task, "retry_exponential_backoff", 0) or 0
    multiplier = 2.0 if multiplier is True else float(multiplier)
    if multiplier == 0:
        multiplier = 1.0
    if multiplier != 1.0 and multiplier > 0:
        cap = _max_task_retry_delay()
        try:
            min_backoff = math.ceil(delay.total_seconds() * (multiplier ** (try_number - 1)))
        except OverflowError:
            min_backoff = cap
        min_backoff = max(min_backoff, 1)
        logical = _utc(logical_date) if isinstance(logical_date, datetime) else logical_date
        key = f"{dag_id or task.dag_id}#{task_id or task.task_id}#{logical}#{try_number}"
        ti_hash = int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest(), 16)
        delay = timedelta(seconds=min(min_backoff + ti_hash % min_backoff, cap))
        max_delay = getattr(task, "max_retry_delay", None)
        if max_delay:
            delay = min(max_delay if isinstance(max_delay, timedelta) else timedelta(seconds=max_delay), delay)
    return end + delay


def _max_task_retry_delay() -> int:
    try:
        # Airflow's operator internals load only when a backoff is computed.
        from airflow.sdk.definitions._internal.abstractoperator import MAX_RETRY_DELAY  # noqa: PLC0415

        return int(MAX_RETRY_DELAY)
    except Exception:
        return _DEFAULT_MAX_RETRY_DELAY_S


def _logical_date(ti: Any) -> datetime | None:
    context = getattr(ti, "_ti_context_from_server", None)
    dag_run = getattr(context, "dag_run", None)
    if dag_run is not None:
        return getattr(dag_run, "logical_date", None)
    try:
        return getattr(ti, "logical_date", None)
    except Exception:
        return None


def retry_schedule(ti: Any, error: BaseException | str | None = None) -> tuple[str | None, str | None]:
    """``(next_retry_at ISO UTC, reason)`` for a task instance that just went ``up_for_retry``.

    In the worker (``RuntimeTaskInstance``) the task's retry policy is evaluated again for
    ``error`` (policies are pure) to learn its delay override and reason; an ORM
    ``TaskInstance`` carries both (``retry_delay_override``, ``retry_reason``). Either may be None.
    """
    task = getattr(ti, "task", None)
    end = getattr(ti, "end_date", None) or datetime.now(timezone.utc)
    reason = getattr(ti, "retry_reason", None)
    override = getattr(ti, "retry_delay_override", None)
    policy = getattr(task, "retry_policy", None)
    if policy is not None and isinstance(error, BaseException):
        # Airflow's task SDK loads only when a retry is scheduled (never on the success path).
        from airflow.sdk.definitions.retry_policy import RetryAction  # noqa: PLC0415

        decision = policy.evaluate(exception=error, try_number=int(getattr(ti, "try_number", 1) or 1),
                                   max_tries=int(getattr(ti, "max_tries", 0) or 0), context=None)
        reason = decision.reason or reason
        if decision.action == RetryAction.RETRY and decision.retry_delay is not None:
            override = decision.retry_delay
        preset_name = getattr(policy, "preset_name", None)  # a tasklens.retry.PresetRetryPolicy
        if reason is None and preset_name is not None:
            reason = f"{preset_name}: {type(error).__name__} matched no rule; retrying per the task's retries"
    if task is None:
        if override is None:
            return None, reason
        return _utc(end + timedelta(seconds=float(override))).isoformat(), reason
    when = next_retry_at(task, int(getattr(ti, "try_number", 1) or 1), end, logical_date=_logical_date(ti),
                         delay_override=override, dag_id=getattr(ti, "dag_id", None),
                         task_id=getattr(ti, "task_id", None))
    return when.isoformat(), reason

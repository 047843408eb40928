"""Retry presets on Airflow's own retry settings, in-task retries, and the next-retry time.

A preset is one object that expands to operator keyword arguments: Airflow's ``retries``,
``retry_delay``, ``retry_exponential_backoff`` (a float multiplier in 3.3), ``max_retry_delay``
and a ``retry_policy`` (3.3's :class:`~airflow.sdk.definitions.retry_policy.RetryPolicy`) that
decides per exception whether another attempt can help::

    default_args = {**tasklens.retry.preset("transient_network")}
    tasklens.retry.apply(task, "spark_job")
    tasklens.retry.preset("fail_fast", retries=1, fail_on=["mylib.SchemaError"])

Built-in presets:

``transient_network``
    connection errors, timeouts, HTTP 429/5xx: retried with exponential backoff and Airflow's
    deterministic jitter, capped; a 429's ``Retry-After`` is honoured. HTTP 4xx and data errors fail at once.
``fail_fast``
    validation and data errors (``ValueError``, ``TypeError``, ``KeyError``, schema errors) fail at
    once, no wasted retries; anything else gets one retry.
``spark_job``
    executor loss and a vanished driver connection are retried; ``AnalysisException`` (bad column,
    missing table) fails at once.

Inside a task, :func:`call` retries a single call (an API request) with tenacity, logging each
attempt and re-raising the original exception when it gives up.

One job per module: :mod:`~tasklens.retry.rules` (error rules), :mod:`~tasklens.retry.policy` (the Airflow
``RetryPolicy`` adapter), :mod:`~tasklens.retry.presets`, :mod:`~tasklens.retry.tasks` (reading and setting a task's
retry settings) and :mod:`~tasklens.retry.calls` (tenacity); the retry-time arithmetic is :mod:`tasklens.schedule`.
"""

from __future__ import annotations

from tasklens.retry.calls import call
from tasklens.retry.policy import PresetRetryPolicy
from tasklens.retry.presets import (
    PRESETS,
    RETRY_FIELDS,
    TIMING_FIELDS,
    Preset,
    check_preset_name,
    preset,
    preset_names,
    register_preset,
)
from tasklens.retry.rules import ErrorRule, fail_on, retry_on
from tasklens.retry.tasks import apply, explicit_fields, validate_task_retries
from tasklens.schedule import next_retry_at, retry_schedule

__all__ = [
    "PRESETS",
    "RETRY_FIELDS",
    "TIMING_FIELDS",
    "ErrorRule",
    "Preset",
    "PresetRetryPolicy",
    "apply",
    "call",
    "check_preset_name",
    "explicit_fields",
    "fail_on",
    "next_retry_at",
    "preset",
    "preset_names",
    "register_preset",
    "retry_on",
    "retry_schedule",
    "validate_task_retries",
]

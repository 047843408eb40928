"""Retry settings on tasks: which ones a task set itself, applying a preset (the cluster policy calls
:func:`apply`), and turning unusable settings into DAG import errors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from tasklens.exceptions import ConfigError
from tasklens.retry.presets import RETRY_FIELDS, TIMING_FIELDS, Preset, preset
from tasklens.retry.rules import ErrorRule, import_exception_class

__all__ = ["apply", "explicit_fields", "validate_task_retries"]

log = logging.getLogger(__name__)


def explicit_fields(task: Any) -> set[str]:
    """Retry settings ``task`` set itself (its own kwargs or the DAG's ``default_args``).

    A plain operator records the keyword arguments it was built with (``default_args``
    included) in ``_BaseOperator__init_kwargs``; Airflow's defaults (``[core]
    default_task_retries``, 5 min delay, no backoff) are not in it. A mapped operator keeps
    ``partial_kwargs`` already merged with those defaults, so there a value differing from
    the operator default counts as set.
    """
    init_kwargs = getattr(task, "_BaseOperator__init_kwargs", None)
    if isinstance(init_kwargs, Mapping):
        found = {name for name in RETRY_FIELDS if name in init_kwargs}
        if getattr(task, "retry_policy", None) is not None:
            found.add("retry_policy")
        return found
    partial_kwargs = getattr(task, "partial_kwargs", None)
    if isinstance(partial_kwargs, Mapping):
        from airflow.sdk.bases.operator import OPERATOR_DEFAULTS  # noqa: PLC0415 - Airflow's operator internals load only when a preset is applied

        return {name for name in RETRY_FIELDS
                if partial_kwargs.get(name, OPERATOR_DEFAULTS.get(name)) != OPERATOR_DEFAULTS.get(name)}
    return {"retry_policy"} if getattr(task, "retry_policy", None) is not None else set()


def apply(task: Any, name: str | Preset, *, keep_explicit: bool = False) -> Any:
    """Give ``task`` (an operator, mapped or not) the settings of preset ``name``; returns ``task``.

    With ``keep_explicit`` (how the cluster policy calls it) a task that set any timing field
    (``retries``, ``retry_delay``, backoff, ``max_retry_delay``) keeps its timing and only gains
    the preset's ``retry_policy``, and a task with its own ``retry_policy`` keeps that.
    """
    chosen = preset(name)
    fields: Iterable[str] = RETRY_FIELDS
    if keep_explicit:
        explicit = explicit_fields(task)
        fields = [f for f in RETRY_FIELDS if f not in explicit]
        if explicit & set(TIMING_FIELDS):
            fields = [f for f in fields if f == "retry_policy"]
    for field in fields:
        setattr(task, field, chosen[field])
    return task


def validate_task_retries(task: Any) -> None:
    """Raise :class:`ConfigError` when ``task``'s final retry settings are unusable.

    Airflow accepts negative retries and delays silently; tasklens turns them into DAG import
    errors. tasklens's own rules were checked when built (an unimportable class raised
    there). An Airflow ``RetryRule`` naming a class this process cannot import keeps
    Airflow's meaning (a warning: the class may exist only on workers, as in Airflow's own
    ``example_retry_policy``); tasklens logs it with the task so it is not missed.
    """
    where = f"task {getattr(task, 'dag_id', '?')}.{getattr(task, 'task_id', '?')}"
    retries = getattr(task, "retries", 0)
    if isinstance(retries, int) and retries < 0:
        raise ConfigError(where, "retries", f"negative retries {retries}", "use retries >= 0")
    for key in ("retry_delay", "max_retry_delay"):
        value = getattr(task, key, None)
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds < 0:
            raise ConfigError(where, key, f"negative delay {value}", f"use a {key} of 0 seconds or more")
    policy = getattr(task, "retry_policy", None)
    for rule in getattr(policy, "rules", None) or ():
        if isinstance(rule, ErrorRule):
            rule.exception_classes()
            continue
        delay = getattr(rule, "retry_delay", None)
        if isinstance(delay, timedelta) and delay.total_seconds() < 0:
            raise ConfigError(where, "retry_policy", f"RetryRule for {getattr(rule, 'exception_path', '?')} has "
                              f"negative retry_delay {delay}", "use a retry_delay of 0 seconds or more")
        for spec in getattr(rule, "_specs", None) or ():
            if isinstance(spec, str):
                try:
                    import_exception_class(spec)
                except (ImportError, AttributeError, TypeError, ValueError) as error:
                    log.warning("%s: retry_policy RetryRule names exception class %r that cannot be imported here "
                                "(%s); it never matches in a process without it", where, spec, error)

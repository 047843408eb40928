"""Cluster policy: tasklens for every task of every DAG, with no DAG edits.

Registered through the ``airflow.policy`` entry point (``pip install tasklens``) or, in drop-in
mode, from ``$AIRFLOW_HOME/config/airflow_local_settings.py``::

    from tasklens.policy import task_policy  # noqa: F401

For every task of a DAG not tagged ``tasklens:off`` it

* keeps the task's callbacks and appends tasklens's :class:`~tasklens.callbacks.FailureCallback`;
* gives the task the retry preset of the first ``retry_policies`` entry of the rules file that
  matches it (DAG id glob, DAG tag, operator class), else ``[tasklens] default_retry_preset``
  (``none`` by default: installing tasklens changes no task's retries), where the task sets none
  (see :func:`tasklens.retry.apply`);
* checks the task's final retry settings.

Bad tasklens configuration never breaks a DAG: an invalid rules file is replaced by the last good
rules (:func:`tasklens.config.ruleset`), a ``retry_policies`` entry or ``default_retry_preset``
naming an unknown preset is skipped; each is logged as a warning, counted in
``tasklens.config_errors`` and reported by the api-server (Alerts page, ``/tasklens/health``, one
alert) and ``tasklens check-config``. The task's own retry settings are the DAG author's call: a
negative delay or an unimportable tasklens retry rule there raises ``AirflowClusterPolicyViolation``,
which Airflow records as an import error of that DAG file, naming the problem and the fix.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from tasklens import config, metrics
from tasklens.callbacks import FailureCallback, on_failure
from tasklens.config import ConfigProblem
from tasklens.exceptions import ConfigError

# Airflow's own marker (airflow.policies.hookimpl), built here: importing Airflow at the top would, in a process
# that imports this module before Airflow, make Airflow's start load this entry point half-built, with no hooks.
hookimpl = pluggy.HookimplMarker("airflow.policy")

if TYPE_CHECKING:
    from tasklens.ruleset import RetryPolicyRef, Ruleset

__all__ = ["OPT_OUT_TAG", "add_failure_callback", "defaults", "retry_preset_for", "retry_preset_problems",
           "task_policy"]

log = logging.getLogger(__name__)
OPT_OUT_TAG = "tasklens:off"


def _as_list(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    return [callbacks]


def _dag_tags(task: Any) -> set[str]:
    dag = getattr(task, "dag", None)
    return {str(tag) for tag in (getattr(dag, "tags", None) or ())}


def _opted_out(task: Any) -> bool:
    return OPT_OUT_TAG in _dag_tags(task)


def add_failure_callback(task: Any) -> None:
    """Append tasklens's failure callback to ``task`` unless it is already there."""
    callbacks = _as_list(getattr(task, "on_failure_callback", None))
    if not any(isinstance(cb, FailureCallback) for cb in callbacks):
        task.on_failure_callback = [*callbacks, FailureCallback()]


def _operator_names(task: Any) -> list[str]:
    """The task's operator class and its bases (``SparkSubmitOperator``, ``BaseOperator``, ...) and ``task_type``."""
    names = [getattr(task, "task_type", None), getattr(task, "operator_name", None)]
    operator_class = getattr(task, "operator_class", None)  # mapped operators
    classes = [type(task), *type(task).__mro__] if operator_class is None or isinstance(operator_class, dict) \
        else [operator_class, *operator_class.__mro__]
    names += [cls.__name__ for cls in classes]
    return [str(n) for n in dict.fromkeys(names) if n]


def _any_glob(values: Iterable[str], patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for value in values for pattern in patterns)


def _matches(ref: RetryPolicyRef, task: Any) -> bool:
    if ref.dag_id and not _any_glob([str(getattr(task, "dag_id", ""))], ref.dag_id):
        return False
    if ref.tags and not _any_glob(_dag_tags(task), ref.tags):
        return False
    return not (ref.operator and not _any_glob(_operator_names(task), ref.operator))


def _unknown_preset(name: str, where: str, key: str, fallback: str, *, also: str = "") -> ConfigProblem | None:
    from tasklens import retry  # noqa: PLC0415 - Airflow's task-SDK retry policy loads only when a DAG is parsed

    try:
        retry.check_preset_name(name, where, key, also=also)
    except ConfigError as error:
        return ConfigProblem.from_error(error, fallback, kind="unknown_preset")
    return None


def retry_preset_problems(ruleset: Ruleset | None = None) -> list[tuple[str, ConfigProblem]]:
    """``(slot, problem)`` for each ``retry_policies`` entry of the rules file and for ``[tasklens]
    default_retry_preset`` naming a preset unknown in this process (also run by ``tasklens check-config``)."""

    ruleset = ruleset or config.ruleset()
    source = str(ruleset.source or "[tasklens] rules_file")
    found = []
    for ref in ruleset.retry_policies.values():
        problem = _unknown_preset(ref.preset, source, f"retry_policies.{ref.name}.preset",
                                  "no preset from this entry (the next matching entry or default_retry_preset "
                                  "applies)")
        if problem is not None:
            found.append((f"retry_policies.{ref.name}", problem))
    default = config.default_retry_preset()
    if default is not None:
        problem = _unknown_preset(default, "[tasklens]", "default_retry_preset", "no default preset (none)",
                                  also=", none")
        if problem is not None:
            found.append(("default_retry_preset", problem))
    return found


def retry_preset_for(task: Any) -> tuple[str, str] | None:
    """``(where it came from, preset name)`` for ``task``: the first matching ``retry_policies`` entry
    of the rules file, else ``[tasklens] default_retry_preset``; None when neither applies.

    Never raises for bad configuration: an entry or default naming an unknown preset is skipped and
    recorded as a configuration problem (:func:`tasklens.config.problems`).
    """
    if config.rules_file() is None and config.default_retry_preset() is None:
        return None  # the default: no rules file means no retry_policies, and no default preset (no ruleset load)
    ruleset = config.ruleset()
    bad = dict(retry_preset_problems(ruleset))
    for slot, problem in bad.items():
        config.record_problem(slot, problem)
    source = str(ruleset.source or "[tasklens] rules_file")
    for ref in ruleset.retry_policies.values():
        if f"retry_policies.{ref.name}" not in bad and _matches(ref, task):
            return f"{source}: retry_policies.{ref.name}", ref.preset
    default = config.default_retry_preset()
    if default is None or "default_retry_preset" in bad:
        return None
    return "[tasklens] default_retry_preset", default


def apply_retry_preset(task: Any) -> str | None:
    """Give ``task`` its configured retry preset where it sets none; returns the preset name applied.

    Raises :class:`ConfigError` when the task's own retry settings are unusable (a negative delay).
    """
    from tasklens import retry  # noqa: PLC0415 - Airflow's task-SDK retry policy loads only when a DAG is parsed

    chosen = retry_preset_for(task)
    if chosen is not None:
        retry.apply(task, chosen[1], keep_explicit=True)
    retry.validate_task_retries(task)
    return chosen[1] if chosen else None


def _enabled() -> bool:
    """``[tasklens] enabled``; an unreadable value is a configuration problem and counts as the default (on)."""

    try:
        return config.enabled()
    except ConfigError as error:
        config.record_problem("[tasklens] enabled", ConfigProblem.from_error(error, "enabled = true (the default)",
                                                                             kind="invalid_setting"))
        return True


#: Configuration problems this process has counted in ``tasklens.config_errors`` (once each per process).
_counted: set[str] = set()


def _count_new_problems() -> None:
    for problem in config.problems():
        if problem.fingerprint not in _counted:
            _counted.add(problem.fingerprint)
            metrics.count_config_error(problem.kind)


def _violation(error: ConfigError, task: Any) -> Exception:
    from airflow.exceptions import AirflowClusterPolicyViolation  # noqa: PLC0415 - see hookimpl above

    where = f"{getattr(task, 'dag_id', '?')}.{getattr(task, 'task_id', '?')}"

    return AirflowClusterPolicyViolation(f"tasklens retry configuration for task {where}: {error}")


@hookimpl
def task_policy(task: Any) -> None:
    """Add tasklens's failure callback and retry preset to ``task``.

    Never raises for tasklens configuration (see the module docstring); raises
    ``AirflowClusterPolicyViolation`` only for the task's own unusable retry settings, which Airflow
    shows as an import error of the DAG file.
    """
    try:
        if not _enabled() or _opted_out(task):
            return
        add_failure_callback(task)
        apply_retry_preset(task)
    except ConfigError as error:
        raise _violation(error, task) from None
    except Exception:
        log.warning("tasklens task_policy failed for %r; the task keeps its own settings", task, exc_info=True)
        try:
            metrics.count_error("policy")
        except Exception:  # noqa: S110 - counting must not break DAG parsing either
            pass
    finally:
        try:
            _count_new_problems()
        except Exception:  # noqa: S110 - counting must not break DAG parsing either
            pass


def defaults(preset: str | None = "transient_network", **overrides: Any) -> dict[str, Any]:
    """Operator keyword arguments for explicit adoption: tasklens's failure callback and a retry preset.

    ::

        with DAG("orders", default_args={**tasklens.defaults(preset="transient_network"), "owner": "data"}):
            ...

    ``preset=None`` gives the callback only; other keywords adjust the preset (see
    :func:`tasklens.retry.preset`). Raises :class:`ConfigError` for an unknown preset.
    """
    from tasklens import retry  # noqa: PLC0415 - Airflow's task-SDK retry policy loads only when a DAG is parsed

    values: dict[str, Any] = {"on_failure_callback": [on_failure()]}
    if preset is not None:
        values.update(retry.preset(preset, **overrides))
    elif overrides:
        raise ConfigError("tasklens.defaults", ", ".join(sorted(overrides)), "retry settings without a preset",
                          "name a preset, e.g. defaults(preset='transient_network', retries=6)")
    return values

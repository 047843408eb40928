"""Cluster policy: tasklens for every task of every DAG, with no DAG edits.

Registered through the ``airflow.policy`` entry point (``pip install tasklens``) or, in drop-in
mode, from ``$AIRFLOW_HOME/config/airflow_local_settings.py``::

    from tasklens.policy import task_policy  # noqa: F401

DAGs tagged ``tasklens:off`` are left alone. Existing callbacks are kept; tasklens's is appended.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.policies import hookimpl

from tasklens.callbacks import FailureCallback

__all__ = ["OPT_OUT_TAG", "task_policy"]

log = logging.getLogger(__name__)
OPT_OUT_TAG = "tasklens:off"


def _as_list(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    return [callbacks]


def _opted_out(task: Any) -> bool:
    dag = getattr(task, "dag", None)
    return OPT_OUT_TAG in set(getattr(dag, "tags", None) or ())


def add_failure_callback(task: Any) -> None:
    """Append tasklens's failure callback to ``task`` unless it is already there."""
    callbacks = _as_list(getattr(task, "on_failure_callback", None))
    if not any(isinstance(cb, FailureCallback) for cb in callbacks):
        task.on_failure_callback = [*callbacks, FailureCallback()]


@hookimpl
def task_policy(task: Any) -> None:
    """Add tasklens's failure callback to ``task``. Never raises: a policy error would break DAG parsing."""
    try:
        if _opted_out(task):
            return
        add_failure_callback(task)
    except Exception:
        log.warning("tasklens task_policy failed for %r; the task is unchanged", task, exc_info=True)

"""The AirflowPlugin that registers tasklens: listeners, and (when present) the UI app."""

from __future__ import annotations

import functools
import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from tasklens import listener

__all__ = ["MIN_AIRFLOW", "TasklensPlugin"]

log = logging.getLogger(__name__)

MIN_AIRFLOW = (3, 1)  # 3.1 and 3.2 without the 3.3-only features (tasklens.airflow_compat)


def _airflow_supported() -> bool:
    try:
        from airflow import __version__  # noqa: PLC0415 - guarded: a broken Airflow install must not stop the import
    except ImportError:  # pragma: no cover
        return False
    major_minor = tuple(int(p) for p in __version__.split(".")[:2] if p.isdigit())
    return major_minor >= MIN_AIRFLOW


@functools.cache
def _ui_components() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The FastAPI app and the external views, if the UI package is installed with this version."""
    try:
        from tasklens.ui import external_views, fastapi_apps  # noqa: PLC0415 - FastAPI loads only in the api-server
    except ImportError:
        return [], []
    return fastapi_apps(), external_views()


class _OnFirstAccess:
    """Build the UI components only when Airflow reads them (the api-server, `airflow plugins`).

    Task processes, the scheduler and the dag-processor load the plugin for its listener only; importing
    FastAPI there would cost every task process ~0.1 s for nothing.
    """

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, obj: object, objtype: type | None = None) -> list[dict[str, Any]]:
        return _ui_components()[self.index]


class TasklensPlugin(AirflowPlugin):
    """Task-level observability and alerting for every DAG, with no DAG changes."""

    name = "tasklens"
    if _airflow_supported():
        listeners = [listener]
        fastapi_apps = _OnFirstAccess(0)
        external_views = _OnFirstAccess(1)
    else:  # pragma: no cover - guarded so an old Airflow still starts
        log.warning("tasklens needs Airflow >= %s.%s; the plugin is inactive", *MIN_AIRFLOW)

"""The AirflowPlugin that registers tasklens: listeners, and (when present) the UI app."""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from tasklens import listener

log = logging.getLogger(__name__)

MIN_AIRFLOW = (3, 3)


def _airflow_supported() -> bool:
    try:
        from airflow import __version__
    except ImportError:  # pragma: no cover
        return False
    major_minor = tuple(int(p) for p in __version__.split(".")[:2] if p.isdigit())
    return major_minor >= MIN_AIRFLOW


def _ui_components() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The FastAPI app and the external views, if the UI package is installed with this version."""
    try:
        from tasklens.ui import external_views, fastapi_apps
    except ImportError:
        return [], []
    return fastapi_apps(), external_views()


class TasklensPlugin(AirflowPlugin):
    """Task-level observability and alerting for every DAG, with no DAG changes."""

    name = "tasklens"
    if _airflow_supported():
        listeners = [listener]
        fastapi_apps, external_views = _ui_components()
    else:  # pragma: no cover - guarded so an old Airflow still starts
        log.warning("tasklens needs Airflow >= %s.%s; the plugin is inactive", *MIN_AIRFLOW)

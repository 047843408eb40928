"""tasklens: task-level observability and alerting for Apache Airflow 3.3.

Public API for DAG and task code::

    import tasklens

    log = tasklens.get_logger()                # structlog logger bound to the running task
    log.business_event("rows_loaded", rows=1200)
    tasklens.metrics.gauge("data_quality_score", 97.5)
    tasklens.alert("Model drift", severity="warning", template="ml_model_drift", drift_score=0.85)

Submodules are imported lazily so that loading the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "TaskEvent": ("tasklens.events", "TaskEvent"),
    "get_logger": ("tasklens.logs", "get_logger"),
    "timed": ("tasklens.logs", "timed"),
    "alert": ("tasklens.api", "alert"),
    "on_failure": ("tasklens.callbacks", "on_failure"),
    "defaults": ("tasklens.policy", "defaults"),
}
_SUBMODULES = {"metrics", "retry", "config", "events", "testing", "spark", "policy"}  # testing: tasklens.testing

__all__ = ["__version__", *sorted(_LAZY), *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"tasklens.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tasklens' has no attribute {name!r}")

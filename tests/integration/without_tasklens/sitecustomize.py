"""Put this directory first on PYTHONPATH to run Python as if tasklens were not installed.

tasklens is installed in the test venv (editable, with ``airflow.plugins`` and ``airflow.policy`` entry points),
so "without tasklens" cannot mean another venv here. Python imports ``sitecustomize`` at start-up: this one hides
the tasklens distribution from ``importlib.metadata`` (so Airflow and pluggy find neither entry point) and makes
``import tasklens`` fail, so nothing of tasklens can run in that process.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from typing import Any

_distributions = importlib.metadata.distributions


def _without_tasklens(**kwargs: Any) -> Iterator[importlib.metadata.Distribution]:
    for dist in _distributions(**kwargs):
        if (dist.metadata["Name"] or "").lower() != "tasklens":
            yield dist


class _HideTasklens:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "tasklens" or name.startswith("tasklens."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by tests/integration/without_tasklens)")


importlib.metadata.distributions = _without_tasklens  # type: ignore[assignment]
sys.meta_path.insert(0, _HideTasklens())

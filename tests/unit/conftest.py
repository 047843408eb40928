"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tasklens import config, pipeline
from tasklens.store import Store, get_store, reset_stores


@pytest.fixture
def alert_store(tmp_path, monkeypatch) -> Store:
    """The real alert stage's store: a fresh SQLite file, built-in rules, no event stream, its own spool, no counted
    errors."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'alerts.db'}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", "")
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    config.reset()
    reset_stores()
    pipeline.ERROR_COUNTS.clear()
    yield get_store(migrate=True)  # as `tasklens db upgrade` would
    reset_stores()
    config.reset()

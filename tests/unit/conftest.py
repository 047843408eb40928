"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tasklens import config, pipeline
from tasklens.store import Store, get_store, reset_stores


@pytest.fixture(autouse=True)
def isolated_spool_and_writes(tmp_path_factory, monkeypatch):
    """Each test gets its own spool (a write one test left spooled would be replayed into a later test's alerts),
    and a task's stream lines and StatsD datagrams, written off its thread, are out before the next test starts."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))
    config.reset()
    yield
    pipeline.wait_for_task_writes()
    config.reset()


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

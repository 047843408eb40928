"""Shared local SparkSession for Spark unit tests: one JVM per pytest process (start-up costs seconds).

Import the fixture into a test module with ``from tests.spark_fixtures import spark  # noqa: F401``.
The session is never stopped by a test: the JVM exits with the pytest process.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from tasklens.spark import get_session

    return get_session("tasklens-unit-tests", master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})


@pytest.fixture
def gauges(monkeypatch):
    """Every ``tasklens.metrics.gauge`` call of the test, as ``{name: value}`` (last value wins)."""
    import tasklens.metrics

    sent: dict[str, float] = {}
    monkeypatch.setattr(tasklens.metrics, "gauge", lambda name, value, **labels: sent.__setitem__(name, value))
    return sent

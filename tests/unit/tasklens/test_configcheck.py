"""tasklens.configcheck: the api-server's configuration check, its metric and its one alert per error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasklens import config, configcheck, metrics
from tasklens.store import Store
from tests.integration.observability import StatsdSink, parse_statsd_line

UNKNOWN_CHANNEL = "routes:\n  - name: r\n    channels: [slak]\n"


@pytest.fixture
def rules(alert_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A rules file path in a fresh AIRFLOW_HOME, with the real alert store of the unit tests."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    path = tmp_path / "rules.yml"
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(path))
    config.reset()
    configcheck.reset()
    yield path
    configcheck.reset()
    config.reset()


def restart_api_server() -> None:
    """What a fresh api-server process starts with: no loaded rules, nothing alerted in memory."""
    config.reset()
    configcheck.reset()


def test_one_alert_per_distinct_config_error(rules: Path, alert_store: Store) -> None:
    """A bad rules file raises exactly one alert, routed like any warning, however many checks, api-server
    restarts (or several api-servers) see it; a different error is a second alert."""
    rules.write_text(UNKNOWN_CHANNEL)
    configcheck.check()
    configcheck.check()
    restart_api_server()
    configcheck.check()
    (alert,) = alert_store.list_alerts()
    assert alert["severity"] == "warning" and alert["dag_id"] == configcheck.ALERT_DAG_ID
    assert str(rules) in alert["title"] and "slak" in alert["title"]
    assert alert["data"]["fix"] and alert["data"]["meanwhile"] == "the built-in rules"
    assert alert_store.occurrence_count() == 1
    assert [(d["kind"], d["channel"]) for d in alert_store.deliveries()] == [("alert", "slack")]

    rules.write_text("routes: [unclosed\n")
    configcheck.check()
    configcheck.check()
    assert len(alert_store.list_alerts()) == 2 and len(alert_store.deliveries()) == 2


def test_an_alert_the_store_refused_is_raised_again_next_check(rules: Path, alert_store: Store,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """When the store cannot take the alert, the next check tries again (one alert in the end, not zero)."""
    rules.write_text(UNKNOWN_CHANNEL)
    with monkeypatch.context() as patch:
        patch.setattr(alert_store, "record", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("store down")))
        configcheck.check()
    assert alert_store.list_alerts() == []
    configcheck.check()
    assert len(alert_store.list_alerts()) == 1


def test_every_check_counts_the_errors_in_the_config_errors_metric(rules: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``tasklens.config_errors{kind=...}`` goes out over StatsD once per check while the error lasts."""
    sink = StatsdSink()
    try:
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sink.port))
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
        config.reset()
        metrics.reset()
        configcheck.check(alert=False)
        configcheck.check(alert=False)
        parsed = [parse_statsd_line(line) for line in sink.tasklens_lines()]
    finally:
        sink.close()
        metrics.reset()
    assert parsed == [("airflow.tasklens.config_errors", {"kind": "missing_file"}, "1", "c")] * 2


def test_find_problems_covers_presets_and_settings(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Besides the rules file: an unknown preset in retry_policies or default_retry_preset and an unreadable
    [tasklens] setting are problems, each with its key and fix; a good configuration has none."""
    rules.write_text("retry_policies:\n  spark:\n    preset: spark_jobs\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "transient_netwrk")
    monkeypatch.setenv("AIRFLOW__TASKLENS__HTTP_TIMEOUT_S", "ten")
    config.reset()
    found = {(p.kind, p.key): p for p in configcheck.find_problems()}
    assert set(found) == {("unknown_preset", "retry_policies.spark.preset"),
                          ("unknown_preset", "default_retry_preset"), ("invalid_setting", "http_timeout_s")}
    assert "did you mean 'spark_job'?" in found["unknown_preset", "retry_policies.spark.preset"].fix
    monkeypatch.delenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET")
    monkeypatch.delenv("AIRFLOW__TASKLENS__HTTP_TIMEOUT_S")
    rules.write_text("retry_policies:\n  spark:\n    preset: spark_job\n")
    config.reset()
    assert configcheck.find_problems() == []

"""Explicit alert calls fail loudly on bad input: ``tasklens.alert(...)`` and ``AlertOperator``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tasklens
from tasklens import config, pipeline
from tasklens.exceptions import ConfigError
from tasklens.store import get_store


@pytest.fixture(autouse=True)
def isolated_store(alert_store, monkeypatch):
    monkeypatch.delenv("AIRFLOW__TASKLENS__TEMPLATES_DIR", raising=False)
    config.reset()
    return alert_store


def test_alert_with_an_unknown_severity_raises_with_the_fix_and_stores_nothing():
    """A typo in severity is the caller's own error: ConfigError naming the argument and the choices."""
    with pytest.raises(ConfigError) as raised:
        tasklens.alert("Model drift", severity="urgent")
    assert (raised.value.source, raised.value.key) == ("tasklens.alert()", "severity")
    assert "unknown severity 'urgent'" in str(raised.value) and "Fix: use one of: info, warning, critical" in str(
        raised.value)
    assert get_store().list_alerts() == [] and not pipeline.ERROR_COUNTS


def test_alert_with_an_unknown_template_raises_with_the_fix():
    """A template that is neither built in nor in templates_dir raises, naming the built-in ones."""
    with pytest.raises(ConfigError, match=r"template: unknown template 'ml_drift'.*Fix: use one of: .*ml_model_drift"):
        tasklens.alert("Model drift", template="ml_drift")
    assert get_store().list_alerts() == []


def test_alert_accepts_templates_from_templates_dir_and_normalises_severity(tmp_path, monkeypatch):
    """A ``<name>.j2`` in ``[tasklens] templates_dir`` is a known template; ``"WARNING"`` is ``warning``."""
    (tmp_path / "orders_late.j2").write_text("{% block title %}late{% endblock %}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__TEMPLATES_DIR", str(tmp_path))
    config.reset()
    tasklens.alert("Orders late", severity="WARNING", template="orders_late", minutes=42)
    (alert,) = get_store().list_alerts()
    assert (alert["severity"], alert["template"], alert["data"]) == ("warning", "orders_late", {"minutes": 42})


def test_alert_operator_with_a_literal_bad_severity_fails_when_the_dag_is_built():
    """A literal bad severity fails at DAG parse, where the author sees it first."""
    from tasklens.operators.alert import AlertOperator

    with pytest.raises(ConfigError, match="AlertOperator 'drift_alert': severity: unknown severity 'urgent'"):
        AlertOperator(task_id="drift_alert", title="Drift", severity="urgent")


def test_alert_operator_with_a_templated_bad_template_fails_when_it_runs():
    """A templated value is checked after rendering: execute raises (the task fails) and nothing is stored."""
    from tasklens.operators.alert import AlertOperator

    operator = AlertOperator(task_id="drift_alert", title="Drift", template="{{ params.template }}")
    operator.template = "nope"  # what rendering produced
    ti = SimpleNamespace(dag_id="etl", task_id="drift_alert", run_id="r1", map_index=-1, try_number=1, max_tries=1,
                         state="running", start_date=None, end_date=None, task=None, log_url=None)
    with pytest.raises(ConfigError, match="AlertOperator 'drift_alert': template: unknown template 'nope'"):
        operator.execute({"ti": ti, "run_id": "r1"})
    assert get_store().list_alerts() == []

"""The alert stage wiring and the task-facing alert APIs: pipeline, tasklens.alert(), AlertOperator, notifiers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from tasklens import config, pipeline
from tasklens.events import TaskEvent
from tasklens.store import get_store, reset_stores


@pytest.fixture(autouse=True)
def isolated_store(alert_store):
    return alert_store


def failed(**kwargs) -> TaskEvent:
    values = {"event": "failed", "dag_id": "etl", "task_id": "load", "run_id": "r1", "try_number": 1,
              "exception_type": "ValueError", "exception_message": "boom", "duration_s": 2.0}
    values.update(kwargs)
    return TaskEvent(**values)


def test_failed_event_is_stored_with_routed_deliveries_and_nothing_is_sent_inline():
    """The alert stage writes the store only (delivery budget 0): one open alert, pending outbox rows."""
    pipeline.handle(failed())
    store = get_store()
    (alert,) = store.list_alerts()
    assert alert["severity"] == "critical" and alert["rule"] == "task_failed"
    assert {d["state"] for d in store.deliveries()} == {"pending"}
    assert not pipeline.ERROR_COUNTS


def test_success_after_failure_resolves_the_alert():
    """A later success of the task, as the api-server reads it from Airflow's records, resolves its open failure
    alert and queues a resolve notice; the success's own task process writes nothing."""
    pipeline.handle(failed())
    success = TaskEvent(event="success", dag_id="etl", task_id="load", run_id="r2", duration_s=1.0,
                        end_date=datetime.now(timezone.utc).isoformat())
    pipeline.handle(success)
    store = get_store()
    assert store.list_alerts()[0]["status"] == "open" and [d["kind"] for d in store.deliveries()] == ["alert"]
    pipeline.record_settled_success(success, ())
    assert store.list_alerts()[0]["status"] == "resolved"
    assert [d["kind"] for d in store.deliveries()] == ["alert", "resolve"]


def test_a_success_read_late_does_not_resolve_a_newer_failure():
    """A success that ended before the alert's latest failure (read on a later pass) leaves the alert open."""
    ended_before = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    pipeline.handle(failed())
    pipeline.record_settled_success(TaskEvent(event="success", dag_id="etl", task_id="load", run_id="r0",
                                              duration_s=1.0, end_date=ended_before), ())
    assert get_store().list_alerts()[0]["status"] == "open"


def test_running_event_does_not_touch_the_store(monkeypatch):
    """Task start: no rule reacts, so the store is never opened on that path."""
    monkeypatch.setattr("tasklens.store.get_store", lambda *a, **k: pytest.fail("store opened"))
    pipeline.handle(TaskEvent(event="running", dag_id="etl", task_id="load", run_id="r1"))


def test_handle_never_raises_when_the_store_is_unreachable(monkeypatch, tmp_path):
    """An unreachable store: handle() returns normally and the failure waits in the spool, not lost."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    config.reset()
    reset_stores()
    pipeline.handle(failed())
    (record,) = (tmp_path / "spool").glob("*.json")
    assert '"op": "event"' in record.read_text() and not pipeline.ERROR_COUNTS


def test_raise_custom_alert_records_a_custom_alert_with_its_data():
    """tasklens.alert() outside a task still records the alert (no context: dag "unknown")."""
    import tasklens

    tasklens.alert("Model drift", severity="warning", template="ml_model_drift", drift_score=0.85)
    (alert,) = get_store().list_alerts()
    assert alert["title"] == "Model drift" and alert["severity"] == "warning"
    assert alert["data"]["drift_score"] == 0.85 and alert["template"] == "ml_model_drift"


def test_custom_alert_with_bad_severity_is_counted_not_raised():
    """A wrong severity from task code never fails the task; it is counted as an error."""
    pipeline.raise_custom_alert("x", "urgent", None, {})
    assert pipeline.ERROR_COUNTS["alerts.custom"] == 1 and get_store().list_alerts() == []


def _context(task_id: str = "load", try_number: int = 1) -> dict:
    ti = SimpleNamespace(dag_id="etl", task_id=task_id, run_id="r1", map_index=-1, try_number=try_number,
                         max_tries=1, state="failed", start_date=None, end_date=None, task=None, log_url=None)
    return {"ti": ti, "exception": ValueError("boom"), "run_id": "r1"}


def test_slack_notifier_records_an_alert_addressed_to_its_channel():
    """TasklensSlackNotifier renders its title and queues a delivery to the slack channel only."""
    from tasklens.notifiers import TasklensSlackNotifier

    TasklensSlackNotifier(title="{{ ti.task_id }} broke", severity="critical")(_context())
    store = get_store()
    (alert,) = store.list_alerts()
    assert alert["title"] == "load broke" and alert["severity"] == "critical"
    assert [(d["channel"], d["route"]) for d in store.deliveries()] == [("slack", "notifier")]
    assert "_tasklens_channels" not in alert["data"]


def test_email_notifier_called_twice_for_one_attempt_counts_once():
    """The dag-processor runs failure callbacks twice: the notifier's alert is one occurrence, one message."""
    from tasklens.notifiers import TasklensEmailNotifier

    TasklensEmailNotifier(title="failed")(_context())
    TasklensEmailNotifier(title="failed")(_context())
    store = get_store()
    assert store.occurrence_count() == 1
    assert [d["channel"] for d in store.deliveries()] == ["email"]


def test_alert_operator_records_its_templated_alert():
    """AlertOperator.execute records the alert with the task's identity."""
    from tasklens.operators.alert import AlertOperator

    operator = AlertOperator(task_id="drift_alert", title="Drift", severity="info", data={"score": 3})
    operator.execute(_context(task_id="drift_alert"))
    (alert,) = get_store().list_alerts()
    assert (alert["task_id"], alert["title"], alert["severity"], alert["data"]) == (
        "drift_alert", "Drift", "info", {"score": 3},
    )
    assert set(AlertOperator.template_fields) == {"title", "severity", "template", "data"}


def test_metric_without_threshold_rules_skips_the_store(monkeypatch):
    """Emitting metrics with no metric rules configured never opens the store."""
    monkeypatch.setattr("tasklens.store.get_store", lambda *a, **k: pytest.fail("store opened"))
    pipeline.handle_metric("rows_loaded", 10.0, {"dag_id": "etl", "task_id": "load"})
    assert not pipeline.ERROR_COUNTS


def test_metric_threshold_rule_raises_and_resolves(tmp_path, monkeypatch):
    """A metric over its threshold opens an alert; back under it, the alert resolves."""
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "rules:\n  dq_low:\n    type: metric\n    metric: data_quality_score\n    op: '<'\n    threshold: 90\n"
        "    severity: warning\n"
    )
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    labels = {"dag_id": "etl", "task_id": "check"}
    pipeline.handle_metric("data_quality_score", 80.0, labels)
    assert get_store().list_alerts()[0]["status"] == "open"
    pipeline.handle_metric("data_quality_score", 97.0, labels)
    assert get_store().list_alerts()[0]["status"] == "resolved"
    assert not pipeline.ERROR_COUNTS

"""Real DAG runs (`airflow dags test` in a subprocess, isolated AIRFLOW_HOME) through the alert engine to Slack."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasklens.store import Store
from tasklens.testing import SlackSink
from tests.integration.stack import airflow_env, dags_test

pytestmark = pytest.mark.integration

DAGS = Path(__file__).with_name("dags")


def _run(dag_id: str, home: Path) -> Store:
    done = dags_test(dag_id, home=home, dags_folder=DAGS, env={"AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false"})
    output = done.stdout + done.stderr
    assert "tasklens stage" not in output, output[-3000:]  # no stage of the pipeline failed in the task process
    return Store(f"sqlite:///{home / 'tasklens.db'}")


def test_final_failure_stores_one_critical_alert_and_dispatch_sends_one_escaped_message(tmp_path):
    """A task failing for good: one critical alert, one occurrence; the dispatcher posts it once, escaped."""
    home = tmp_path / "home"
    store = _run("tl_alert_failure", home)
    alerts = store.list_alerts()
    assert [(a["dag_id"], a["task_id"], a["severity"], a["status"]) for a in alerts] == [
        ("tl_alert_failure", "load_orders", "critical", "open")
    ]
    assert store.occurrence_count() == 1 and alerts[0]["exception_type"] == "ValueError"
    assert [d["state"] for d in store.deliveries()] == ["pending"]
    store.dispose()

    with SlackSink() as sink:
        # The standalone dispatcher process; its clock is the real one, so wait out group_wait with a rules file
        # that sends at once.
        rules = tmp_path / "rules.yml"
        rules.write_text("routes:\n  - name: all\n    channels: [slack]\n    group_wait: 0s\n")
        env = airflow_env(home, DAGS, {
            "AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri(),
            "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
        })
        _make_due(home)
        done = subprocess.run([sys.executable, "-m", "tasklens", "dispatch", "--once"], env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 messages sent" in done.stdout
        raw = json.dumps(sink.messages)
    assert len(sink.messages) == 1
    assert "load_orders" in raw and "&lt;!channel&gt;" in raw
    assert "<!channel>" not in raw and "<@U0001>" not in raw


def _make_due(home: Path) -> None:
    """Move the stored deliveries' due time past group_wait (what waiting 30 s would do)."""
    import sqlalchemy as sa

    store = Store(f"sqlite:///{home / 'tasklens.db'}")
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE tasklens_deliveries SET next_attempt_at = :t"),
                     {"t": (datetime.now(timezone.utc) - timedelta(seconds=1)).replace(tzinfo=None)})
    store.dispose()


def test_retry_then_success_stores_a_warning_and_the_success_writes_nothing(tmp_path):
    """A failed first try then a successful retry: the worker stores a warning retry alert; the success writes
    nothing to the store (the api-server resolves it from Airflow's records: tests/integration/
    test_settle_successes.py)."""
    store = _run("tl_alert_retry", tmp_path / "home")
    alerts = store.list_alerts()
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    assert (alert["task_id"], alert["rule"], alert["severity"]) == ("flaky_extract", "task_retry", "warning")
    assert alert["status"] == "open"
    events = store.events_for("tl_alert_retry", alert["run_id"], "flaky_extract")
    assert [(e["event"], e["try_number"]) for e in events] == [("up_for_retry", 1)]
    store.dispose()

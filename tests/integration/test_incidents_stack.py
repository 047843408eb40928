"""Incidents through a real stack: scheduler, dag-processor and api-server (LocalExecutor); the api-server's
dispatcher correlates and sends to a local Slack server through a `slackwebhook` connection.

Two DAGs fail from one warehouse outage -> one incident; a third fails differently -> a separate alert; the
upstream_failed chain of the first raises no alert of its own and is listed under its failure, with the
asset-triggered DAG that will not run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasklens.testing import SlackSink
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags_incidents"
FAILING = ("tl_incident_sales", "tl_incident_finance", "tl_incident_ml")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def test_one_cause_across_dags_is_one_incident_and_cascades_are_attributed(tmp_path):
    from tasklens import incident_store
    from tasklens.store import Store

    with SlackSink() as slack, AirflowStack(tmp_path / "home", DAGS, {
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
    }) as stack:
        for dag_id in (*FAILING, "tl_incident_datamart"):
            stack.wait_for_dag(dag_id)
        runs = {dag_id: stack.trigger(dag_id) for dag_id in FAILING}
        for dag_id, run_id in runs.items():
            assert stack.wait_for_run(dag_id, run_id) == "failed"
        states = stack.task_states("tl_incident_sales", runs["tl_incident_sales"])
        assert states == {"load": "failed", "transform": "upstream_failed", "publish": "upstream_failed"}

        store = Store(f"sqlite:///{stack.home / 'tasklens.db'}")
        try:
            _wait(lambda: len(store.list_alerts()) >= 3 and store.list_alerts(), 60, "three alerts")
            _wait(lambda: store.outbox_stats()["pending"] == 0 and len(slack.texts()) >= 2, 60, "messages sent")
            time.sleep(2)  # nothing more may come
            texts = slack.texts()
            by_task = {(a["dag_id"], a["task_id"]): a for a in store.list_alerts()}
            incidents = incident_store.list_incidents(store)
        finally:
            store.dispose()

    # No alert of their own for the upstream_failed tasks; each failure has its class.
    assert set(by_task) == {("tl_incident_sales", "load"), ("tl_incident_finance", "load"),
                            ("tl_incident_ml", "features")}
    assert by_task[("tl_incident_sales", "load")]["labels"]["failure_class"] == "dependency"
    assert by_task[("tl_incident_ml", "features")]["labels"]["failure_class"] == "code"

    (incident,) = [i for i in incidents if i.dags == 2]
    assert incident.members == 2 and incident.title.startswith("wh.internal unreachable (OperationalError:")
    assert all(i.members == 1 for i in incidents if i is not incident)  # the KeyError is on its own

    incident_texts = [t for t in texts if "2 tasks in 2 DAGs" in t]
    assert incident_texts, texts
    assert not any("customer_id" in t for t in incident_texts)
    assert [t for t in texts if "customer_id" in t and "tl_incident_ml" in t]
    sales = [t for t in texts if "tl_incident_sales" in t]
    assert any("Not run (upstream failed): publish and transform" in t for t in sales), sales
    assert any("tl_incident_datamart will not run" in t for t in sales), sales
    assert not any("tl_incident_sales.transform" in t or "tl_incident_sales.publish" in t for t in texts)

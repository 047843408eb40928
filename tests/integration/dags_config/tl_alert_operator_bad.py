"""An AlertOperator whose templated severity renders to an unknown one: the task must fail, naming the fix."""

from __future__ import annotations

from airflow.sdk import DAG

from tasklens.operators.alert import AlertOperator

with DAG("tl_alert_operator_bad", schedule=None, catchup=False, tags=["tasklens-test"],
         params={"severity": "urgent"}):
    AlertOperator(task_id="drift_alert", title="Drift", severity="{{ params.severity }}", retries=0)

"""Integration DAG (alert engine): a task that fails its first try and succeeds on its retry."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task


@dag(dag_id="tl_alert_retry", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_alert_retry():
    @task(retries=1, retry_delay=timedelta(seconds=1))
    def flaky_extract() -> str:
        if get_current_context()["ti"].try_number < 2:
            raise ConnectionError("upstream API timed out")
        return "ok"

    flaky_extract()


tl_alert_retry()

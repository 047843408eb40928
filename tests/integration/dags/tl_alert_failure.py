"""Integration DAG (alert engine): one task fails for good with Slack control sequences in its message."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="tl_alert_failure", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_alert_failure():
    @task
    def load_orders() -> None:
        raise ValueError("<!channel> <@U0001> *bold* <http://evil.example|click> rows=0")

    load_orders()


tl_alert_failure()

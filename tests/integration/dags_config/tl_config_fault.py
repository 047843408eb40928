"""Two plain tasks, tagged like a Spark DAG: what the bad-rules-file tests run (no import error, no failed task)."""

from __future__ import annotations

from airflow.sdk import DAG, task

with DAG("tl_config_fault", schedule=None, catchup=False, tags=["spark", "tasklens-test"]):

    @task
    def extract() -> int:
        return 1

    @task
    def load(value: int) -> int:
        return value + 1

    load(extract())

"""Integration DAG: a task that fails for good and a task that fails once, then succeeds on its retry."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="tl_obs_failures",
    schedule=None,
    catchup=False,
    tags=["tasklens-test"],
    default_args={"owner": "data-platform", "retries": 0},
)
def tl_obs_failures():
    @task
    def fails_for_good() -> None:
        raise ValueError("schema drift: column 'dep_delay' is missing")

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def retries_once() -> str:
        if get_current_context()["ti"].try_number < 2:
            raise ConnectionError("upstream API timed out")
        return "ok"

    fails_for_good()
    retries_once()


tl_obs_failures()

"""DAGs for the api-server's success checks: a retry that recovers, and a task whose duration a param sets."""

from __future__ import annotations

import time
from datetime import timedelta

from airflow.sdk import dag, get_current_context, task


@dag(dag_id="tl_settle_retry", schedule=None, catchup=False, tags=["tasklens-test"])
def settle_retry():
    @task(retries=1, retry_delay=timedelta(seconds=1))
    def flaky_extract() -> str:
        if get_current_context()["ti"].try_number < 2:
            raise ConnectionError("upstream API timed out")
        return "ok"

    flaky_extract()


@dag(dag_id="tl_settle_duration", schedule=None, catchup=False, tags=["tasklens-test"], params={"sleep_s": 1.0})
def settle_duration():
    @task
    def transform() -> None:
        time.sleep(float(get_current_context()["params"]["sleep_s"]))

    transform()


settle_retry()
settle_duration()

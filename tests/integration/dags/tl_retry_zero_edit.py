"""A DAG that knows nothing of tasklens: no import, no retries. The cluster policy adopts it."""

from __future__ import annotations

from airflow.sdk import DAG, task

with DAG("tl_retry_zero_edit", schedule=None, catchup=False, tags=["tasklens-test"]):

    @task
    def fetch_rates(ti=None):
        if ti.try_number == 1:
            raise TimeoutError("rates API did not answer in 10 s (simulated)")
        return {"EUR": 1.08}

    fetch_rates()

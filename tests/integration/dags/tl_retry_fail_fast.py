"""A validation error under the fail_fast preset: retries are configured but none is wasted."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

import tasklens

with DAG(
    "tl_retry_fail_fast",
    schedule=None,
    catchup=False,
    tags=["tasklens-test"],
    default_args={**tasklens.retry.preset("fail_fast", retries=3, retry_delay=timedelta(seconds=1))},
):

    @task
    def validate_orders():
        raise ValueError("order_date '2024-13-01' is not a date")

    validate_orders()

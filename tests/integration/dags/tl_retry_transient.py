"""A call that hits a connection reset on its first try and succeeds on the retry (transient_network preset)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

import tasklens

with DAG(
    "tl_retry_transient",
    schedule=None,
    catchup=False,
    tags=["tasklens-test"],
    # One-line adoption; short delays so the retry happens within the test.
    default_args={**tasklens.defaults(preset="transient_network", retry_delay=timedelta(seconds=1),
                                      max_retry_delay=timedelta(seconds=2))},
):

    @task
    def call_flaky_api(ti=None):
        if ti.try_number == 1:
            raise ConnectionResetError("connection reset by peer (simulated)")
        return "ok"

    call_flaky_api()

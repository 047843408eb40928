"""The compatibility suite's DAGs (make test-compat): written for every supported Airflow (3.1, 3.2, 3.3)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

MARKERS = Path(os.environ.get("TASKLENS_TEST_MARKERS", "/tmp/tasklens-test-markers"))


@dag(dag_id="tl_compat", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_compat():
    @task
    def loads() -> int:
        import tasklens

        tasklens.metrics.gauge("rows_loaded", 42)
        return 42

    @task
    def fails() -> None:
        raise ValueError("schema drift: column 'dep_delay' is missing")

    loads()
    fails()


tl_compat()


@dag(dag_id="tl_compat_killed", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_compat_killed():
    @task
    def sleeper() -> None:
        ti = get_current_context()["ti"]
        MARKERS.mkdir(parents=True, exist_ok=True)
        marker = MARKERS / f"{ti.dag_id}.{ti.task_id}.pid"
        # Written aside and renamed: the test polls for the file and must never read it empty.
        marker.with_suffix(".tmp").write_text(str(os.getpid()))
        os.replace(marker.with_suffix(".tmp"), marker)
        time.sleep(600)

    sleeper()


tl_compat_killed()

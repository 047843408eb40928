"""Tasks that write their PID to a marker file and sleep, so a test can SIGKILL exactly that process."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

MARKERS = Path(os.environ.get("TASKLENS_TEST_MARKERS", "/tmp/tasklens-test-markers"))


def _sleep_with_marker() -> str:
    ti = get_current_context()["ti"]
    if ti.try_number > 1:
        return "second attempt ran normally"
    MARKERS.mkdir(parents=True, exist_ok=True)
    marker = MARKERS / f"{ti.dag_id}.{ti.task_id}.{ti.run_id.replace(':', '_')}.{ti.try_number}.pid"
    # Written aside and renamed: the test polls for the file and must never read it empty.
    marker.with_suffix(".tmp").write_text(str(os.getpid()))
    os.replace(marker.with_suffix(".tmp"), marker)
    time.sleep(600)
    return "not killed"


for dag_id, retries in (("tl_killed_final", 0), ("tl_killed_retry", 1)):

    @dag(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        tags=["tasklens-test"],
        default_args={"owner": "tests", "retries": retries, "retry_delay": timedelta(seconds=1)},
    )
    def killed_dag():
        task(task_id="sleeper")(_sleep_with_marker)()

    killed_dag()


@dag(dag_id="tl_plain_failure", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 0})
def plain_failure():
    @task
    def raises() -> None:
        raise RuntimeError("an ordinary failure the worker reports itself")

    raises()


plain_failure()


def _sleep_past_the_overtime(context) -> None:
    """An on_retry_callback slower than [core] task_success_overtime (20 s): the supervisor stops the process."""
    time.sleep(30)


@dag(dag_id="tl_slow_retry_callback", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 1, "retry_delay": timedelta(seconds=1),
                   "on_retry_callback": _sleep_past_the_overtime})
def slow_retry_callback():
    @task
    def flaky() -> str:
        if get_current_context()["ti"].try_number == 1:
            raise ConnectionError("the first attempt fails")  # transient: the retry preset retries it
        return "the second attempt ran normally"

    flaky()


slow_retry_callback()


@dag(dag_id="tl_store_write_fails", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 0})
def store_write_fails():
    @task
    def fails_while_the_store_is_down() -> None:
        # The alert store refuses writes in this task process only (as when its database is unreachable), and so
        # does the local spool (as on a worker whose disk is full, or whose spool the api-server cannot see).
        from tasklens import spool, store
        from tasklens.exceptions import StoreError

        def refuse(*args, **kwargs):
            raise StoreError("could not write to the tasklens store: connection refused")

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        store.Store.record = refuse
        spool.Spool.append = disk_full
        raise ValueError("the load failed while the store was down")

    fails_while_the_store_is_down()


store_write_fails()

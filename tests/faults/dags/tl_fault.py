"""DAGs the fault-injection suite triggers: ordinary failures, a control run, and a task to kill."""

from __future__ import annotations

import os
import time
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

MARKERS = Path(os.environ.get("TASKLENS_TEST_MARKERS", "/tmp/tasklens-test-markers"))
FAILING_TASKS = ("fault_extract", "fault_transform", "fault_load")


@dag(dag_id="tl_fault_failures", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 0})
def fault_failures():
    for task_id in FAILING_TASKS:

        @task(task_id=task_id)
        def fails() -> None:
            ti = get_current_context()["ti"]
            raise RuntimeError(f"injected failure of {ti.task_id}")

        fails()

    @task
    def succeeds() -> str:
        return "ok"

    succeeds()


@dag(dag_id="tl_fault_control", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 0})
def fault_control():
    """Runs while a fault is injected: the scheduler must keep scheduling."""

    @task
    def quick() -> str:
        return "scheduled and ran"

    quick()


@dag(dag_id="tl_fault_hang", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "tests", "retries": 0})
def fault_hang():
    """A task that writes its PID and sleeps, so a test can kill its supervisor (heartbeat timeout path)."""

    @task
    def sleeper() -> str:
        ti = get_current_context()["ti"]
        MARKERS.mkdir(parents=True, exist_ok=True)
        (MARKERS / f"{ti.dag_id}.{ti.run_id.replace(':', '_')}.{ti.try_number}.pid").write_text(str(os.getpid()))
        time.sleep(600)
        return "not killed"

    sleeper()


fault_failures()
fault_control()
fault_hang()

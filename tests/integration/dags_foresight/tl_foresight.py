"""DAGs for the api-server's in-flight checks: tasks whose durations params set."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task


@dag(dag_id="tl_foresight_warmup", schedule=None, catchup=False, tags=["tasklens-test"])
def foresight_warmup():
    """The stack's first task process starts cold (10-20 s here): run it outside the histories under test."""

    @task
    def warm() -> None:
        pass

    warm()


@dag(dag_id="tl_foresight_overrun", schedule=None, catchup=False, tags=["tasklens-test"], params={"sleep_s": 1.0})
def foresight_overrun():
    @task
    def train() -> None:
        time.sleep(float(get_current_context()["params"]["sleep_s"]))

    train()



@dag(dag_id="tl_foresight_deadline", schedule=None, catchup=False, tags=["tasklens-test", "deadline"],
     params={"prep_s": 0.0, "work_s": 1.0})
def foresight_deadline():
    @task
    def prep() -> None:
        time.sleep(float(get_current_context()["params"]["prep_s"]))

    @task
    def work() -> None:
        time.sleep(float(get_current_context()["params"]["work_s"]))

    prep() >> work()


@dag(dag_id="tl_foresight_late", schedule=timedelta(minutes=1), start_date=datetime(2026, 1, 1), catchup=False,
     tags=["tasklens-test"])
def foresight_late():
    """A scheduled DAG whose task needs the "tl_full" pool, which the test creates with no slots."""

    @task(pool="tl_full")
    def load() -> None:
        pass

    load()


foresight_warmup()
foresight_overrun()
foresight_deadline()
foresight_late()

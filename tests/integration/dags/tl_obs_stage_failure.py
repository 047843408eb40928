"""Integration DAG: with TL_OBS_BREAK_METRICS=1 tasklens' metrics stage raises; the task must still succeed.

``airflow dags test`` parses this file in the process that runs the task, so patching here
reaches the pipeline. The env guard keeps the patch out of every other run.
"""

from __future__ import annotations

import os

from airflow.sdk import dag, task

if os.environ.get("TL_OBS_BREAK_METRICS") == "1":
    from tasklens import metrics

    def _broken_record_event(event):
        raise RuntimeError("metrics stage broken on purpose (integration test)")

    metrics.record_event = _broken_record_event


@dag(
    dag_id="tl_obs_stage_failure",
    schedule=None,
    catchup=False,
    tags=["tasklens-test"],
    default_args={"owner": "data-platform", "retries": 0},
)
def tl_obs_stage_failure():
    @task
    def still_succeeds() -> str:
        return "ok"

    still_succeeds()


tl_obs_stage_failure()

"""Integration DAG for OpenTelemetry: a task that reports a gauge and then fails for good."""

from __future__ import annotations

from airflow.sdk import dag, task

import tasklens


@dag(dag_id="tl_otel", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"owner": "data-platform", "retries": 0})
def tl_otel():
    @task
    def score_model() -> None:
        tasklens.metrics.gauge("roc_auc", 0.71)
        raise ValueError("the feature table is empty")

    score_model()


tl_otel()

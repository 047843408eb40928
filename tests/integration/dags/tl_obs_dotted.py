"""Integration DAG: ids with dots and dashes, and the task-code API (logger, business event, custom metrics, timed)."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(
    dag_id="tl_obs.dag.with.dots",
    schedule=None,
    catchup=False,
    tags=["tasklens-test"],
    default_args={"owner": "data-platform", "retries": 0},
)
def tl_obs_dotted():
    @task(task_id="task-with-dash")
    def task_with_dash() -> int:
        import tasklens
        from tasklens import metrics

        log = tasklens.get_logger()
        log.info("loading flights", table="flights")
        with tasklens.timed("transform", stage="silver"):
            rows = 1200
        log.business_event("rows_loaded", rows=rows, table="flights")
        metrics.incr("records_processed", rows)
        metrics.gauge("data_quality_score", 97.5)
        return rows

    task_with_dash()


tl_obs_dotted()

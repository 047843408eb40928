"""Demo DAG: one task that succeeds, one that fails once then recovers, one that fails for good.

Trigger it from the UI to see tasklens events, metrics and alerts (Slack/email) end to end.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": timedelta(seconds=2)}


@dag(
    dag_id="tasklens_demo",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["tasklens", "demo"],
    doc_md=__doc__,
)
def tasklens_demo():
    @task
    def succeed() -> int:
        import tasklens

        tasklens.metrics.gauge("records_processed", 42)
        return 42

    @task
    def flaky() -> str:
        # Fails on the first try, succeeds on the retry: a retry warning, then a resolve.
        if get_current_context()["ti"].try_number < 2:
            raise ConnectionError("upstream API timed out (demo)")
        return "ok"

    @task(retries=0)
    def broken() -> None:
        raise ValueError("schema drift: column 'dep_delay' is missing <demo>")

    succeed() >> flaky() >> broken()


tasklens_demo()

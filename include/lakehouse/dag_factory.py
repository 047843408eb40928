"""Building blocks of the lakehouse DAGs, shared by ``dags/lakehouse_*.py`` so the chained DAGs and the
all-in-one ``lakehouse_pipeline`` run exactly the same tasks.

Imports nothing heavy: DAG files are parsed often, PySpark loads only when a task runs.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowSkipException

from lakehouse import layout
from lakehouse._io import read_json
from lakehouse.schemas import FLIGHT_KEY
from tasklens.operators.quality import DataQualityOperator, fresh, in_range, not_null, row_count_delta, unique
from tasklens.operators.spark import SparkJobOperator

__all__ = [
    "BRONZE",
    "DEFAULT_ARGS",
    "GOLD",
    "MODEL",
    "SILVER",
    "START_DATE",
    "build_gold",
    "check_silver",
    "expected_latest_day",
    "ingest",
    "land",
    "preprocess",
    "publish_sql",
    "sql_conn_id",
    "train_model",
]

START_DATE = datetime(2013, 1, 1, tzinfo=timezone.utc)
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "lakehouse-team",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}

BRONZE = Asset(name="bronze.flights", uri="lakehouse://bronze/flights", group="lakehouse")
SILVER = Asset(name="silver.flights", uri="lakehouse://silver/flights", group="lakehouse")
GOLD = Asset(name="gold.kpis", uri="lakehouse://gold/kpis", group="lakehouse")
MODEL = Asset(name="ml.flight_delay_model", uri="lakehouse://models/flight_delay", group="lakehouse")

#: Data-quality bars for silver, in percent.
DQ_WARN_BELOW = 95.0
DQ_FAIL_BELOW = 50.0


def sql_conn_id() -> str:
    """Connection the gold tables are published to (``LAKEHOUSE_SQL_CONN_ID``, default ``lakehouse_sql``)."""
    return os.environ.get("LAKEHOUSE_SQL_CONN_ID", "lakehouse_sql")


def expected_latest_day() -> date | None:
    """First day of the newest month upstream delivered (ingested or quarantined): silver must reach it."""
    files = read_json(layout().manifest, {"files": {}})["files"]
    months = sorted(name[len("flights_") : -len(".csv")] for name in files)
    if not months:
        return None
    year, month = months[-1].split("-")
    return date(int(year), int(month), 1)


def _read_silver(spark: Any) -> Any:
    return spark.read.parquet(str(layout().silver))


def land(**kwargs: Any) -> Any:
    """Demo helper task: deliver ``params.months`` into the landing zone, with ``params.fault`` if set."""

    @task(task_id="land", **kwargs)
    def _land(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from lakehouse import landing

        params = params or {}
        if params.get("land") is False:
            raise AirflowSkipException("params.land is false: using the landing zone as it is")
        faults = [params["fault"]] if params.get("fault") else []
        return landing.land(months=params.get("months") or "all", faults=faults).to_dict()

    return _land()


def ingest(month: str | None, **kwargs: Any) -> SparkJobOperator:
    return SparkJobOperator(
        task_id="ingest",
        job="lakehouse.feeder:run",
        job_kwargs={"month": month},
        skip_if_no_input=True,
        doc_md="Landing CSVs -> bronze Parquet; bad files go to quarantine.",
        **kwargs,
    )


def preprocess(**kwargs: Any) -> SparkJobOperator:
    return SparkJobOperator(
        task_id="clean_and_enrich",
        job="lakehouse.preprocessor:run",
        doc_md="Bronze -> silver: drop cancelled/invalid/duplicate flights, join weather, planes, airports; features.",
        **kwargs,
    )


def check_silver(**kwargs: Any) -> DataQualityOperator:
    return DataQualityOperator(
        task_id="check_silver",
        table=_read_silver,
        checks=[
            not_null("carrier", "origin", "dest", "dep_delay", "time_hour", "flight_date"),
            not_null("temp", "wind_speed", "visib", min_ratio=0.95),  # weather join coverage
            unique(*FLIGHT_KEY),
            in_range("dep_delay", -60, 1500),
            in_range("distance", 1, 5000),
            in_range("hour_of_day", 0, 23),
            row_count_delta(max_drop_pct=20.0),
            fresh("flight_date", within=timedelta(0), reference=expected_latest_day),
        ],
        warn_below=DQ_WARN_BELOW,
        fail_below=DQ_FAIL_BELOW,
        doc_md="Completeness, uniqueness, ranges, row-count delta and freshness of silver -> data_quality_score.",
        **kwargs,
    )


def build_gold(**kwargs: Any) -> SparkJobOperator:
    return SparkJobOperator(
        task_id="build_gold",
        job="lakehouse.datamart:run",
        doc_md="Silver -> gold KPI tables (on-time rate, delay percentiles, busiest routes, weather impact).",
        **kwargs,
    )


def publish_sql(**kwargs: Any) -> Any:
    @task(task_id="publish_sql", **kwargs)
    def _publish() -> dict[str, int]:
        """Copy the gold tables into the database of connection ``lakehouse_sql``; skipped when it is not set."""
        from airflow.sdk import BaseHook

        from lakehouse.datamart import publish_to_sql

        try:
            connection = BaseHook.get_connection(sql_conn_id())
        except Exception as error:  # AirflowNotFoundException: the optional sink is not configured
            raise AirflowSkipException(
                f"no connection {sql_conn_id()!r}: gold stays in Parquet only ({error})"
            ) from None
        return publish_to_sql(connection)

    return _publish()


def train_model(**kwargs: Any) -> SparkJobOperator:
    return SparkJobOperator(
        task_id="train_evaluate_score",
        job="lakehouse.ml:run",
        doc_md="Train the delay classifier, evaluate on the latest month, save a version, score the latest month.",
        **kwargs,
    )

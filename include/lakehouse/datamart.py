"""Datamart: silver -> gold KPI tables (Parquet), optionally published to a SQL database.

Tables: ``kpi_by_carrier``, ``kpi_by_origin``, ``kpi_by_route``, ``kpi_by_day`` (flights, on-time rate,
average and 50/90/95th percentile departure delay, arrival on-time rate), ``busiest_routes`` (ranked by
flights) and ``weather_impact`` (on-time rate with and without precipitation, low visibility, high wind, frost).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse import layout
from lakehouse.preprocessor import DELAY_MINUTES
from tasklens.spark import JobResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["KPI_TABLES", "build_gold", "busiest_routes", "delay_kpis", "publish_to_sql", "run", "weather_impact"]

KPI_TABLES = {
    "kpi_by_carrier": ("carrier", "carrier_name"),
    "kpi_by_origin": ("origin",),
    "kpi_by_route": ("route", "origin", "dest"),
    "kpi_by_day": ("flight_date",),
}
GOLD_TABLES = (*KPI_TABLES, "busiest_routes", "weather_impact")
WEATHER_CONDITIONS = ("has_precip", "low_visibility", "high_wind", "freezing")


def delay_kpis(silver: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Per ``keys``: flights, on-time rate (departure delay <= 15 min), delay average and percentiles."""
    from pyspark.sql import functions as F

    percentiles = F.percentile_approx("dep_delay", [0.5, 0.9, 0.95], 1000)
    return (
        silver.groupBy(*keys)
        .agg(
            F.count("*").alias("flights"),
            F.avg((F.col("dep_delay") <= DELAY_MINUTES).cast("double")).alias("on_time_rate"),
            F.avg((F.col("arr_delay") <= DELAY_MINUTES).cast("double")).alias("arrival_on_time_rate"),
            F.avg("dep_delay").alias("avg_dep_delay"),
            percentiles.alias("_p"),
        )
        .withColumn("p50_dep_delay", F.col("_p")[0])
        .withColumn("p90_dep_delay", F.col("_p")[1])
        .withColumn("p95_dep_delay", F.col("_p")[2])
        .drop("_p")
    )


def busiest_routes(silver: DataFrame) -> DataFrame:
    """Routes ranked by flights (1 = busiest), with distance and on-time rate."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    routes = silver.groupBy("route", "origin", "dest", "dest_name").agg(
        F.count("*").alias("flights"),
        F.avg("distance").alias("distance"),
        F.avg((F.col("dep_delay") <= DELAY_MINUTES).cast("double")).alias("on_time_rate"),
    )
    return routes.withColumn(
        "rank", F.row_number().over(Window.partitionBy(F.lit(0)).orderBy(F.desc("flights"), "route"))
    )


def weather_impact(silver: DataFrame) -> DataFrame:
    """For each weather condition: flights, on-time rate and average delay with the condition and without."""
    from pyspark.sql import functions as F

    stacked = silver.select(
        "dep_delay",
        F.explode(
            F.array(*[F.struct(F.lit(c).alias("condition"), F.col(c).alias("present")) for c in WEATHER_CONDITIONS])
        ).alias("w"),
    )
    return stacked.groupBy(F.col("w.condition").alias("condition"), F.col("w.present").alias("present")).agg(
        F.count("*").alias("flights"),
        F.avg((F.col("dep_delay") <= DELAY_MINUTES).cast("double")).alias("on_time_rate"),
        F.avg("dep_delay").alias("avg_dep_delay"),
    )


def build_gold(silver: DataFrame) -> dict[str, DataFrame]:
    tables = {name: delay_kpis(silver, keys) for name, keys in KPI_TABLES.items()}
    tables["busiest_routes"] = busiest_routes(silver)
    tables["weather_impact"] = weather_impact(silver)
    return tables


def run(spark: SparkSession, *, root: str | None = None) -> JobResult:
    """Rebuild every gold table from silver."""
    zones = layout(root)
    silver = spark.read.parquet(str(zones.silver)).cache()
    rows_in = silver.count()
    written: dict[str, int] = {}
    for name, table in build_gold(silver).items():
        table.coalesce(1).write.mode("overwrite").parquet(str(zones.gold / name))
        written[name] = spark.read.parquet(str(zones.gold / name)).count()
    silver.unpersist()
    return JobResult(
        records_in=rows_in,
        records_out=sum(written.values()),
        records_rejected=0,
        outputs={"tables": written, "gold": str(zones.gold)},
    )


def _sqlalchemy_url(conn: Any) -> str:
    """SQLAlchemy URL of an Airflow connection: extra ``sqlalchemy_url`` wins; sqlite uses ``host`` as the path."""
    from sqlalchemy.engine import URL

    explicit = conn.extra_dejson.get("sqlalchemy_url")
    if explicit:
        return str(explicit)
    if conn.conn_type == "sqlite":
        return URL.create("sqlite", database=conn.host).render_as_string(hide_password=False)
    driver = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}.get(
        conn.conn_type, conn.conn_type
    )
    return URL.create(
        driver, username=conn.login, password=conn.password, host=conn.host, port=conn.port, database=conn.schema
    ).render_as_string(hide_password=False)


def publish_to_sql(conn: Any, root: str | None = None, *, prefix: str = "lakehouse_") -> dict[str, int]:
    """Copy every gold table into the database of Airflow connection ``conn`` (tables replaced), without Spark."""
    import pandas as pd
    from sqlalchemy import create_engine

    zones = layout(root)
    engine = create_engine(_sqlalchemy_url(conn))
    published: dict[str, int] = {}
    try:
        for name in GOLD_TABLES:
            directory = Path(zones.gold) / name
            if not directory.is_dir():
                continue
            frame = pd.read_parquet(directory)
            frame.to_sql(f"{prefix}{directory.name}", engine, if_exists="replace", index=False)
            published[directory.name] = len(frame)
    finally:
        engine.dispose()
    return published

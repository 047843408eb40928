"""Preprocessor: bronze -> silver. Clean, join reference data, derive features.

Cleaning drops cancelled flights (no departure time or delay), rows missing a required value, and duplicate
deliveries of the same flight (:data:`lakehouse.schemas.FLIGHT_KEY`, latest ingestion wins). Enrichment joins
the hourly weather at the origin, the plane, and the destination airport. Data quality is checked on the
result by ``DataQualityOperator`` (see ``dags/lakehouse_preprocessor.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakehouse import layout, schemas
from lakehouse._io import read_reference
from tasklens.spark import JobResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DELAY_MINUTES", "add_features", "clean", "enrich", "run"]

#: A departure more than this many minutes late counts as delayed (the US DOT definition).
DELAY_MINUTES = 15


def clean(flights: DataFrame) -> DataFrame:
    """Flights that operated, with every required value, each flight once (the latest delivery)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    operated = flights.filter(F.col("dep_time").isNotNull() & F.col("dep_delay").isNotNull())
    for name in schemas.required_columns(schemas.FLIGHTS):
        operated = operated.filter(F.col(name).isNotNull())
    order = [F.col("_ingested_at").desc_nulls_last()] if "_ingested_at" in flights.columns else [F.lit(1)]
    latest_first = Window.partitionBy(*schemas.FLIGHT_KEY).orderBy(*order)
    return operated.withColumn("_copy", F.row_number().over(latest_first)).filter("_copy = 1").drop("_copy")


def enrich(
    flights: DataFrame, weather: DataFrame, planes: DataFrame, airports: DataFrame, airlines: DataFrame
) -> DataFrame:
    """Left-join weather (origin, hour), plane (tail number), destination airport and airline name."""
    from pyspark.sql import functions as F

    hourly = weather.dropDuplicates(["origin", "time_hour"]).select(
        "origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"
    )
    plane = planes.dropDuplicates(["tailnum"]).select(
        "tailnum", F.col("year").alias("plane_year"), "manufacturer", "seats", "engines"
    )
    dest = airports.dropDuplicates(["faa"]).select(
        F.col("faa").alias("dest"),
        F.col("name").alias("dest_name"),
        F.col("lat").alias("dest_lat"),
        F.col("lon").alias("dest_lon"),
        F.col("tz").alias("dest_tz"),
    )
    names = airlines.select("carrier", F.col("name").alias("carrier_name"))
    return (
        flights.join(F.broadcast(hourly), ["origin", "time_hour"], "left")
        .join(F.broadcast(plane), ["tailnum"], "left")
        .join(F.broadcast(dest), ["dest"], "left")
        .join(F.broadcast(names), ["carrier"], "left")
    )


def add_features(frame: DataFrame) -> DataFrame:
    """Delay flags, calendar and route features, weather flags, plane age."""
    from pyspark.sql import functions as F

    flight_date = F.make_date("year", "month", "day")
    return (
        frame.withColumn("flight_date", flight_date)
        .withColumn("day_of_week", F.dayofweek(flight_date))
        .withColumn("is_weekend", F.dayofweek(flight_date).isin(1, 7))
        .withColumn("hour_of_day", F.col("hour"))
        .withColumn("route", F.concat_ws("-", "origin", "dest"))
        .withColumn("dep_delayed", F.col("dep_delay") > DELAY_MINUTES)
        .withColumn("arr_delayed", F.col("arr_delay") > DELAY_MINUTES)
        .withColumn("has_precip", F.coalesce(F.col("precip") > 0, F.lit(False)))
        .withColumn("low_visibility", F.coalesce(F.col("visib") < 3, F.lit(False)))
        .withColumn("high_wind", F.coalesce(F.col("wind_speed") >= 25, F.lit(False)))
        .withColumn("freezing", F.coalesce(F.col("temp") <= 32, F.lit(False)))
        .withColumn("plane_age", F.col("year") - F.col("plane_year"))
    )


def run(spark: SparkSession, *, root: str | None = None) -> JobResult:
    """Rebuild silver from all of bronze (idempotent; a year of flights takes seconds)."""
    from pyspark.sql import functions as F

    zones = layout(root)
    bronze = spark.read.parquet(str(zones.bronze))
    totals = bronze.agg(
        F.count("*").alias("rows"),
        F.sum((F.col("dep_time").isNull() | F.col("dep_delay").isNull()).cast("int")).alias("cancelled"),
    ).first()
    silver = add_features(
        enrich(
            clean(bronze),
            read_reference(spark, zones, "weather"),
            read_reference(spark, zones, "planes"),
            read_reference(spark, zones, "airports"),
            read_reference(spark, zones, "airlines"),
        )
    )
    silver.write.mode("overwrite").partitionBy("year", "month").parquet(str(zones.silver))
    written = spark.read.parquet(str(zones.silver)).count()
    rows, cancelled = int(totals["rows"] or 0), int(totals["cancelled"] or 0)
    return JobResult(
        records_in=rows,
        records_out=written,
        records_rejected=rows - written,
        metrics={"records_cancelled": cancelled, "records_duplicate_or_invalid": rows - cancelled - written},
        outputs={"silver": str(zones.silver)},
    )

"""lakehouse.preprocessor: cleaning, enrichment and features on small frames; a run from bronze to silver."""

from __future__ import annotations

from datetime import datetime

import pytest
from lakehouse import layout, preprocessor
from lakehouse.schemas import FLIGHTS, REFERENCE, column_names, spark_schema

from tests.spark_fixtures import spark  # noqa: F401

T10 = datetime(2013, 1, 5, 10)


def _flight(flight=1, dep_time=517, dep_delay=20.0, ingested=1, tailnum="N1", dest="IAH", hour=5):
    return (
        2013,
        1,
        5,
        dep_time,
        515,
        dep_delay,
        830,
        819,
        11.0,
        "UA",
        flight,
        tailnum,
        "EWR",
        dest,
        227.0,
        1400.0,
        hour,
        15,
        T10,
        datetime(2013, 2, 1, ingested),
    )


@pytest.fixture
def flights(spark):  # noqa: F811
    schema = spark_schema(FLIGHTS).add("_ingested_at", "timestamp")
    rows = [
        _flight(1, dep_delay=20.0, ingested=1),
        _flight(1, dep_delay=25.0, ingested=2),  # re-delivered: the latest wins
        _flight(2, dep_time=None, dep_delay=None),  # cancelled
        _flight(3, dep_delay=-3.0, tailnum="N404", dest="ZZZ", hour=22),
    ]
    return spark.createDataFrame(rows, schema)


@pytest.fixture
def reference(spark):  # noqa: F811
    weather = spark.createDataFrame(
        [("EWR", 2013, 1, 5, 10, 30.0, 20.0, 60.0, 270.0, 30.0, None, 0.1, 1010.0, 2.0, T10)] * 2,  # DST duplicate
        spark_schema(REFERENCE["weather"]),
    )
    planes = spark.createDataFrame(
        [("N1", 2003, "F", "BOEING", "737", 2, 150, None, "Turbo-fan")], spark_schema(REFERENCE["planes"])
    )
    airports = spark.createDataFrame(
        [("IAH", "Houston", 29.9, -95.3, 97.0, -6.0, "A", "America/Chicago")], spark_schema(REFERENCE["airports"])
    )
    airlines = spark.createDataFrame([("UA", "United Air Lines Inc.")], spark_schema(REFERENCE["airlines"]))
    return weather, planes, airports, airlines


def test_clean_drops_cancelled_and_keeps_the_latest_delivery(flights):
    """Cancelled flights go; a flight delivered twice stays once, with the latest values."""
    cleaned = {r["flight"]: r["dep_delay"] for r in preprocessor.clean(flights).collect()}
    assert cleaned == {1: 25.0, 3: -3.0}


def test_enrich_left_joins_reference_data(flights, reference):
    """Weather, plane, destination and airline are joined; unknown keys keep the flight with nulls."""
    rows = {r["flight"]: r for r in preprocessor.enrich(preprocessor.clean(flights), *reference).collect()}
    assert len(rows) == 2  # the duplicated weather hour did not duplicate flights
    assert (rows[1]["temp"], rows[1]["plane_year"], rows[1]["dest_name"], rows[1]["carrier_name"]) == (
        30.0,
        2003,
        "Houston",
        "United Air Lines Inc.",
    )
    assert rows[3]["plane_year"] is None and rows[3]["dest_name"] is None


def test_features(flights, reference):
    """Delay flag (> 15 min), calendar, route, weather flags and plane age are derived."""
    rows = {
        r["flight"]: r
        for r in preprocessor.add_features(preprocessor.enrich(preprocessor.clean(flights), *reference)).collect()
    }
    first, third = rows[1], rows[3]
    assert (first["dep_delayed"], third["dep_delayed"]) == (True, False)
    assert first["route"] == "EWR-IAH" and first["hour_of_day"] == 5 and third["hour_of_day"] == 22
    assert first["day_of_week"] == 7 and first["is_weekend"]  # 2013-01-05 was a Saturday
    assert (first["has_precip"], first["low_visibility"], first["high_wind"], first["freezing"]) == (
        True,
        True,
        True,
        True,
    )
    assert first["plane_age"] == 10 and str(first["flight_date"]) == "2013-01-05"


def test_run_rebuilds_silver_and_counts_rejections(spark, tmp_path, flights):  # noqa: F811
    """A run reads bronze and reference CSVs, writes silver, and reports cancelled and duplicate rows."""
    zones = layout(tmp_path)
    flights.write.partitionBy("year", "month").parquet(str(zones.bronze))
    zones.reference.mkdir(parents=True)
    for name, columns in REFERENCE.items():
        header = ",".join(column_names(columns))
        sample = {
            "weather": "EWR,2013,1,5,10,30,20,60,270,5,NA,0,1010,10,2013-01-05T10:00:00Z",
            "planes": "N1,2003,F,BOEING,737,2,150,NA,Turbo-fan",
            "airports": "IAH,Houston,29.9,-95.3,97,-6,A,America/Chicago",
            "airlines": "UA,United Air Lines Inc.",
        }[name]
        (zones.reference / f"{name}.csv").write_text(f"{header}\n{sample}\n")
    result = preprocessor.run(spark, root=str(tmp_path))
    assert (result.records_in, result.records_out, result.records_rejected) == (4, 2, 2)
    assert result.metrics == {"records_cancelled": 1, "records_duplicate_or_invalid": 1}
    assert spark.read.parquet(str(zones.silver)).filter("temp = 30").count() == 2

"""lakehouse.datamart: KPI tables on small frames, a run to gold Parquet, publishing to SQL."""

from __future__ import annotations

import sqlite3
from datetime import date
from types import SimpleNamespace

import pytest
from lakehouse import datamart, layout

from tests.spark_fixtures import spark  # noqa: F401

COLUMNS = (
    "carrier string, carrier_name string, origin string, dest string, dest_name string, route string, "
    "flight_date date, dep_delay double, arr_delay double, distance double, "
    "has_precip boolean, low_visibility boolean, high_wind boolean, freezing boolean"
)


def _row(carrier, delay, route="EWR-IAH", precip=False):
    origin, dest = route.split("-")
    return (
        carrier,
        f"{carrier} Inc.",
        origin,
        dest,
        dest,
        route,
        date(2013, 1, 1),
        delay,
        delay,
        1400.0,
        precip,
        False,
        False,
        False,
    )


@pytest.fixture
def silver(spark):  # noqa: F811
    rows = [_row("AA", d) for d in (0.0, 10.0, 20.0, 60.0)] + [
        _row("UA", -5.0, "JFK-LAX", precip=True),
        _row("UA", 30.0, "JFK-LAX", precip=True),
        _row("UA", 0.0, "JFK-MIA"),
    ]
    return spark.createDataFrame(rows, COLUMNS)


def test_delay_kpis_per_carrier(silver):
    """On-time rate counts departures at most 15 minutes late; percentiles describe the delay distribution."""
    kpis = {r["carrier"]: r for r in datamart.delay_kpis(silver, ["carrier"]).collect()}
    assert kpis["AA"]["flights"] == 4 and kpis["AA"]["on_time_rate"] == 0.5
    assert kpis["AA"]["avg_dep_delay"] == 22.5
    assert (kpis["AA"]["p50_dep_delay"], kpis["AA"]["p95_dep_delay"]) == (10.0, 60.0)
    assert kpis["UA"]["on_time_rate"] == pytest.approx(2 / 3)


def test_busiest_routes_are_ranked(silver):
    """Routes are ranked by number of flights, busiest first."""
    ranked = [(r["rank"], r["route"], r["flights"]) for r in datamart.busiest_routes(silver).orderBy("rank").collect()]
    assert ranked == [(1, "EWR-IAH", 4), (2, "JFK-LAX", 2), (3, "JFK-MIA", 1)]


def test_weather_impact_compares_with_and_without(silver):
    """Each weather condition gets one row with it and one without."""
    rows = {(r["condition"], r["present"]): r for r in datamart.weather_impact(silver).collect()}
    assert rows[("has_precip", True)]["flights"] == 2 and rows[("has_precip", True)]["on_time_rate"] == 0.5
    assert rows[("has_precip", False)]["flights"] == 5
    assert len(rows) == 5  # four conditions without, plus precipitation with


def test_run_writes_gold_and_publishes_to_sqlite(spark, silver, tmp_path):  # noqa: F811
    """A run writes every gold table; publish_to_sql copies them into the connection's database."""
    zones = layout(tmp_path)
    silver.write.parquet(str(zones.silver))
    result = datamart.run(spark, root=str(tmp_path))
    assert result.records_in == 7 and result.outputs["tables"]["kpi_by_carrier"] == 2
    assert set(result.outputs["tables"]) == set(datamart.GOLD_TABLES)
    database = tmp_path / "gold.db"
    conn = SimpleNamespace(conn_type="sqlite", host=str(database), extra_dejson={})
    published = datamart.publish_to_sql(conn, str(tmp_path))
    assert published["busiest_routes"] == 3
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from lakehouse_kpi_by_carrier").fetchone() == (2,)


def test_sqlalchemy_url_from_connections():
    """An explicit sqlalchemy_url extra wins; postgres connections use psycopg2."""
    pg = SimpleNamespace(
        conn_type="postgres", host="db", port=5432, login="u", password="p", schema="dw", extra_dejson={}
    )
    assert datamart._sqlalchemy_url(pg) == "postgresql+psycopg2://u:p@db:5432/dw"
    explicit = SimpleNamespace(conn_type="generic", extra_dejson={"sqlalchemy_url": "sqlite://"})
    assert datamart._sqlalchemy_url(explicit) == "sqlite://"

"""lakehouse.feeder: landing files to bronze with schema validation, quarantine and incremental state."""

from __future__ import annotations

import json

import pytest
from lakehouse import feeder, layout
from lakehouse.schemas import FLIGHTS, column_names

from tests.spark_fixtures import spark  # noqa: F401

HEADER = ",".join(column_names(FLIGHTS))


def _row(month=1, day=1, flight=1, dep_time="517", dep_delay="2", time_hour=None):
    time_hour = time_hour or f"2013-{month:02d}-{day:02d}T10:00:00Z"
    return (
        f"2013,{month},{day},{dep_time},515,{dep_delay},830,819,11,UA,{flight},N14228,EWR,IAH,227,1400,5,15,{time_hour}"
    )


def _deliver(root, month, rows, header=HEADER):
    path = layout(root).landing / f"flights_2013-{month:02d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _bronze_count(spark, root, month=None):  # noqa: F811
    frame = spark.read.parquet(str(layout(root).bronze))
    return frame.filter(f"month = {month}").count() if month else frame.count()


def test_header_must_match_the_declared_schema(tmp_path):
    """A renamed or added column is schema drift; the reason names the columns."""
    good = _deliver(tmp_path, 1, [_row()])
    drifted = _deliver(tmp_path, 2, [_row(2)], header=HEADER.replace("dep_delay", "departure_delay") + ",gate")
    assert feeder.validate_header(good) is None
    reason = feeder.validate_header(drifted)
    assert "missing columns ['dep_delay']" in reason and "'gate'" in reason


def test_row_validation_flags_missing_unparsable_and_misfiled_rows(spark):  # noqa: F811
    """Rows missing a required value, with a value that does not parse, or outside the file's month are invalid."""
    names = column_names(FLIGHTS)

    def row(**overrides):
        values = dict(zip(names, _row().split(",")))
        values.update(overrides)
        return [values[n] for n in names] + ["2013-01"]

    raw = spark.createDataFrame(
        [row(), row(dep_time=None, dep_delay=None), row(time_hour=None), row(distance="far"), row(month="2")],
        ", ".join(f"`{n}` string" for n in [*names, "_file_month"]),
    )
    flags = [r["_invalid"] for r in feeder.validate_rows(raw).collect()]
    assert flags == [False, False, True, True, True]  # a cancelled flight (no dep_time) is valid input


def test_ingests_good_files_once_into_month_partitions(spark, tmp_path):  # noqa: F811
    """Good files land in bronze year/month partitions; a second run finds nothing new."""
    _deliver(tmp_path, 1, [_row(flight=i) for i in range(5)])
    _deliver(tmp_path, 2, [_row(2, flight=i) for i in range(3)])
    result = feeder.run(spark, root=str(tmp_path), month="2013-02")
    assert (result.records_in, result.records_out, result.records_rejected) == (8, 8, 0)
    assert result.outputs["ingested"] == {"2013-01": 5, "2013-02": 3}
    assert (_bronze_count(spark, tmp_path, 1), _bronze_count(spark, tmp_path, 2)) == (5, 3)
    again = feeder.run(spark, root=str(tmp_path), month="2013-02")
    assert (again.records_in, again.records_out) == (0, 0)


def test_truncated_and_drifted_files_go_to_quarantine(spark, tmp_path):  # noqa: F811
    """A truncated file and a drifted file are moved to quarantine with a reason; none of their rows reach bronze."""
    _deliver(tmp_path, 1, [_row(flight=i) for i in range(4)])
    _deliver(tmp_path, 2, [_row(2, flight=1), _row(2, flight=2)[:40]])  # cut inside the second row
    _deliver(tmp_path, 3, [_row(3)], header=HEADER.replace("dep_delay", "departure_delay"))
    result = feeder.run(spark, root=str(tmp_path), month="2013-03")
    assert (result.records_in, result.records_out, result.records_rejected) == (7, 4, 3)
    zones = layout(tmp_path)
    reasons = sorted(json.loads(p.read_text())["reason"] for p in zones.quarantine.glob("*.reason.json"))
    assert len(reasons) == 2 and "1 of 2 rows" in reasons[0] and reasons[1].startswith("schema drift")
    assert not (zones.landing / "flights_2013-02.csv").exists()
    assert _bronze_count(spark, tmp_path) == 4
    manifest = json.loads(zones.manifest.read_text())["files"]
    assert manifest["flights_2013-02.csv"]["status"] == "quarantined"


def test_late_and_redelivered_files(spark, tmp_path):  # noqa: F811
    """A late month is picked up by the next run; a re-delivered month replaces its partition."""
    _deliver(tmp_path, 2, [_row(2, flight=i) for i in range(3)])
    assert feeder.run(spark, root=str(tmp_path), month="2013-02").records_out == 3
    late = _deliver(tmp_path, 1, [_row(1, flight=i) for i in range(2)])
    assert feeder.run(spark, root=str(tmp_path), month="2013-03").outputs["ingested"] == {"2013-01": 2}
    late.write_text("\n".join([HEADER, *[_row(1, flight=i) for i in range(6)]]) + "\n")
    assert feeder.run(spark, root=str(tmp_path), month="2013-03").outputs["ingested"] == {"2013-01": 6}
    assert (_bronze_count(spark, tmp_path, 1), _bronze_count(spark, tmp_path, 2)) == (6, 3)


def test_months_after_the_run_month_wait(tmp_path):
    """A run for January does not ingest February's file early."""
    _deliver(tmp_path, 1, [_row()])
    _deliver(tmp_path, 2, [_row(2)])
    assert [f.month for f in feeder.pending_files(layout(tmp_path), "2013-01")] == ["2013-01"]
    assert [f.month for f in feeder.pending_files(layout(tmp_path), "2013-02", include_late=False)] == ["2013-02"]


@pytest.mark.parametrize("month", [None, ""])
def test_no_month_means_every_pending_file(tmp_path, month):
    """The all-in-one pipeline passes no month: every pending file is ingested."""
    _deliver(tmp_path, 1, [_row()])
    _deliver(tmp_path, 7, [_row(7)])
    assert len(feeder.pending_files(layout(tmp_path), month)) == 2

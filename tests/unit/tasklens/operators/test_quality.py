"""DataQualityOperator and its checks: per-check scores, the overall score, thresholds, state between runs."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tasklens.operators.quality import (
    DataQualityOperator,
    fresh,
    in_range,
    not_null,
    row_count_delta,
    run_checks,
    unique,
)
from tests.spark_fixtures import gauges, spark  # noqa: F401

ROWS = [
    (1, "AA", 10.0, date(2013, 1, 30)),
    (2, "AA", None, date(2013, 1, 31)),
    (3, "UA", 2000.0, date(2013, 1, 31)),
    (3, "UA", 5.0, date(2013, 1, 29)),
]


@pytest.fixture
def frame(spark):  # noqa: F811
    return spark.createDataFrame(ROWS, "id int, carrier string, delay double, day date")


def _by_name(report):
    return {r.name: r for r in report.results}


def test_not_null_scores_the_worst_column(frame):
    """not_null's score is the fill ratio of its emptiest column; below min_ratio it fails."""
    result = run_checks(frame, [not_null("carrier", "delay")]).results[0]
    assert (result.passed, result.score) == (False, 0.75)
    assert run_checks(frame, [not_null("delay", min_ratio=0.7)]).results[0].passed


def test_unique_counts_duplicate_keys(frame):
    """unique's score is distinct keys over rows; one duplicated id fails it."""
    result = run_checks(frame, [unique("id")]).results[0]
    assert (result.passed, result.score, result.observed["duplicates"]) == (False, 0.75, 1)
    assert run_checks(frame, [unique("id", "delay")]).results[0].passed


def test_in_range_ignores_nulls_and_reports_extremes(frame):
    """in_range scores the share of filled values inside the bounds and reports min and max."""
    result = run_checks(frame, [in_range("delay", -60, 1500)]).results[0]
    assert not result.passed and result.score == pytest.approx(2 / 3)
    assert (result.observed["min"], result.observed["max"]) == (5.0, 2000.0)


def test_row_count_delta_against_the_previous_run(frame):
    """The first run passes; a drop beyond max_drop_pct fails; growth passes unless bounded."""
    check = row_count_delta(max_drop_pct=20)
    assert run_checks(frame, [check]).results[0].passed
    assert run_checks(frame, [check], previous_rows=4).results[0].passed
    dropped = run_checks(frame, [check], previous_rows=8).results[0]
    assert not dropped.passed and dropped.observed["change_pct"] == -50.0 and dropped.score == pytest.approx(0.7)
    assert not run_checks(frame, [row_count_delta(max_growth_pct=10)], previous_rows=2).results[0].passed


def test_freshness_against_a_reference(frame):
    """fresh passes when the newest value is within `within` of the reference (date, string or callable)."""
    assert run_checks(frame, [fresh("day", within=timedelta(0), reference=date(2013, 1, 31))]).results[0].passed
    assert run_checks(frame, [fresh("day", within=timedelta(days=1), reference="2013-02-01")]).results[0].passed
    stale = run_checks(frame, [fresh("day", within=timedelta(0), reference=lambda: date(2013, 2, 1))]).results[0]
    assert (stale.passed, stale.score) == (False, 0.0)


def test_score_is_the_weighted_mean_in_percent(frame):
    """data_quality_score averages the check scores, in percent."""
    report = run_checks(frame, [not_null("carrier"), unique("id"), fresh("day", reference="2014-01-01")])
    assert report.score == pytest.approx(100 * (1.0 + 0.75 + 0.0) / 3, abs=1e-3)
    assert [r.name for r in report.failed] == ["unique(id)", "fresh(day)"]
    assert report.rows == 4


def _operator(tmp_path, frame, **kwargs):
    kwargs.setdefault("checks", [not_null("carrier"), row_count_delta(max_drop_pct=10)])
    state = str(tmp_path / "dq.json")
    return DataQualityOperator(task_id="dq", table=lambda session: frame, state_path=state, **kwargs)


def test_operator_emits_the_score_and_remembers_row_counts(tmp_path, frame, gauges):  # noqa: F811
    """The operator sends data_quality_score and compares the next run's row count with this one."""
    out = _operator(tmp_path, frame).execute(context={})
    assert out["data_quality_score"] == gauges["data_quality_score"] == 100.0
    smaller = frame.limit(2)
    out = _operator(tmp_path, smaller).execute(context={})
    assert out["data_quality_score"] == pytest.approx(100 * (1.0 + 0.6) / 2)  # 50 % drop, 40 points past the bar
    assert gauges["data_quality_checks_failed"] == 1


def test_operator_warns_below_warn_threshold_without_failing(tmp_path, frame, gauges, caplog):  # noqa: F811
    """Between fail_below and warn_below the task succeeds and the low score is emitted for alerting."""
    op = _operator(tmp_path, frame, checks=[unique("id")], warn_below=95, fail_below=50)
    assert op.execute(context={})["data_quality_score"] == 75.0
    assert gauges["data_quality_score"] == 75.0


def test_operator_fails_below_fail_threshold(tmp_path, frame):
    """Below fail_below the task fails without retrying."""
    op = _operator(tmp_path, frame, checks=[unique("id")], warn_below=95, fail_below=80)
    with pytest.raises(AirflowFailException, match="below 80"):
        op.execute(context={})


def test_operator_fails_on_a_critical_check_whatever_the_score(tmp_path, frame):
    """Checks listed in fail_on fail the task even when the overall score is high."""
    op = _operator(tmp_path, frame, checks=[not_null("carrier"), unique("id")], fail_on=["unique(id)"])
    with pytest.raises(AirflowFailException, match=r"unique\(id\)"):
        op.execute(context={})


def test_operator_reads_a_parquet_path(tmp_path, frame):
    """A string table is a path read in table_format (Parquet by default)."""
    frame.write.parquet(str(tmp_path / "t"))
    op = DataQualityOperator(
        task_id="dq", table=str(tmp_path / "t"), checks=[unique("id", "delay")], state_path=str(tmp_path / "s.json")
    )
    assert op.execute(context={})["rows"] == 4


def test_operator_validates_its_configuration():
    """No checks, or a fail threshold above the warn threshold, is a DAG-authoring error."""
    with pytest.raises(ValueError, match="at least one check"):
        DataQualityOperator(task_id="dq", table="x", checks=[])
    with pytest.raises(ValueError, match="must not exceed"):
        DataQualityOperator(task_id="dq", table="x", checks=[unique("id")], warn_below=50, fail_below=90)


def test_a_reader_callable_survives_template_rendering(tmp_path, frame):
    """Airflow calls callables in template fields with the context; the table reader must not be one of them."""
    op = _operator(tmp_path, frame)
    assert op.table is None and callable(op.table_reader)
    assert all(getattr(op, field) is None or isinstance(getattr(op, field), str) for field in op.template_fields)

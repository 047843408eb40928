"""SparkJobOperator: runs job functions with a managed session, emits metrics, maps Spark failures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tasklens import spark as tl_spark
from tasklens.operators.spark import SparkJobOperator, _ship_code
from tests.spark_fixtures import gauges, spark  # noqa: F401


def count_job(spark, *, n=10, rejected=0):  # noqa: F811
    """A tiny job used by import path in these tests."""
    rows = spark.range(n).count()
    return {"records_in": rows, "records_out": rows - rejected, "records_rejected": rejected, "metrics": {"auc": 0.75}}


def test_runs_a_callable_job_and_emits_its_metrics(spark, gauges):  # noqa: F811
    """The job's counts and the measured Spark figures are returned and sent as tasklens gauges."""
    op = SparkJobOperator(task_id="count", job=count_job, job_kwargs={"n": 40, "rejected": 4})
    out = op.execute(context={})
    assert (out["records_in"], out["records_out"], out["records_rejected"]) == (40, 36, 4)
    assert out["spark"]["jobs"] >= 1
    assert gauges["records_in"] == 40 and gauges["records_rejected"] == 4 and gauges["auc"] == 0.75
    assert gauges["spark_job_duration"] > 0 and 0 < gauges["spark_memory_utilization"] <= 100


def test_runs_a_job_given_as_import_path(spark, gauges):  # noqa: F811
    """Jobs may be named 'module:function' and are resolved when the task runs."""
    op = SparkJobOperator(task_id="count", job="tests.unit.tasklens.operators.test_spark:count_job",
                          job_kwargs={"n": 5})
    assert op.execute(context={})["records_out"] == 5


def test_rejects_a_malformed_job_path_at_parse_time():
    """A job string without ':' is a DAG-authoring error caught when the DAG is parsed."""
    with pytest.raises(ValueError, match=r"package\.module:function"):
        SparkJobOperator(task_id="bad", job="lakehouse.feeder.run")


def test_analysis_exception_fails_fast(spark, gauges):  # noqa: F811
    """A missing column cannot be fixed by retrying: AirflowFailException, with metrics still emitted."""

    def broken(spark):
        return spark.range(3).select("no_such_column").collect()

    with pytest.raises(AirflowFailException, match="analysis error"):
        SparkJobOperator(task_id="broken", job=broken).execute(context={})
    assert "spark_job_duration" in gauges


def test_executor_loss_is_retried_with_a_fresh_session(spark, monkeypatch):  # noqa: F811
    """Executor loss raises SparkTransientError (retried by Airflow) and drops the possibly broken session."""
    stopped = []
    monkeypatch.setattr(tl_spark, "stop_session", lambda: stopped.append(True))

    def lost(spark):
        raise RuntimeError("Job aborted due to stage failure: ExecutorLostFailure (executor 1 exited)")

    with pytest.raises(tl_spark.SparkTransientError, match="will retry"):
        SparkJobOperator(task_id="lost", job=lost).execute(context={})
    assert stopped == [True]


def test_other_errors_propagate_unchanged(spark):  # noqa: F811
    """Errors that are neither analysis nor infrastructure keep their type (normal retry behaviour)."""

    def bad(spark):
        raise KeyError("month")

    with pytest.raises(KeyError):
        SparkJobOperator(task_id="bad", job=bad).execute(context={})


def test_skips_when_the_job_read_nothing(spark):  # noqa: F811
    """skip_if_no_input turns an empty run into a skip, so no asset event triggers downstream DAGs."""
    op = SparkJobOperator(task_id="empty", job=count_job, job_kwargs={"n": 0}, skip_if_no_input=True)
    with pytest.raises(AirflowSkipException):
        op.execute(context={})


def test_job_kwargs_are_templated():
    """job_kwargs is a template field, so DAGs can pass e.g. the data interval's month."""
    assert "job_kwargs" in SparkJobOperator.template_fields


def test_ship_code_zips_the_job_package_and_tasklens_spark(tmp_path):
    """spark-submit gets the job's package and tasklens.spark in one --py-files zip."""
    import zipfile

    names = zipfile.ZipFile(_ship_code("lakehouse.feeder:run", tmp_path / "code.zip")).namelist()
    assert {"tasklens/__init__.py", "tasklens/spark.py", "lakehouse/feeder.py", "lakehouse/__init__.py"} <= set(names)


def test_submit_mode_runs_the_job_through_spark_submit(tmp_path, monkeypatch, gauges):  # noqa: F811
    """A connection with extra tasklens-submit runs the job via SparkSubmitOperator and reads back its metrics."""
    conn = {
        "conn_type": "spark",
        "host": "local[1]",
        "extra": {"tasklens-submit": True, "spark-binary": "spark-submit"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_SUBMIT_TEST", json.dumps(conn))
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # spark-submit
    (tmp_path / "lakehouse_submit_probe.py").write_text(
        "def probe(spark, n=7):\n    return {'records_in': spark.range(n).count(), 'records_out': n}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    op = SparkJobOperator(
        task_id="submitted", job="lakehouse_submit_probe:probe", job_kwargs={"n": 7}, conn_id="spark_submit_test"
    )
    out = op.execute(context={})
    assert out["records_in"] == 7 and out["records_out"] == 7
    assert out["spark"]["jobs"] >= 1
    assert gauges["records_in"] == 7

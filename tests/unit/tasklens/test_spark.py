"""tasklens.spark: session configuration, failure classification, job resolution and measured job metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasklens import config
from tasklens import spark as tl_spark
from tasklens.exceptions import ConfigError
from tests.spark_fixtures import gauges, spark  # noqa: F401


def _conn(conn_type="spark", host="", port=None, extra=None):
    return SimpleNamespace(conn_type=conn_type, host=host, port=port, extra_dejson=extra or {}, conn_id="c")


def test_local_session_binds_loopback_with_ui_off_and_few_partitions():
    """A local master gets driver host/bind 127.0.0.1, no UI and a small shuffle partition count."""
    conf = tl_spark.session_conf("local[*]", shuffle_partitions=3)
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.shuffle.partitions"] == "3"


def test_ui_port_turns_the_ui_on_and_extras_win():
    """An explicit UI port enables the UI there; extra settings override the defaults."""
    conf = tl_spark.session_conf("local[2]", ui_port=4999, extra={"spark.sql.shuffle.partitions": "9"})
    assert (conf["spark.ui.enabled"], conf["spark.ui.port"]) == ("true", "4999")
    assert conf["spark.sql.shuffle.partitions"] == "9"


def test_cluster_master_keeps_driver_address_to_spark():
    """Against a cluster the driver must be reachable from executors: no loopback binding."""
    conf = tl_spark.session_conf("spark://10.0.0.5:7077")
    assert "spark.driver.host" not in conf and "spark.driver.bindAddress" not in conf


@pytest.mark.parametrize(
    ("conn", "master"),
    [
        (_conn(host="spark://10.0.0.5", port=7077), "spark://10.0.0.5:7077"),
        (_conn(host="10.0.0.5", port=7077), "spark://10.0.0.5:7077"),
        (_conn(host="yarn"), "yarn"),
        (_conn(host="local[2]"), "local[2]"),
        (_conn(conn_type="k8s", host="https://kube:6443"), "k8s://https://kube:6443"),
    ],
)
def test_master_from_connection_reads_like_spark_submit_hook(conn, master):
    """The connection's master URL is read the way SparkSubmitHook reads it."""
    assert tl_spark.master_from_connection(conn) == master


def test_spark_config_accessors(monkeypatch):
    """[tasklens] spark_conf is a JSON object, spark_ui_port empty means off, partitions default to 4."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPARK_CONF", '{"spark.driver.memory": "2g"}')
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPARK_CONN_ID", "spark_cluster")
    config.reset()
    try:
        assert config.spark_conf() == {"spark.driver.memory": "2g"}
        assert config.spark_ui_port() is None
        assert config.spark_shuffle_partitions() == 4
        assert config.spark_conn_id() == "spark_cluster"
        monkeypatch.setenv("AIRFLOW__TASKLENS__SPARK_CONF", "[1, 2]")
        config.reset()
        with pytest.raises(ConfigError, match="spark_conf"):
            config.spark_conf()
    finally:
        monkeypatch.undo()
        config.reset()


def test_resolve_job_accepts_callables_and_import_paths():
    """Jobs are callables or 'module:function' paths; a malformed path names the expected form."""
    assert tl_spark.resolve_job(len) is len
    assert tl_spark.resolve_job("lakehouse.feeder:run").__name__ == "run"
    with pytest.raises(ValueError, match=r"package\.module:function"):
        tl_spark.resolve_job("lakehouse.feeder.run")


def test_job_result_coerces_mappings_and_none():
    """Jobs may return a JobResult, a mapping with its keys, or None."""
    assert tl_spark.JobResult.coerce({"records_in": 3, "extra": 1}).records_in == 3
    assert tl_spark.JobResult.coerce(None) == tl_spark.JobResult()
    with pytest.raises(TypeError):
        tl_spark.JobResult.coerce(42)


def test_analysis_errors_fail_fast(spark):  # noqa: F811
    """A query on a missing column is an AnalysisException: classified fail_fast."""
    with pytest.raises(Exception) as caught:
        spark.range(3).select("no_such_column").collect()
    assert tl_spark.classify_failure(caught.value) == "fail_fast"


def test_executor_loss_is_transient_even_when_wrapped():
    """Executor loss is transient, also when it is the cause of another exception."""
    lost = RuntimeError("Job aborted: ExecutorLostFailure (executor 3 exited caused by one of the running tasks)")
    try:
        try:
            raise lost
        except RuntimeError as inner:
            raise ValueError("write failed") from inner
    except ValueError as outer:
        assert tl_spark.classify_failure(outer) == "transient"
    assert tl_spark.classify_failure(ConnectionRefusedError()) == "transient"
    assert tl_spark.classify_failure(ZeroDivisionError()) == "other"


def test_collector_measures_jobs_stages_records_and_memory(spark):  # noqa: F811
    """The collector reads jobs, stages, tasks, input records and executor memory from Spark itself."""
    ticks = iter([100.0, 103.5])
    with tl_spark.SparkJobCollector(spark, "measure", clock=lambda: next(ticks)) as collector:
        assert spark.range(50_000).selectExpr("id % 7 as k").groupBy("k").count().count() == 7
    m = collector.metrics
    assert m.spark_job_duration == 3.5
    assert m.jobs >= 1 and m.jobs_failed == 0
    # A stage whose shuffle output is reused is skipped and runs no task: tasks >= 1, not tasks >= stages.
    assert m.stages >= 1 and m.tasks >= 1 and m.tasks_failed == 0
    assert m.input_records == 50_000
    assert m.executor_memory_max_bytes > 0 and m.jvm_heap_max_bytes > 0
    assert 0.0 < m.spark_memory_utilization <= 100.0


def test_collector_counts_failed_jobs_and_tasks(spark):  # noqa: F811
    """A job whose task raises shows up as a failed job with failed tasks."""
    collector = tl_spark.SparkJobCollector(spark, "failing")
    with pytest.raises(Exception, match="boom"), collector:
        spark.range(2).selectExpr("raise_error(concat('boom ', id))").collect()
    assert collector.metrics.jobs_failed == 1
    assert collector.metrics.tasks_failed >= 1
    assert collector.metrics.stages_failed >= 1


def test_emit_job_metrics_sends_the_named_gauges(gauges):  # noqa: F811
    """Duration, memory utilisation, record counts and the job's own figures go out under their agreed names."""
    metrics = tl_spark.SparkJobMetrics(job_group="g", spark_job_duration=2.0, spark_memory_utilization=40.0)
    result = tl_spark.JobResult(records_in=10, records_out=8, records_rejected=2, metrics={"auc": 0.7})
    from tasklens import pipeline

    errors_before = dict(pipeline.ERROR_COUNTS)
    sent = tl_spark.emit_job_metrics(metrics, result)
    assert dict(pipeline.ERROR_COUNTS) == errors_before  # the spark_job_finished event was written too
    for name, value in {
        "spark_job_duration": 2.0,
        "spark_memory_utilization": 40.0,
        "records_in": 10,
        "records_out": 8,
        "records_rejected": 2,
        "auc": 0.7,
    }.items():
        assert gauges[name] == value == sent[name]

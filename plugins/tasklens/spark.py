"""SparkSession from configuration, and measured per-job Spark metrics for tasklens.

One builder for every Spark task (:func:`get_session`): the master comes from ``[tasklens] spark_master``
(default ``local[*]``) or a Spark connection; local sessions bind the driver to 127.0.0.1, keep the UI off
unless ``[tasklens] spark_ui_port`` is set and use few shuffle partitions.

:class:`SparkJobCollector` measures one job from Spark's own bookkeeping, never by guessing: it runs the job
in a Spark job group, then reads the status tracker (jobs, stages, tasks) and the application status store
(the data behind the REST API's ``/stages`` and ``/executors``: per-stage peak executor memory, records read
and written, executor memory)::

    with SparkJobCollector(spark, "feeder") as collector:
        run_my_job(spark)
    collector.metrics.spark_job_duration      # seconds
    collector.metrics.spark_memory_utilization  # percent of the executor JVM heap at its peak

Run as a script, this module is the driver program ``spark-submit`` launches for
``SparkJobOperator`` in submit mode (``--job module:function --kwargs JSON --result PATH``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "FailureKind",
    "JobResult",
    "SparkJobCollector",
    "SparkJobMetrics",
    "SparkTransientError",
    "classify_failure",
    "emit_job_metrics",
    "get_session",
    "master_from_connection",
    "resolve_job",
    "session_conf",
    "stop_session",
]

log = logging.getLogger(__name__)

FailureKind = Literal["fail_fast", "transient", "other"]

# Messages Spark and py4j use when the work was fine but the machinery under it went away.
_TRANSIENT_MARKERS = (
    "ExecutorLostFailure",
    "Executor lost",
    "Lost executor",
    "executor heartbeat timed out",
    "FetchFailedException",
    "SparkContext was shut down",
    "SparkContext has been shutdown",
    "Cannot call methods on a stopped SparkContext",
    "Answer from Java side is empty",
    "Error while receiving",
    "Connection reset",
    "Connection refused",
)


class SparkTransientError(RuntimeError):
    """The Spark job failed for a reason a retry can fix (executor lost, driver connection gone)."""


@dataclass
class JobResult:
    """What a Spark job reports back: logical record counts, figures to emit as metrics, and outputs."""

    records_in: int | None = None
    records_out: int | None = None
    records_rejected: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, value: Any) -> JobResult:
        """Accept a ``JobResult``, a mapping with the same keys, or None."""
        if isinstance(value, JobResult):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            known = {
                k: value[k]
                for k in ("records_in", "records_out", "records_rejected", "metrics", "outputs")
                if k in value
            }
            return cls(**known)
        if hasattr(value, "to_dict"):  # a JobResult from another copy of this module (spark-submit driver)
            return cls.coerce(value.to_dict())
        raise TypeError(f"a Spark job must return a JobResult, a mapping or None, not {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparkJobMetrics:
    """One job's measured figures. Memory comes from Spark's executor metrics (peaks sampled at heartbeats)."""

    job_group: str
    spark_job_duration: float = 0.0
    jobs: int = 0
    jobs_failed: int = 0
    stages: int = 0
    stages_failed: int = 0
    tasks: int = 0
    tasks_failed: int = 0
    input_records: int = 0
    output_records: int = 0
    jvm_heap_peak_bytes: int = 0
    jvm_heap_max_bytes: int = 0
    executor_memory_used_bytes: int = 0
    executor_memory_max_bytes: int = 0
    spark_memory_utilization: float = 0.0
    unified_memory_utilization: float = 0.0
    memory_source: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gauges(self) -> dict[str, float]:
        """The figures sent as tasklens metrics."""
        return {
            "spark_job_duration": round(self.spark_job_duration, 3),
            "spark_memory_utilization": round(self.spark_memory_utilization, 2),
            "spark_stages_failed": self.stages_failed,
            "spark_tasks_failed": self.tasks_failed,
            "spark_executor_memory_used_bytes": self.executor_memory_used_bytes,
            "spark_executor_memory_max_bytes": self.executor_memory_max_bytes,
        }


# --------------------------------------------------------------------------------------------- session


def _config() -> Any:
    from tasklens import config  # noqa: PLC0415 - spark-submit ships this module alone; tasklens loads where it is installed

    return config


def master_from_connection(conn: Any) -> str:
    """Spark master URL from an Airflow Spark connection, read the way ``SparkSubmitHook`` reads it."""
    host = (conn.host or "").strip()
    if conn.conn_type == "spark" and host and ("://" in host or not conn.port):
        master = host
    elif conn.conn_type in (None, "", "spark"):
        master = f"spark://{host}"
    else:
        master = f"{conn.conn_type}://{host}"
    return f"{master}:{conn.port}" if conn.port else master


def session_conf(
    master: str,
    *,
    ui_port: int | None = None,
    shuffle_partitions: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The Spark configuration :func:`get_session` applies for ``master`` (pure: testable without a JVM)."""
    conf: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
    if master.startswith("local"):
        conf.update(
            {
                # The VM's hostname may resolve to an address nothing listens on; loopback always works.
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.shuffle.partitions": str(shuffle_partitions or 4),
                # Executor memory peaks are sampled at heartbeats; the 10 s default misses short jobs.
                "spark.executor.heartbeatInterval": "2s",
                "spark.ui.showConsoleProgress": "false",
                # The driver is the only executor: the 1g default leaves ML training garbage-collecting.
                "spark.driver.memory": "2g",
            }
        )
    elif shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    if ui_port:
        conf.update({"spark.ui.enabled": "true", "spark.ui.port": str(ui_port)})
    else:
        conf["spark.ui.enabled"] = "false"
    conf.update({str(k): str(v) for k, v in (extra or {}).items()})
    return conf


def get_session(
    app_name: str = "tasklens",
    *,
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """The process's SparkSession, created from configuration on first use and reused afterwards.

    ``master`` defaults to ``[tasklens] spark_master``; ``conf`` is added to ``[tasklens] spark_conf``.
    A running session is reused whatever its master (Spark allows one per JVM).
    """
    from pyspark.sql import SparkSession  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    config = _config()
    master = master or config.spark_master()
    settings = session_conf(
        master,
        ui_port=config.spark_ui_port(),
        shuffle_partitions=config.spark_shuffle_partitions(),
        extra={**config.spark_conf(), **(conf or {})},
    )
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per closed connection otherwise
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    started = time.monotonic()
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info(
        "SparkSession %s on %s ready in %.1f s", session.sparkContext.applicationId, master, time.monotonic() - started
    )
    return session


def stop_session() -> None:
    """Stop the active SparkSession, if any (the next :func:`get_session` starts a fresh one)."""
    from pyspark.sql import SparkSession  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


# --------------------------------------------------------------------------------------------- metrics


def _scala_seq(seq: Any) -> Iterator[Any]:
    for index in range(seq.size()):
        yield seq.apply(index)


def _peak(metrics_option: Any, name: str) -> int:
    if metrics_option is None or not metrics_option.isDefined():
        return 0
    return int(metrics_option.get().getMetricValue(name))


class SparkJobCollector:
    """Context manager measuring the Spark work done inside it (see the module docstring)."""

    def __init__(self, spark: SparkSession, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.spark = spark
        self.name = name
        self.job_group = f"tasklens-{name}-{uuid.uuid4().hex[:8]}"
        self.metrics = SparkJobMetrics(job_group=self.job_group)
        self._clock = clock
        self._started = 0.0

    def __enter__(self) -> SparkJobCollector:
        self.spark.sparkContext.setJobGroup(self.job_group, f"tasklens job {self.name}", interruptOnCancel=True)
        self._started = self._clock()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.metrics.spark_job_duration = self._clock() - self._started
        try:
            self._collect()
        except Exception:
            # A job that ran must not fail because its bookkeeping could not be read (driver gone, GC'd info).
            log.warning("could not read Spark metrics for %s", self.name, exc_info=True)
        finally:
            try:
                self.spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
            except Exception:  # noqa: S110 - the context may be gone after a failure
                pass

    def _collect(self) -> None:
        sc = self.spark.sparkContext
        tracker = sc.statusTracker()
        store = sc._jsc.sc().statusStore()  # the REST API's data, without HTTP
        m = self.metrics
        heap_peak = unified_peak = 0
        for job_id in tracker.getJobIdsForGroup(self.job_group):
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            m.jobs += 1
            m.jobs_failed += job.status == "FAILED"
            for stage_id in job.stageIds:
                try:
                    stage = store.lastStageAttempt(stage_id)
                except Exception:  # noqa: S112 - stage info evicted (spark.ui.retainedStages)
                    continue
                status = str(stage.status())
                if status == "SKIPPED":
                    continue
                m.stages += 1
                m.stages_failed += status == "FAILED"
                m.tasks += int(stage.numCompleteTasks()) + int(stage.numFailedTasks())
                m.tasks_failed += int(stage.numFailedTasks())
                m.input_records += int(stage.inputRecords())
                m.output_records += int(stage.outputRecords())
                peaks = stage.peakExecutorMetrics()
                heap_peak = max(heap_peak, _peak(peaks, "JVMHeapMemory"))
                unified_peak = max(
                    unified_peak, _peak(peaks, "OnHeapUnifiedMemory") + _peak(peaks, "OffHeapUnifiedMemory")
                )
        m.memory_source = "stage peaks" if heap_peak else "none"
        executors = list(_scala_seq(store.executorList(True)))
        workers = [e for e in executors if e.id() != "driver"] or executors  # local mode: the driver executes
        if not heap_peak:
            # No heartbeat landed inside the job's stages: use the executors' lifetime peaks instead.
            for executor in workers:
                heap_peak = max(heap_peak, _peak(executor.peakMemoryMetrics(), "JVMHeapMemory"))
                unified_peak = max(unified_peak, _peak(executor.peakMemoryMetrics(), "OnHeapUnifiedMemory"))
            m.memory_source = "executor peaks" if heap_peak else "storage memory"
        m.executor_memory_max_bytes = max((int(e.maxMemory()) for e in workers), default=0)
        if not unified_peak:
            unified_peak = max((int(e.memoryUsed()) for e in workers), default=0)
        m.executor_memory_used_bytes = unified_peak
        m.jvm_heap_peak_bytes = heap_peak
        if any(e.id() == "driver" for e in workers):
            jvm: Any = sc._jvm
            m.jvm_heap_max_bytes = int(jvm.java.lang.Runtime.getRuntime().maxMemory())
        else:  # the executors' -Xmx, which Spark sets from spark.executor.memory
            m.jvm_heap_max_bytes = int(sc._jsc.sc().conf().getSizeAsBytes("spark.executor.memory", "1g"))
        if m.executor_memory_max_bytes:
            m.unified_memory_utilization = 100.0 * unified_peak / m.executor_memory_max_bytes
        if m.jvm_heap_max_bytes and heap_peak:
            m.spark_memory_utilization = 100.0 * heap_peak / m.jvm_heap_max_bytes
        else:
            m.spark_memory_utilization = m.unified_memory_utilization


def emit_job_metrics(metrics: SparkJobMetrics, result: JobResult) -> dict[str, float]:
    """Send the job's figures through ``tasklens.metrics`` and the event stream; returns what was sent.

    Runs each emission through :func:`tasklens.pipeline.run_stage`, so monitoring never fails the job.
    """
    from tasklens import pipeline  # noqa: PLC0415 - spark-submit ships this module alone; tasklens loads where it is installed

    values: dict[str, float] = dict(metrics.gauges())
    for name in ("records_in", "records_out", "records_rejected"):
        value = getattr(result, name)
        if value is not None:
            values[name] = float(value)
    values.update({k: float(v) for k, v in result.metrics.items()})

    def _send() -> None:
        from tasklens import metrics as tl_metrics  # noqa: PLC0415 - spark-submit ships this module alone; tasklens loads where it is installed

        for name, value in values.items():
            tl_metrics.gauge(name, value)

    def _event() -> None:
        import tasklens  # noqa: PLC0415 - spark-submit ships this module alone; tasklens loads where it is installed

        tasklens.get_logger().business_event("spark_job_finished", **{**metrics.to_dict(), **values})

    pipeline.run_stage("spark.metrics", _send)
    pipeline.run_stage("spark.event", _event)
    return values


# --------------------------------------------------------------------------------------------- failures


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_failure(exc: BaseException) -> FailureKind:
    """``fail_fast`` for analysis errors (bad column, missing table: a retry cannot help), ``transient`` for
    executor loss and a vanished driver connection (a retry can), ``other`` for everything else."""
    try:
        from pyspark.errors import AnalysisException  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it
    except ImportError:  # pragma: no cover - pyspark is a dependency of every caller
        AnalysisException = ()  # type: ignore[assignment,misc]
    try:
        from py4j.protocol import Py4JNetworkError  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it
    except ImportError:  # pragma: no cover
        Py4JNetworkError = ()
    for error in _chain(exc):
        if isinstance(error, AnalysisException):
            return "fail_fast"
        if isinstance(error, (Py4JNetworkError, ConnectionError, SparkTransientError)):
            return "transient"
        text = str(error)
        if any(marker in text for marker in _TRANSIENT_MARKERS):
            return "transient"
    return "other"


# --------------------------------------------------------------------------------------------- jobs


def resolve_job(job: str | Callable[..., Any]) -> Callable[..., Any]:
    """A job function from a callable or an import path ``"package.module:function"``."""
    if callable(job):
        return job
    module_name, sep, attribute = str(job).partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"job {job!r} must look like 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"job {job!r} is not callable")
    return target


def main(argv: list[str] | None = None) -> int:
    """Driver program for spark-submit: run one job, write its result and measured metrics as JSON."""
    from pyspark.sql import SparkSession  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

    parser = argparse.ArgumentParser(description="Run a tasklens Spark job under spark-submit")
    parser.add_argument("--job", required=True, help="package.module:function")
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--name", default="job")
    args = parser.parse_args(argv)
    spark = SparkSession.builder.getOrCreate()
    func = resolve_job(args.job)
    with SparkJobCollector(spark, args.name) as collector:
        result = JobResult.coerce(func(spark, **json.loads(args.kwargs)))
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(
        json.dumps({"result": result.to_dict(), "metrics": collector.metrics.to_dict()}, default=str)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

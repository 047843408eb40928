"""``SparkJobOperator``: run a PySpark job function with a managed SparkSession and tasklens monitoring.

The job is a plain function ``job(spark, **job_kwargs)`` returning a :class:`tasklens.spark.JobResult` (or a
mapping with the same keys). The operator

* gets the process's SparkSession from configuration (``[tasklens] spark_master``, default ``local[*]``, or the
  master of the Spark connection ``conn_id`` / ``[tasklens] spark_conn_id``);
* measures the job with :class:`tasklens.spark.SparkJobCollector` and emits ``spark_job_duration``,
  ``spark_memory_utilization``, ``records_in``, ``records_out``, ``records_rejected`` and the job's own
  figures (e.g. ``auc``) through ``tasklens.metrics``, plus a ``spark_job_finished`` event;
* maps failures: an ``AnalysisException`` (missing column or table) fails at once (``AirflowFailException``);
  executor loss or a dead driver connection raises :class:`tasklens.spark.SparkTransientError` so the task's
  retries apply; anything else is re-raised unchanged;
* runs the job through ``SparkSubmitOperator`` instead when the Spark connection's extra says
  ``{"tasklens-submit": true}`` (the job and tasklens ship as ``--py-files``).

Example::

    from tasklens.operators.spark import SparkJobOperator

    ingest = SparkJobOperator(
        task_id="ingest",
        job="lakehouse.feeder:run",
        job_kwargs={"month": "{{ data_interval_start.strftime('%Y-%m') }}"},
        skip_if_no_input=True,
    )
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tasklens import config
from tasklens import spark as tl_spark
from tasklens.airflow_compat import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SUBMIT_EXTRA", "SparkJobOperator"]

#: Connection extra that sends the job through spark-submit instead of an in-process session.
SUBMIT_EXTRA = "tasklens-submit"


class SparkJobOperator(BaseOperator):
    """Run ``job(spark, **job_kwargs)`` with a managed SparkSession; see the module docstring.

    :param job: the job function, or its import path ``"package.module:function"`` (resolved at run time).
    :param job_kwargs: keyword arguments for the job (templated).
    :param app_name: Spark application name (default: ``<dag_id>.<task_id>``).
    :param master: Spark master for this task, overriding configuration and connection.
    :param conn_id: Spark connection giving the master (default ``[tasklens] spark_conn_id``; none = config only).
    :param spark_conf: extra Spark configuration for a new session (or for spark-submit).
    :param skip_if_no_input: skip the task (no outlet event) when the job read no records.
    :param stop_session: stop the SparkSession after the job (default: keep it for the next task in this process).
    """

    template_fields: Sequence[str] = ("job_kwargs", "app_name")
    template_fields_renderers = {"job_kwargs": "json"}
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        job: str | Callable[..., Any],
        job_kwargs: Mapping[str, Any] | None = None,
        app_name: str | None = None,
        master: str | None = None,
        conn_id: str | None = None,
        spark_conf: Mapping[str, str] | None = None,
        skip_if_no_input: bool = False,
        stop_session: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(job, str):
            module, sep, attribute = job.partition(":")
            if not (module and sep and attribute):
                raise ValueError(f"{self.task_id}: job {job!r} must look like 'package.module:function'")
        elif not callable(job):
            raise TypeError(f"{self.task_id}: job must be a callable or an import path string")
        self.job = job
        self.job_kwargs = dict(job_kwargs or {})
        self.app_name = app_name
        self.master = master
        self.conn_id = conn_id
        self.spark_conf = dict(spark_conf or {})
        self.skip_if_no_input = skip_if_no_input
        self.stop_session = stop_session

    # ----------------------------------------------------------------------------------- execution

    def execute(self, context: Context) -> dict[str, Any]:
        connection = self._connection()
        if connection is not None and _wants_submit(connection):
            result, metrics = self._run_submitted(context, connection)
        else:
            master = self.master or (tl_spark.master_from_connection(connection) if connection is not None else None)
            result, metrics = self._run_in_process(master)
        values = tl_spark.emit_job_metrics(metrics, result)
        self.log.info(
            "Spark job %s: records in=%s out=%s rejected=%s, %.1f s, %d stages (%d failed), %d tasks (%d failed), "
            "memory utilisation %.1f %% (%s)",
            self._job_name,
            result.records_in,
            result.records_out,
            result.records_rejected,
            metrics.spark_job_duration,
            metrics.stages,
            metrics.stages_failed,
            metrics.tasks,
            metrics.tasks_failed,
            metrics.spark_memory_utilization,
            metrics.memory_source,
        )
        if self.skip_if_no_input and not result.records_in:
            raise AirflowSkipException(f"{self._job_name}: no input records, nothing to do")
        return {**result.to_dict(), "spark": metrics.to_dict(), "emitted": values}

    @property
    def _job_name(self) -> str:
        return self.job if isinstance(self.job, str) else getattr(self.job, "__qualname__", repr(self.job))

    def _app_name(self) -> str:
        dag_id = getattr(self, "dag_id", None) or "adhoc"
        return self.app_name or f"{dag_id}.{self.task_id}"

    def _connection(self) -> Any | None:
        conn_id = self.conn_id or config.spark_conn_id()
        if not conn_id:
            return None
        from airflow.sdk import BaseHook  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        return BaseHook.get_connection(conn_id)

    def _run_in_process(self, master: str | None) -> tuple[tl_spark.JobResult, tl_spark.SparkJobMetrics]:
        func = tl_spark.resolve_job(self.job)
        session = tl_spark.get_session(self._app_name(), master=master, conf=self.spark_conf)
        collector = tl_spark.SparkJobCollector(session, self.task_id)
        try:
            with collector:
                result = tl_spark.JobResult.coerce(func(session, **self.job_kwargs))
        except Exception as error:
            tl_spark.emit_job_metrics(collector.metrics, tl_spark.JobResult())
            raise self._mapped(error) from error
        finally:
            if self.stop_session:
                tl_spark.stop_session()
        return result, collector.metrics

    def _mapped(self, error: Exception) -> Exception:
        kind = tl_spark.classify_failure(error)
        if kind == "fail_fast":
            return AirflowFailException(f"{self._job_name}: Spark analysis error, a retry cannot fix it: {error}")
        if kind == "transient":
            # The session may be unusable (driver or executors gone): the retry starts a fresh one.
            try:
                tl_spark.stop_session()
            except Exception:
                self.log.warning("could not stop the broken SparkSession", exc_info=True)
            return tl_spark.SparkTransientError(f"{self._job_name}: transient Spark failure, will retry: {error}")
        return error

    # ----------------------------------------------------------------------------------- spark-submit

    def _run_submitted(self, context: Context, connection: Any) -> tuple[tl_spark.JobResult, tl_spark.SparkJobMetrics]:
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        if not isinstance(self.job, str):
            raise AirflowFailException(f"{self.task_id}: spark-submit mode needs the job as an import path string")
        extra = connection.extra_dejson
        workdir = Path(tempfile.mkdtemp(prefix="tasklens-submit-", dir=extra.get("tasklens-result-dir")))
        result_path = workdir / "result.json"
        submit = SparkSubmitOperator(
            task_id=f"{self.task_id}__spark_submit",
            conn_id=connection.conn_id,
            application=str(Path(tl_spark.__file__).resolve()),
            application_args=[
                "--job",
                self.job,
                "--kwargs",
                json.dumps(self.job_kwargs, default=str),
                "--result",
                str(result_path),
                "--name",
                self.task_id,
            ],
            py_files=str(_ship_code(self.job, workdir / "code.zip")),
            conf=self.spark_conf or None,
            name=self._app_name(),
        )
        try:
            submit.execute(context)
        except Exception as error:
            raise self._mapped(error) from error
        payload = json.loads(result_path.read_text(encoding="utf-8"))
        return tl_spark.JobResult.coerce(payload["result"]), tl_spark.SparkJobMetrics(**payload["metrics"])


def _wants_submit(connection: Any) -> bool:
    value = connection.extra_dejson.get(SUBMIT_EXTRA, False)
    return value is True or str(value).lower() in {"1", "true", "yes"}


def _ship_code(job: str, target: Path) -> Path:
    """Zip the job's top-level package plus ``tasklens`` (its ``__init__`` and ``spark`` module) for --py-files."""
    top = job.partition(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise AirflowFailException(f"cannot find the job package {top!r} to ship to spark-submit")
    tasklens_dir = Path(tl_spark.__file__).resolve().parent
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(tasklens_dir / "__init__.py", "tasklens/__init__.py")
        archive.write(tasklens_dir / "spark.py", "tasklens/spark.py")
        if spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                base = Path(location)
                for path in sorted(base.rglob("*.py")):
                    archive.write(path, str(Path(top) / path.relative_to(base)))
        elif spec.origin:
            archive.write(spec.origin, f"{top}.py")
    return target

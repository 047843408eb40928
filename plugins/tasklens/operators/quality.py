"""``DataQualityOperator``: declarative data-quality checks on a Spark table, scored for tasklens.

Each check yields a result with a score between 0 and 1; ``data_quality_score`` is their weighted mean in
percent. Below ``warn_below`` the operator logs a warning (the alert engine's threshold rule on
``data_quality_score`` raises the alert); below ``fail_below`` it fails without retrying. Checks are evaluated
in one pass over the table.

Example::

    from datetime import timedelta
    from tasklens.operators.quality import DataQualityOperator, fresh, in_range, not_null, row_count_delta, unique

    check_silver = DataQualityOperator(
        task_id="check_silver",
        table="/data/lakehouse/silver/flights",           # Parquet path (templated) or callable(spark) -> DataFrame
        checks=[
            not_null("carrier", "origin", "dest", "dep_delay"),
            unique("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"),
            in_range("dep_delay", -60, 1500),
            row_count_delta(max_drop_pct=20),              # against the previous run of this task
            fresh("flight_date", within=timedelta(days=1)),  # newest value vs now (or reference=...)
        ],
        warn_below=95.0,
        fail_below=50.0,
    )
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

import tasklens
from tasklens import config, metrics, pipeline
from tasklens.airflow_compat import AirflowFailException
from tasklens.spark import get_session

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "Check",
    "CheckResult",
    "DataQualityOperator",
    "QualityReport",
    "fresh",
    "in_range",
    "not_null",
    "row_count_delta",
    "run_checks",
    "unique",
]

Reference = datetime | date | str | Callable[[], datetime | date | str | None] | None


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``score`` in [0, 1], ``passed`` against the check's own bar."""

    name: str
    kind: str
    passed: bool
    score: float
    observed: Any
    expected: str
    weight: float = 1.0


@dataclass(frozen=True)
class QualityReport:
    rows: int
    score: float  # percent
    results: tuple[CheckResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "data_quality_score": self.score, "checks": [asdict(r) for r in self.results]}


@dataclass(frozen=True)
class _Context:
    rows: int
    previous_rows: int | None


class Check:
    """A declarative check. ``aggregations`` run in the shared pass; ``evaluate`` reads their values."""

    kind = "check"
    weight = 1.0

    @property
    def name(self) -> str:
        raise NotImplementedError

    def aggregations(self, prefix: str) -> list[Column]:
        return []

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        raise NotImplementedError

    def _result(self, passed: bool, score: float, observed: Any, expected: str) -> CheckResult:
        return CheckResult(
            self.name, self.kind, bool(passed), float(max(0.0, min(1.0, score))), observed, expected, self.weight
        )


@dataclass(frozen=True)
class not_null(Check):
    """Every column in ``columns`` is filled in at least ``min_ratio`` of rows (score: the worst column's ratio)."""

    columns: tuple[str, ...]
    min_ratio: float = 1.0
    kind = "not_null"

    def __init__(self, *columns: str, min_ratio: float = 1.0) -> None:
        if not columns:
            raise ValueError("not_null needs at least one column")
        object.__setattr__(self, "columns", tuple(columns))
        object.__setattr__(self, "min_ratio", min_ratio)

    @property
    def name(self) -> str:
        return f"not_null({', '.join(self.columns)})"

    def aggregations(self, prefix: str) -> list[Column]:
        from pyspark.sql import functions as F  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        return [F.count(F.col(c)).alias(f"{prefix}{i}") for i, c in enumerate(self.columns)]

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        ratios = {
            c: (values[f"{prefix}{i}"] / context.rows if context.rows else 1.0) for i, c in enumerate(self.columns)
        }
        worst = min(ratios.values())
        return self._result(
            worst >= self.min_ratio, worst, {c: round(r, 6) for c, r in ratios.items()}, f">= {self.min_ratio}"
        )


@dataclass(frozen=True)
class unique(Check):
    """The combination of ``columns`` identifies a row (score: distinct keys / rows)."""

    columns: tuple[str, ...]
    kind = "unique"

    def __init__(self, *columns: str) -> None:
        if not columns:
            raise ValueError("unique needs at least one column")
        object.__setattr__(self, "columns", tuple(columns))

    @property
    def name(self) -> str:
        return f"unique({', '.join(self.columns)})"

    def aggregations(self, prefix: str) -> list[Column]:
        from pyspark.sql import functions as F  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        # count_distinct ignores rows with a null key part; a struct of the parts never is null.
        return [F.count_distinct(F.struct(*[F.col(c) for c in self.columns])).alias(f"{prefix}0")]

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        distinct = int(values[f"{prefix}0"] or 0)
        score = distinct / context.rows if context.rows else 1.0
        return self._result(
            distinct == context.rows,
            score,
            {"distinct": distinct, "duplicates": context.rows - distinct},
            "no duplicates",
        )


@dataclass(frozen=True)
class in_range(Check):
    """Non-null values of ``column`` lie in [``minimum``, ``maximum``] for at least ``min_ratio`` of them."""

    column: str
    minimum: float | None = None
    maximum: float | None = None
    min_ratio: float = 1.0
    kind = "range"

    @property
    def name(self) -> str:
        return f"in_range({self.column}, {self.minimum}, {self.maximum})"

    def aggregations(self, prefix: str) -> list[Column]:
        from pyspark.sql import functions as F  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        value = F.col(self.column)
        inside = F.lit(True)
        if self.minimum is not None:
            inside = inside & (value >= self.minimum)
        if self.maximum is not None:
            inside = inside & (value <= self.maximum)
        return [
            F.count(value).alias(f"{prefix}n"),
            F.sum(F.when(value.isNotNull() & inside, 1).otherwise(0)).alias(f"{prefix}ok"),
            F.min(value).alias(f"{prefix}min"),
            F.max(value).alias(f"{prefix}max"),
        ]

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        filled, ok = int(values[f"{prefix}n"] or 0), int(values[f"{prefix}ok"] or 0)
        ratio = ok / filled if filled else 1.0
        observed = {"in_range_ratio": round(ratio, 6), "min": values[f"{prefix}min"], "max": values[f"{prefix}max"]}
        return self._result(
            ratio >= self.min_ratio, ratio, observed, f"[{self.minimum}, {self.maximum}] for >= {self.min_ratio}"
        )


@dataclass(frozen=True)
class row_count_delta(Check):
    """The row count moved at most ``max_drop_pct`` down (and ``max_growth_pct`` up) since the previous run.

    The first run (no previous count) passes. Score: 1 when within bounds, else how far inside the bound it is.
    """

    max_drop_pct: float = 50.0
    max_growth_pct: float | None = None
    min_rows: int = 1
    kind = "row_count_delta"

    @property
    def name(self) -> str:
        return "row_count_delta"

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        expected = f">= {self.min_rows} rows, drop <= {self.max_drop_pct} %" + (
            f", growth <= {self.max_growth_pct} %" if self.max_growth_pct is not None else ""
        )
        observed: dict[str, Any] = {"rows": context.rows, "previous_rows": context.previous_rows}
        if context.rows < self.min_rows:
            return self._result(False, 0.0, observed, expected)
        if not context.previous_rows:
            return self._result(True, 1.0, observed, expected)
        change = 100.0 * (context.rows - context.previous_rows) / context.previous_rows
        observed["change_pct"] = round(change, 3)
        if change < -self.max_drop_pct:
            return self._result(False, max(0.0, 1.0 + (change + self.max_drop_pct) / 100.0), observed, expected)
        if self.max_growth_pct is not None and change > self.max_growth_pct:
            return self._result(False, max(0.0, 1.0 - (change - self.max_growth_pct) / 100.0), observed, expected)
        return self._result(True, 1.0, observed, expected)


@dataclass(frozen=True)
class fresh(Check):
    """The newest value of ``column`` is no older than ``within`` before ``reference`` (default: now, UTC).

    ``reference`` may be a datetime/date, an ISO string (e.g. templated by the caller) or a callable returning one.
    """

    column: str
    within: timedelta = timedelta(days=1)
    reference: Reference = None
    kind = "freshness"

    @property
    def name(self) -> str:
        return f"fresh({self.column})"

    def aggregations(self, prefix: str) -> list[Column]:
        from pyspark.sql import functions as F  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

        return [F.max(F.col(self.column)).alias(f"{prefix}max")]

    def _reference(self) -> datetime:
        value = self.reference() if callable(self.reference) else self.reference
        return _as_datetime(value) if value is not None else datetime.now(timezone.utc)

    def evaluate(self, values: Mapping[str, Any], prefix: str, context: _Context) -> CheckResult:
        reference = self._reference()
        newest = values[f"{prefix}max"]
        expected = f"newest >= {(reference - self.within).isoformat()}"
        if newest is None:
            return self._result(False, 0.0, {"newest": None}, expected)
        passed = _as_datetime(newest) >= reference - self.within
        return self._result(
            passed, 1.0 if passed else 0.0, {"newest": str(newest), "reference": reference.isoformat()}, expected
        )


def _as_datetime(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def run_checks(frame: DataFrame, checks: Sequence[Check], *, previous_rows: int | None = None) -> QualityReport:
    """Evaluate ``checks`` on ``frame`` in one aggregation pass and score them."""
    from pyspark.sql import functions as F  # noqa: PLC0415 - PySpark loads only in the Spark job that uses it

    if not checks:
        raise ValueError("run_checks needs at least one check")
    prefixes = [f"c{i}_" for i in range(len(checks))]
    aggregations = [F.count(F.lit(1)).alias("__rows")]
    for check, prefix in zip(checks, prefixes, strict=True):
        aggregations.extend(check.aggregations(prefix))
    first = frame.agg(*aggregations).first()
    values = first.asDict() if first is not None else {"__rows": 0}
    context = _Context(rows=int(values["__rows"] or 0), previous_rows=previous_rows)
    results = tuple(check.evaluate(values, prefix, context) for check, prefix in zip(checks, prefixes, strict=True))
    total_weight = sum(r.weight for r in results) or 1.0
    score = 100.0 * sum(r.score * r.weight for r in results) / total_weight
    return QualityReport(rows=context.rows, score=round(score, 3), results=results)


class DataQualityOperator(BaseOperator):
    """Run declarative checks on a table, emit ``data_quality_score``, warn or fail by thresholds.

    :param table: Parquet/``table_format`` path (templated), or ``callable(spark) -> DataFrame``.
    :param checks: :func:`not_null`, :func:`unique`, :func:`in_range`, :func:`row_count_delta`, :func:`fresh`.
    :param warn_below: log a warning below this score (percent).
    :param fail_below: fail the task (no retry) below this score; None never fails on the score.
    :param fail_on: names of checks whose failure fails the task whatever the score.
    :param state_path: JSON file remembering the previous run's row count (templated; default under
        ``$AIRFLOW_HOME/tasklens/quality/``).
    """

    template_fields: Sequence[str] = ("table", "state_path")
    ui_color = "#e3f1df"

    def __init__(
        self,
        *,
        table: str | Callable[[SparkSession], DataFrame],
        checks: Sequence[Check],
        table_format: str = "parquet",
        warn_below: float = 95.0,
        fail_below: float | None = None,
        fail_on: Sequence[str] = (),
        state_path: str | None = None,
        metric_name: str = "data_quality_score",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not checks:
            raise ValueError(f"{self.task_id}: DataQualityOperator needs at least one check")
        if fail_below is not None and fail_below > warn_below:
            raise ValueError(f"{self.task_id}: fail_below ({fail_below}) must not exceed warn_below ({warn_below})")
        # Airflow calls callables found in template fields with the context: keep the reader out of them.
        self.table = table if isinstance(table, str) else None
        self.table_reader = None if isinstance(table, str) else table
        self.checks = list(checks)
        self.table_format = table_format
        self.warn_below = warn_below
        self.fail_below = fail_below
        self.fail_on = tuple(fail_on)
        self.state_path = state_path
        self.metric_name = metric_name

    def _state_file(self) -> Path:
        if self.state_path:
            return Path(self.state_path)

        dag_id = getattr(self, "dag_id", None) or "adhoc"
        return config.airflow_home() / "tasklens" / "quality" / f"{dag_id}.{self.task_id}.json"

    def _frame(self) -> DataFrame:
        spark = get_session(f"{getattr(self, 'dag_id', None) or 'adhoc'}.{self.task_id}")
        if self.table_reader is not None:
            return self.table_reader(spark)
        return spark.read.format(self.table_format).load(str(self.table))

    def execute(self, context: Context) -> dict[str, Any]:
        state_file = self._state_file()
        previous = _read_state(state_file)
        report = run_checks(self._frame(), self.checks, previous_rows=previous.get("rows"))
        _write_state(state_file, {"rows": report.rows, "data_quality_score": report.score})
        for result in report.results:
            log = self.log.info if result.passed else self.log.warning
            log(
                "DQ %s %s: score %.4f observed %s expected %s",
                "PASS" if result.passed else "FAIL",
                result.name,
                result.score,
                result.observed,
                result.expected,
            )
        self._emit(report)
        blocking = [r.name for r in report.failed if r.name in self.fail_on]
        if blocking:
            raise AirflowFailException(
                f"data quality check(s) failed: {', '.join(blocking)} (score {report.score:.1f})"
            )
        if self.fail_below is not None and report.score < self.fail_below:
            raise AirflowFailException(f"data quality score {report.score:.1f} is below {self.fail_below}")
        if report.score < self.warn_below:
            self.log.warning(
                "data quality score %.1f is below the warning threshold %.1f; failed checks: %s",
                report.score,
                self.warn_below,
                [r.name for r in report.failed],
            )
        return report.to_dict()

    def _emit(self, report: QualityReport) -> None:
        def _metrics() -> None:
            metrics.gauge(self.metric_name, report.score)
            metrics.gauge("data_quality_checks_failed", len(report.failed))

        def _event() -> None:
            tasklens.get_logger().business_event(
                "data_quality_checked",
                data_quality_score=report.score,
                rows=report.rows,
                failed_checks=[r.name for r in report.failed],
                checks=[asdict(r) for r in report.results],
            )

        pipeline.run_stage("quality.metrics", _metrics)
        pipeline.run_stage("quality.event", _event)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(path: Path, value: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(dict(value), default=str), encoding="utf-8")
    os.replace(temporary, path)

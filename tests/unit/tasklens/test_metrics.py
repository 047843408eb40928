"""StatsD metrics: wire format, labels, cardinality guard, custom metrics and failure handling."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklens import config, metrics, pipeline
from tasklens.events import TaskEvent
from tests.integration.observability import StatsdSink, parse_statsd_line


@pytest.fixture
def sink(monkeypatch):
    sink = StatsdSink()
    # The alert engine has its own tests; here it only must be called (see the tests that record it).
    monkeypatch.setattr(pipeline, "handle_metric", lambda *args: None)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sink.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    config.reset()
    metrics.reset()
    yield sink
    sink.close()
    config.reset()
    metrics.reset()


def make_event(**overrides) -> TaskEvent:
    fields = dict(
        event="success",
        dag_id="dag.with.dots",
        task_id="task-with-dash",
        run_id="manual__2024-05-01T12:00:00+00:00",
        try_number=3,
        state="success",
        operator="PythonOperator",
        owner="data_platform",
        duration_s=1.25,
    )
    fields.update(overrides)
    return TaskEvent(**fields)


def registry_covers(stat: str) -> bool:
    unprefixed = stat.removeprefix("airflow.")
    return any(
        re.fullmatch(re.escape(name).replace(r"\*", "[A-Za-z0-9_]+"), unprefixed) for name in metrics.METRIC_NAMES
    )


def test_record_event_sends_counter_gauge_and_timer_with_ids_intact(sink):
    """One event becomes a transition counter, a try-number gauge and a duration timer, dotted/dashed ids intact."""
    metrics.record_event(make_event())
    parsed = {parse_statsd_line(line)[0]: parse_statsd_line(line) for line in sink.tasklens_lines()}
    assert set(parsed) == {
        "airflow.tasklens.task.success",
        "airflow.tasklens.task.try_number",
        "airflow.tasklens.task.duration",
    }
    expected_labels = {
        "dag_id": "dag.with.dots",
        "task_id": "task-with-dash",
        "state": "success",
        "operator": "PythonOperator",
        "owner": "data_platform",
    }
    for _name, labels, _value, _type in parsed.values():
        assert labels == expected_labels  # run_id and try_number are never labels
    assert parsed["airflow.tasklens.task.success"][2:] == ("1", "c")
    assert parsed["airflow.tasklens.task.try_number"][2:] == ("3", "g")
    assert parsed["airflow.tasklens.task.duration"][3] == "ms"
    assert float(parsed["airflow.tasklens.task.duration"][2]) == pytest.approx(1250.0)


def test_running_event_has_no_timer_and_every_name_is_registered(sink):
    """An event without duration sends no timer, and every name sent is in metrics.METRIC_NAMES."""
    metrics.record_event(make_event(event="running", state="running", duration_s=None))
    metrics.record_event(make_event(event="up_for_retry", state="up_for_retry"))
    metrics.count_error("logs.stream")
    lines = sink.tasklens_lines()
    names = [parse_statsd_line(line)[0] for line in lines]
    assert "airflow.tasklens.task.running" in names and "airflow.tasklens.task.up_for_retry" in names
    assert names.count("airflow.tasklens.task.duration") == 1
    assert all(registry_covers(name) for name in names), names


def test_count_error_labels_the_stage(sink):
    """``count_error(stage)`` sends ``tasklens.errors`` with only a ``stage`` label."""
    metrics.count_error("alerts")
    [line] = sink.tasklens_lines()
    assert parse_statsd_line(line) == ("airflow.tasklens.errors", {"stage": "alerts"}, "1", "c")


def test_unicode_and_separator_characters_in_labels(sink):
    """Non-ASCII ids go out as UTF-8 unchanged; separators in an owner are escaped so the line still parses."""
    metrics.record_event(make_event(dag_id="données_ventes", owner="alice, bob:ops|x=y#[z]"))
    for line in sink.tasklens_lines():
        _, labels, _, _ = parse_statsd_line(line)
        assert labels["dag_id"] == "données_ventes"
        assert labels["owner"] == "alice__bob_ops_x_y__z_"


def test_statsd_off_sends_nothing(sink, monkeypatch):
    """With ``[metrics] statsd_on = False`` no packet leaves the process."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    config.reset()
    metrics.reset()
    metrics.record_event(make_event())
    metrics.count_error("x")
    assert sink.tasklens_lines() == []


def test_unresolvable_host_warns_once_and_never_raises(monkeypatch, caplog):
    """A StatsD host that does not resolve is logged once; record_event keeps returning normally."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "tasklens-no-such-host.invalid")
    config.reset()
    metrics.reset()
    with caplog.at_level(logging.WARNING, logger="tasklens.metrics"):
        metrics.record_event(make_event())
        metrics._sender.resolving.join(30)
        metrics.record_event(make_event())
        metrics.count_error("x")
    warnings = [r for r in caplog.records if "does not resolve" in r.getMessage()]
    assert len(warnings) == 1
    assert "tasklens-no-such-host.invalid" in warnings[0].getMessage()
    metrics.reset()
    config.reset()


def test_host_name_resolves_in_background_and_queued_metrics_are_flushed(sink, monkeypatch):
    """Metrics sent while ``localhost`` resolves wait in the buffer and arrive once it has resolved."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "localhost")
    config.reset()
    metrics.reset()
    metrics.record_event(make_event())
    metrics._sender.resolving.join(30)
    metrics.count_error("after")
    names = [parse_statsd_line(line)[0] for line in sink.tasklens_lines()]
    assert names[0] == "airflow.tasklens.task.success" and names[-1] == "airflow.tasklens.errors"


def test_empty_prefix_sends_bare_names(sink, monkeypatch):
    """An empty ``statsd_prefix`` sends ``tasklens.*`` names without a leading dot."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "")
    config.reset()
    metrics.reset()
    metrics.count_error("x")
    assert sink.tasklens_lines()[0].startswith("tasklens.errors,stage=x:1|c")


@pytest.fixture
def running_task():
    """Push a task context the way the task runner does, so custom metrics find the running task."""
    from airflow.sdk.execution_time.context import set_current_context

    ti = SimpleNamespace(
        dag_id="sales.daily",
        task_id="load-orders",
        run_id="r1",
        map_index=-1,
        try_number=1,
        state="running",
        start_date=datetime.now(timezone.utc),
        task=SimpleNamespace(task_type="PythonOperator", owner="sales", pool="default_pool", dag=None),
    )
    with set_current_context({"ti": ti}):
        yield ti


def test_custom_metrics_are_labelled_with_the_running_task_and_reach_the_alert_engine(sink, running_task, monkeypatch):
    """incr/gauge/timing add dag_id/task_id from the task context and call pipeline.handle_metric with the same data."""
    seen = []
    monkeypatch.setattr(pipeline, "handle_metric", lambda *args: seen.append(args))
    metrics.incr("records_processed", 1200)
    metrics.gauge("data_quality_score", 97.5, stage="silver")
    metrics.timing("load_orders", 0.25)
    parsed = [parse_statsd_line(line) for line in sink.tasklens_lines()]
    assert parsed[0] == (
        "airflow.tasklens.custom.records_processed",
        {"dag_id": "sales.daily", "task_id": "load-orders"},
        "1200",
        "c",
    )
    assert parsed[1] == (
        "airflow.tasklens.custom.data_quality_score",
        {"dag_id": "sales.daily", "task_id": "load-orders", "stage": "silver"},
        "97.5",
        "g",
    )
    assert parsed[2][0] == "airflow.tasklens.custom.load_orders" and parsed[2][3] == "ms"
    assert float(parsed[2][2]) == pytest.approx(250.0)
    names = [(name, value) for name, value, _labels, _event in seen]
    assert names == [("records_processed", 1200), ("data_quality_score", 97.5), ("load_orders", 0.25)]
    assert seen[0][2] == {"dag_id": "sales.daily", "task_id": "load-orders"}
    assert seen[0][3].dag_id == "sales.daily" and seen[0][3].run_id == "r1"


def test_custom_metric_outside_a_task_still_goes_out_with_none_labels(sink, monkeypatch):
    """Outside a task the custom metric is sent with ``dag_id=none`` and handle_metric gets no event."""
    seen = []
    monkeypatch.setattr(pipeline, "handle_metric", lambda *args: seen.append(args))
    metrics.incr("rows")
    [line] = sink.tasklens_lines()
    assert parse_statsd_line(line)[1] == {"dag_id": "none", "task_id": "none"}
    assert seen == [("rows", 1, {}, None)]


def test_custom_metrics_reach_the_alert_engine_when_statsd_is_off(monkeypatch):
    """Threshold rules see custom metrics even with StatsD off."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    config.reset()
    metrics.reset()
    seen = []
    monkeypatch.setattr(pipeline, "handle_metric", lambda *args: seen.append(args))
    metrics.gauge("data_quality_score", 80)
    assert seen == [("data_quality_score", 80, {}, None)]


def test_unknown_labels_are_dropped_with_one_warning(sink, caplog):
    """Labels outside the allow-list never reach StatsD and are warned about once per label name."""
    with caplog.at_level(logging.WARNING, logger="tasklens.metrics"):
        metrics.incr("rows", run_id="r1", try_number=2)
        metrics.incr("rows", run_id="r2")
    for line in sink.tasklens_lines():
        assert set(parse_statsd_line(line)[1]) == {"dag_id", "task_id"}
    dropped = [r.getMessage() for r in caplog.records if "dropped metric label" in r.getMessage()]
    assert len(dropped) == 2 and "'run_id'" in dropped[0] and "'try_number'" in dropped[1]


def test_custom_metric_names_are_sanitised(sink):
    """A custom name with dots or dashes is sent with underscores so it stays one Prometheus name."""
    metrics.incr("rows.loaded-total")
    [line] = sink.tasklens_lines()
    assert parse_statsd_line(line)[0] == "airflow.tasklens.custom.rows_loaded_total"


def test_timer_works_as_context_manager_and_decorator(sink):
    """``metrics.timer`` times a block and a function, and the function's return value passes through."""

    @metrics.timer("score")
    def score(x):
        return x * 2

    with metrics.timer("load"):
        pass
    assert score(21) == 42
    names = [parse_statsd_line(line)[0] for line in sink.tasklens_lines()]
    assert names == ["airflow.tasklens.custom.load", "airflow.tasklens.custom.score"]


def test_a_failing_alert_engine_does_not_break_custom_metrics(sink, monkeypatch):
    """If handle_metric raises, the metric call still returns and the error is counted."""

    def broken(*args):
        raise RuntimeError("alert engine down")

    monkeypatch.setattr(pipeline, "handle_metric", broken)
    before = pipeline.ERROR_COUNTS["alerts.metric"]
    metrics.incr("rows")
    assert pipeline.ERROR_COUNTS["alerts.metric"] == before + 1
    names = [parse_statsd_line(line)[0] for line in sink.tasklens_lines()]
    assert names == ["airflow.tasklens.custom.rows", "airflow.tasklens.errors"]


ids = st.from_regex(r"[\w.-]{1,60}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(dag_id=ids, task_id=ids, owner=st.text(max_size=40))
def test_any_airflow_id_survives_exactly_and_any_owner_parses(dag_id, task_id, owner):
    """Every id Airflow accepts ([\\w.-]+) round-trips exactly; any owner text yields a parseable line."""
    line = (
        metrics._tagged(
            "tasklens.task.success",
            {"dag_id": dag_id, "task_id": task_id, "owner": owner},
            ("dag_id", "task_id", "owner"),
        )
        + ":1|c"
    )
    assert "\n" not in line
    name, labels, value, stat_type = parse_statsd_line(line)
    assert (name, value, stat_type) == ("tasklens.task.success", "1", "c")
    assert labels["dag_id"] == dag_id[:250] and labels["task_id"] == task_id[:250]
    assert labels["owner"]


def test_registry_names_are_unique_and_typed():
    """METRICS lists each metric name once per kind with a known kind."""
    pairs = [(spec.name, spec.kind) for spec in metrics.METRICS]
    assert len(pairs) == len(set(pairs))
    assert {spec.kind for spec in metrics.METRICS} == {"counter", "gauge", "timer"}
    assert not any(label in {"run_id", "try_number", "map_index"} for spec in metrics.METRICS for label in spec.labels)

"""pipeline.handle: stages run in order, isolated from each other."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from threading import current_thread

import pytest

from tasklens import config, logs, metrics, pipeline
from tasklens.events import TaskEvent

#: A report from outside a task process: every stage runs on the caller's thread, in order.
EVENT = TaskEvent(event="success", dag_id="d", task_id="t", run_id="r", source="api")
#: The task's own report: its stream line and StatsD datagram are written on the hand-off thread.
TASK_EVENT = TaskEvent(event="success", dag_id="d", task_id="t", run_id="r", source="worker")


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Replace every stage with a recorder; count_error is recorded too."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(tmp_path / "events.jsonl"))
    monkeypatch.delenv("AIRFLOW__TASKLENS__ENABLED", raising=False)
    config.reset()
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(logs, "bind_task_context", lambda e: calls.append(("logs.context", e)))
    monkeypatch.setattr(logs, "write_event", lambda e: calls.append(("logs.stream", e)))
    monkeypatch.setattr(metrics, "record_event", lambda e: calls.append(("metrics", e)))
    monkeypatch.setattr(metrics, "count_error", lambda stage: calls.append(("count_error", stage)))
    monkeypatch.setattr(pipeline, "_stage_warnings", pipeline.WarnOnce(pipeline.log))
    # Only the observability stages: the alert engine's stage has its own tests.
    ours = tuple(s for s in pipeline._EVENT_STAGES if s[0] in {"logs.context", "logs.stream", "metrics"})
    monkeypatch.setattr(pipeline, "_EVENT_STAGES", ours)
    yield calls
    config.reset()


def test_every_stage_sees_the_event_in_order(recorded):
    """handle() runs log context, event stream and metrics with the same event, in that order."""
    pipeline.handle(EVENT)
    assert [name for name, _ in recorded] == ["logs.context", "logs.stream", "metrics"]
    assert all(arg is EVENT for _, arg in recorded)


def test_a_task_s_own_report_is_written_off_its_thread_in_order(monkeypatch, recorded):
    """The task's thread binds the log fields; the stream line and then the StatsD datagram are written on the
    hand-off thread, and wait_for_task_writes() returns once they are out."""
    threads: list[tuple[str, str]] = []
    monkeypatch.setattr(logs, "write_event", lambda e: threads.append(("logs.stream", current_thread().name)))
    monkeypatch.setattr(metrics, "record_event", lambda e: threads.append(("metrics", current_thread().name)))
    pipeline.handle(TASK_EVENT)
    pipeline.handle(TASK_EVENT)
    assert pipeline.wait_for_task_writes(timeout_s=10)
    assert recorded == [("logs.context", TASK_EVENT), ("logs.context", TASK_EVENT)]
    writer = "tasklens-event-writer"
    assert threads == [("logs.stream", writer), ("metrics", writer), ("logs.stream", writer), ("metrics", writer)]


def test_the_hand_off_thread_sees_the_task_s_context(monkeypatch, recorded):
    """The handed-off stages run in the context the task had when it reported (its OTel span lives there)."""
    marker: ContextVar[str] = ContextVar("marker", default="none")
    seen: list[str] = []
    monkeypatch.setattr(logs, "write_event", lambda e: seen.append(marker.get()))
    marker.set("the task's")
    pipeline.handle(TASK_EVENT)
    assert pipeline.wait_for_task_writes(timeout_s=10)
    assert seen == ["the task's"]


def test_a_raising_stage_does_not_stop_the_others_and_is_counted(recorded, monkeypatch, caplog):
    """When the event-stream stage raises, metrics still run, the error is counted per event and logged once."""

    def broken(event):
        raise OSError("disk full")

    monkeypatch.setattr(logs, "write_event", broken)
    before = pipeline.ERROR_COUNTS["logs.stream"]
    with caplog.at_level(logging.WARNING, logger="tasklens.pipeline"):
        pipeline.handle(EVENT)
        pipeline.handle(EVENT)
    assert [name for name, _ in recorded] == [
        "logs.context",
        "count_error",
        "metrics",
        "logs.context",
        "count_error",
        "metrics",
    ]
    assert [arg for name, arg in recorded if name == "count_error"] == ["logs.stream", "logs.stream"]
    assert pipeline.ERROR_COUNTS["logs.stream"] == before + 2
    warnings = [r for r in caplog.records if "'logs.stream' failed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None


def test_handle_never_raises_even_when_counting_fails(recorded, monkeypatch):
    """A stage that raises while count_error raises too still leaves handle() returning normally."""

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(metrics, "record_event", broken)
    monkeypatch.setattr(metrics, "count_error", broken)
    pipeline.handle(EVENT)
    assert [name for name, _ in recorded] == ["logs.context", "logs.stream"]


def test_disabled_tasklens_runs_no_stage(recorded, monkeypatch):
    """``[tasklens] enabled = false`` turns handle() into a no-op."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__ENABLED", "false")
    config.reset()
    pipeline.handle(EVENT)
    assert recorded == []


def test_bad_enabled_value_is_counted_and_no_stage_runs(recorded, monkeypatch):
    """An invalid ``enabled`` value makes the config stage fail (counted) instead of raising into Airflow."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__ENABLED", "maybe")
    config.reset()
    pipeline.handle(EVENT)
    assert recorded == [("count_error", "config")]


def test_real_stages_end_to_end(monkeypatch, tmp_path):
    """With the real stages, one handle() call writes the JSON line (the StatsD stage is off here)."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    config.reset()
    logs.reset()
    metrics.reset()
    pipeline.handle(EVENT)
    assert path.read_text().count("\n") == 1
    logs.reset()
    config.reset()


def _task_event(event: str, task_id: str, run_id: str, duration_s: float | None = 1.0) -> TaskEvent:
    return TaskEvent(event=event, dag_id="etl", task_id=task_id, run_id=run_id, duration_s=duration_s,
                     exception_type="ValueError" if event == "failed" else None)


def test_success_resolves_its_own_task_only(alert_store):
    """One query decides whether a success has anything to resolve; it must not close another task's alert."""
    pipeline.handle(_task_event("failed", "extract", "r1"))
    pipeline.handle(_task_event("failed", "load", "r1"))
    pipeline.record_settled_success(_settled("transform", "r2"), ())  # nothing of its own open
    assert {a["task_id"]: a["status"] for a in alert_store.list_alerts()} == {"extract": "open", "load": "open"}

    pipeline.record_settled_success(_settled("extract", "r2"), ())
    assert {a["task_id"]: a["status"] for a in alert_store.list_alerts()} == {"extract": "resolved", "load": "open"}
    assert not pipeline.ERROR_COUNTS


def _settled(task_id: str, run_id: str, duration_s: float = 1.0) -> TaskEvent:
    """A success as the api-server reads it from Airflow's records (it ended now)."""
    from dataclasses import replace
    from datetime import datetime, timezone

    event = _task_event("success", task_id, run_id, duration_s=duration_s)
    return replace(event, end_date=datetime.now(timezone.utc).isoformat())


def test_a_success_costs_the_task_no_store_io_and_the_api_server_checks_its_median(alert_store, monkeypatch):
    """In the task a success never opens the store (the median rule needs history it does not have); the
    api-server's check, with the history from Airflow's records, raises the 'ran long' alert."""
    import tasklens.store

    opened = []
    monkeypatch.setattr(tasklens.store, "get_store", lambda *a, **k: opened.append(1) or alert_store)
    for number in range(5):
        pipeline.handle(_task_event("success", "load", f"short{number}", duration_s=30.0))
    pipeline.handle(_task_event("success", "load", "long", duration_s=400.0))  # > 3 x median, > 5 min
    assert opened == [] and alert_store.list_alerts() == []

    pipeline.record_settled_success(_settled("load", "long", duration_s=400.0), (30.0,) * 5)
    (alert,) = alert_store.list_alerts()
    assert alert["rule"] == "task_duration" and alert["status"] == "open"
    assert not pipeline.ERROR_COUNTS


def test_the_built_in_rules_raise_nothing_on_a_success_alone():
    """The task process skips loading the rules for a success when no rules file is set: that shortcut holds only
    while no built-in rule can fire on a success without its history (any duration, no median)."""
    from tasklens.alerts import AlertKind
    from tasklens.rules import evaluate_event
    from tasklens.ruleset import load_ruleset

    for duration_s in (0.1, 600.0, 86_400.0 * 30):
        event = _task_event("success", "load", "r", duration_s=duration_s)
        alerts = evaluate_event(event, load_ruleset(None), resolves=False)
        assert [a for a in alerts if a.kind != AlertKind.RESOLVE] == []

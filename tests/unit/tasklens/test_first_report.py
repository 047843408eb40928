"""One failed attempt reported by several processes is counted once in metrics and the event stream.

Real stages end to end: the alert store (SQLite file), the StatsD sender (to a UDP sink) and the JSON Lines stream.
"""

from __future__ import annotations

import json

import pytest

from tasklens import config, metrics, persist, pipeline
from tasklens.events import TaskEvent
from tasklens.store import get_store, reset_stores
from tests.integration.observability import StatsdSink


@pytest.fixture
def stages(tmp_path, monkeypatch):
    """Store, StatsD sink and event stream of one test; yields (sink, events path)."""
    sink = StatsdSink()
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'alerts.db'}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(events_path))
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sink.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    config.reset()
    metrics.reset()
    reset_stores()
    get_store(migrate=True)
    yield sink, events_path
    sink.close()
    reset_stores()
    config.reset()
    metrics.reset()


def _failure(source: str, event: str = "failed", **overrides) -> TaskEvent:
    fields = dict(event=event, dag_id="etl", task_id="load", run_id="r1", try_number=1, state=event,
                  source=source, reason="task failed outside its process (worker lost or heartbeat timeout)")
    fields.update(overrides)
    return TaskEvent(**fields)


def _counted(sink: StatsdSink, name: str) -> int:
    persist.wait_idle()  # the scheduler's reports are written by the writer thread (nobody waits for them)
    return sum(int(value) for stat, _, value, kind in sink.tasklens("etl") if stat.endswith(name) and kind == "c")


def _stream(path) -> list[dict]:
    persist.wait_idle()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_heartbeat_timeout_reported_three_times_counts_once(stages):
    """Scheduler listener + the dag-processor's doubled on_failure_callback: one failure counted, one stream line."""
    sink, events_path = stages
    for source in ("scheduler", "callback", "callback"):
        pipeline.handle(_failure(source))
    assert _counted(sink, "tasklens.task.failed") == 1
    assert [(e["event"], e["source"]) for e in _stream(events_path)] == [("failed", "scheduler")]
    assert len(get_store().list_alerts()) == 1


def test_overlapping_reconcilers_count_a_kill_once(stages):
    """Two reconcilers raising the same kill (a lease handover mid-pass): counted and streamed once."""
    sink, events_path = stages
    kill = _failure("reconciler", event="killed", state="failed", reason="killed by SIGKILL")
    pipeline.handle(kill)
    pipeline.handle(kill)
    assert _counted(sink, "tasklens.task.killed") == 1
    assert len(_stream(events_path)) == 1


def test_other_attempts_and_the_workers_own_report_still_count(stages):
    """Each attempt counts once whoever reports it first; the worker's report keeps its path (counted at once)."""
    sink, events_path = stages
    pipeline.handle(_failure("worker", event="up_for_retry", try_number=1))
    pipeline.handle(_failure("scheduler", event="up_for_retry", try_number=1))  # a late second report
    pipeline.handle(_failure("scheduler", try_number=2))
    pipeline.handle(_failure("callback", try_number=2))
    assert _counted(sink, "tasklens.task.up_for_retry") == 1
    assert _counted(sink, "tasklens.task.failed") == 1
    assert [(e["try_number"], e["source"]) for e in _stream(events_path)] == [(1, "worker"), (2, "scheduler")]


def test_secondhand_report_is_counted_when_the_store_is_down(stages, monkeypatch):
    """Without the store nothing can tell a duplicate: the report is counted rather than lost."""
    sink, _ = stages
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", "sqlite:////proc/no-such-dir/alerts.db")
    config.reset()
    reset_stores()
    pipeline.handle(_failure("scheduler"))
    assert _counted(sink, "tasklens.task.failed") == 1

"""OpenTelemetry through the real scheduler path (LocalExecutor, one process per task) to a local OTLP/HTTP receiver.

With Airflow's ``[metrics] otel_on`` and ``[traces] otel_on`` (and StatsD off), a failing task's tasklens metrics
arrive as OTLP data points under their StatsD names with the labels as attributes, its ``worker.<task_id>`` span
carries the stored alert's id and fingerprint, and its event-stream lines name that span. The receiver decodes the
protobuf payloads with ``opentelemetry-proto``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasklens.store import Store
from tests.channel_servers import OtlpReceiver
from tests.integration.observability import read_stream
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration

DAGS = Path(__file__).resolve().parent / "dags_otel"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Run tl_otel once through a stack exporting to the receiver; return (receiver, events, alerts)."""
    home = tmp_path_factory.mktemp("otel-home")
    with OtlpReceiver() as receiver:
        env = {
            **receiver.env(),
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "AIRFLOW__METRICS__STATSD_ON": "False",
            "AIRFLOW__METRICS__OTEL_ON": "True",
            "AIRFLOW__TRACES__OTEL_ON": "True",
            "AIRFLOW__TASKLENS__EVENTS_PATH": str(home / "events.jsonl"),
        }
        with AirflowStack(home, DAGS, env) as stack:
            run_id = stack.trigger("tl_otel")
            assert stack.wait_for_run("tl_otel", run_id, timeout=300) == "failed"
            deadline = time.monotonic() + 60  # the task process flushed at exit; wait for the receiver to have it
            while time.monotonic() < deadline and not _task_spans(receiver):
                time.sleep(1)
        store = Store(f"sqlite:///{home / 'tasklens.db'}")
        alerts = store.list_alerts()
        store.dispose()
        return receiver.points(), receiver.spans(), read_stream(home / "events.jsonl"), alerts


def _task_spans(receiver: OtlpReceiver) -> list[dict]:
    return [span for span in receiver.spans() if span["name"] == "worker.score_model"]


def test_task_metrics_arrive_with_their_names_and_labels_as_attributes(finished):
    """The task process's failure counter and custom gauge arrive over OTLP, labelled like the StatsD metrics."""
    points, _, _, _ = finished
    failed = [p for p in points if p["name"] == "airflow.tasklens.task.failed"]
    assert failed and failed[-1]["attributes"] == {"dag_id": "tl_otel", "task_id": "score_model", "state": "failed",
                                                   "operator": "_PythonDecoratedOperator", "owner": "data-platform"}
    assert failed[-1]["kind"] == "sum" and failed[-1]["value"] == 1
    gauge = [p for p in points if p["name"] == "airflow.tasklens.custom.roc_auc"]
    assert gauge and gauge[-1]["value"] == pytest.approx(0.71)
    assert gauge[-1]["attributes"] == {"dag_id": "tl_otel", "task_id": "score_model"}


def test_the_task_span_carries_the_stored_alert(finished):
    """The worker.<task_id> span names the alert the failure stored: its id and fingerprint."""
    _, spans, _, alerts = finished
    (alert,) = [a for a in alerts if a["rule"] == "task_failed"]
    (span,) = [s for s in spans if s["name"] == "worker.score_model"]
    assert span["attributes"]["tasklens.alert_id"] == alert["id"]
    assert span["attributes"]["tasklens.fingerprint"] == alert["fingerprint"]


def test_event_stream_lines_name_the_task_span(finished):
    """The attempt's running and failed lines carry the trace_id and span_id of its span."""
    _, spans, lines, _ = finished
    (span,) = [s for s in spans if s["name"] == "worker.score_model"]
    task_lines = [line for line in lines if line.get("task_id") == "score_model" and line["event"] != "business"]
    assert [line["event"] for line in task_lines] == ["running", "failed"]
    assert {(line["trace_id"], line["span_id"]) for line in task_lines} == {(span["trace_id"], span["span_id"])}

"""tasklens.otel: metrics over OTLP with labels as attributes, the alert on the task's span, trace ids in the stream.

Metrics go to a real OTLP/HTTP receiver on 127.0.0.1 (protobuf decoded with opentelemetry-proto); spans come from a
real OTel SDK tracer provider (not the global one) with an in-memory exporter, as Airflow's would be in a task.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys

import pytest
from airflow.sdk._shared.observability.metrics import otel_logger, stats
from airflow.sdk.observability.metrics import stats_utils
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasklens import config, logs, metrics, otel, pipeline
from tasklens.alerts import Alert, AlertKind, Severity
from tasklens.store import RecordResult
from tasklens.testing import failed_event, success_event
from tests.channel_servers import OtlpReceiver
from tests.conftest import REPO

TASK_ATTRIBUTES = {"dag_id": "sales.daily", "task_id": "load-orders", "state": "failed", "operator": "PythonOperator",
                   "owner": "data"}


@pytest.fixture(params=["own", "airflow"])
def receiver(request, monkeypatch):
    """[metrics] otel_on with the OTLP endpoint of a local receiver, StatsD off; ``own``: no Airflow stats facade in
    this process (tasklens's own meter provider), ``airflow``: the facade set up as Airflow's task runner does."""
    with OtlpReceiver() as server:
        monkeypatch.setenv("AIRFLOW__METRICS__OTEL_ON", "True")
        monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # exported by the explicit flush below
        monkeypatch.setattr(stats, "_factory", None)
        monkeypatch.setattr(stats, "_backend", None)
        if request.param == "airflow":
            stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
        config.reset()
        metrics.reset()
        otel.reset()
        server.backend = request.param
        yield server
        flush_and_stop()
        otel.reset()
        config.reset()
        metrics.reset()


def flush_and_stop() -> None:
    """A final export of what was recorded, then the reader thread stops."""
    backend = otel._backend
    if isinstance(backend, otel._OwnMeter):
        backend.flush_at_exit()
    elif isinstance(backend, otel._AirflowFacade):
        backend.module._get_backend().otel.shutdown(timeout_millis=5000)
        # Airflow registered a flush of this provider at exit; shut down, it would only log "Exporter already
        # shutdown" into pytest's closed streams after the run.
        atexit.unregister(otel_logger.flush_otel_metrics)


@pytest.fixture
def tracer():
    """A recording tracer whose finished spans land in ``tracer.exporter``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    tracer.exporter = exporter
    return tracer


def test_task_metrics_go_over_otlp_with_the_same_names_and_labels_as_attributes(receiver):
    """A failed attempt's counter, duration histogram (ms) and try-number gauge arrive under their StatsD names,
    with the task labels as attributes, through Airflow's facade where Airflow set it up, else tasklens's own."""
    metrics.record_event(failed_event(dag_id="sales.daily", task_id="load-orders", operator="PythonOperator",
                                      owner="data", duration_s=1.25, try_number=2))
    metrics.count_error("logs.stream")
    expected = otel._AirflowFacade if receiver.backend == "airflow" else otel._OwnMeter
    assert isinstance(otel._backend, expected)
    flush_and_stop()

    points = {point["name"]: point for point in receiver.points()}
    failed = points["airflow.tasklens.task.failed"]
    assert (failed["kind"], failed["value"], failed["attributes"]) == ("sum", 1, TASK_ATTRIBUTES)
    duration = points["airflow.tasklens.task.duration"]
    assert duration["kind"] == "exponential_histogram" and (duration["count"], duration["value"]) == (1, 1250.0)
    assert duration["attributes"] == TASK_ATTRIBUTES
    assert points["airflow.tasklens.task.try_number"]["value"] == 2
    assert points["airflow.tasklens.errors"]["attributes"] == {"stage": "logs.stream"}
    assert {point["service"] for point in points.values()} == {"airflow"}


def test_custom_metrics_keep_their_name_and_allowed_labels(receiver, monkeypatch):
    """Task code's gauge and counter arrive as tasklens.custom.<name> with their allow-listed labels only."""
    monkeypatch.setattr(pipeline, "handle_metric", lambda *args: None)
    metrics.gauge("roc_auc", 0.52, operation="score", run_id="never-a-label")
    metrics.incr("records_processed", 1200, stage="load")
    flush_and_stop()
    points = {point["name"]: point for point in receiver.points()}
    assert points["airflow.tasklens.custom.roc_auc"]["kind"] == "gauge"
    assert points["airflow.tasklens.custom.roc_auc"]["value"] == pytest.approx(0.52)
    # Outside a task the ids are "none", as on the StatsD wire; run_id is never a label.
    assert points["airflow.tasklens.custom.roc_auc"]["attributes"] == {"dag_id": "none", "task_id": "none",
                                                                        "operation": "score"}
    assert points["airflow.tasklens.custom.records_processed"]["value"] == 1200


def test_otel_off_sends_nothing_and_an_unreachable_receiver_never_raises(receiver, monkeypatch):
    """Without otel_on nothing is recorded; with a receiver that is gone, metrics calls still return normally."""
    monkeypatch.setenv("AIRFLOW__METRICS__OTEL_ON", "False")
    config.reset()
    metrics.record_event(failed_event())
    assert otel._backend is None
    monkeypatch.setenv("AIRFLOW__METRICS__OTEL_ON", "True")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    config.reset()
    metrics.record_event(failed_event())
    flush_and_stop()
    assert receiver.points() == []


@pytest.mark.parametrize("otel_on", [False, True])
def test_the_statsd_path_loads_no_otel_metrics_sdk(otel_on, tmp_path):
    """With StatsD only, sending task metrics imports neither the OTel metrics SDK nor an OTLP exporter."""
    script = (
        "import sys\n"
        "from tasklens import metrics, pipeline\n"
        "from tasklens.testing import failed_event\n"
        "metrics.record_event(failed_event())\n"
        "loaded = [m for m in ('opentelemetry.sdk.metrics', 'opentelemetry.exporter.otlp.proto.http.metric_exporter')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}",
        "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__OTEL_ON": str(otel_on), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "AIRFLOW__TASKLENS__EVENTS_PATH": "",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.strip().splitlines()[-1]
    assert (loaded != "[]") is otel_on, loaded


def test_event_stream_lines_carry_the_active_trace(tracer, tmp_path, monkeypatch):
    """Inside a span a line gets its trace_id and span_id (W3C hex); outside a trace the line has neither."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(path))
    config.reset()
    logs.reset()
    try:
        with tracer.start_as_current_span("worker.load") as span:
            logs.write_event(success_event())
            logs.write_business_event("rows_loaded", {"rows": 3}, None)
        logs.write_event(success_event())
    finally:
        logs.reset()
        config.reset()
    inside_task, inside_business, outside = (json.loads(line) for line in path.read_text().splitlines())
    context = span.get_span_context()
    expected = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    assert (inside_task["trace_id"], inside_task["span_id"]) == expected
    assert (inside_business["trace_id"], inside_business["span_id"]) == expected
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_failure_puts_its_stored_alert_on_the_task_span(tracer, alert_store):
    """The worker's failure goes through the store's writer thread; the alert's id and fingerprint still land on the
    span that was current when the listener ran."""
    with tracer.start_as_current_span("worker.load_orders"):
        pipeline.handle(failed_event(dag_id="finance", task_id="load_orders"))
    (span,) = tracer.exporter.get_finished_spans()
    (alert,) = alert_store.list_alerts()
    assert span.attributes["tasklens.alert_id"] == alert["id"]
    assert span.attributes["tasklens.fingerprint"] == alert["fingerprint"]
    assert span.attributes["tasklens.failure_class"] == "code"  # a ValueError: the built-in classifier's fallback


def test_span_gets_the_failure_class_and_no_id_when_the_store_did_not_take_the_alert(tracer):
    """A classified failure names its class; an alert the store did not record (a duplicate report) gets no id."""
    alert = Alert(fingerprint="f1", rule="task_failed", kind=AlertKind.FAILURE, severity=Severity.CRITICAL,
                  title="t", summary="s", dag_id="d", labels={"failure_class": "infra"})
    with tracer.start_as_current_span("worker.t"):
        otel.annotate_task_span([alert], RecordResult(duplicates=1))
    (span,) = tracer.exporter.get_finished_spans()
    assert dict(span.attributes) == {"tasklens.fingerprint": "f1", "tasklens.failure_class": "infra"}
    otel.annotate_task_span([alert], RecordResult(alert_ids=[1]))  # no span: nothing happens, nothing raises

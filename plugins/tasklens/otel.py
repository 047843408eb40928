"""OpenTelemetry: tasklens metrics over OTLP, the alert on the task's span, trace ids in the event stream.

**Metrics.** With Airflow's ``[metrics] otel_on``, every batch the StatsD sender (:mod:`tasklens.metrics`) builds is
also recorded over OpenTelemetry, under the same names (``<otel_prefix>.tasklens.task.failed``; Airflow's
``otel_prefix`` defaults to ``airflow``, like ``statsd_prefix``) with the same labels as attributes (``dag_id``,
``task_id``, ``state``, ``operator``, ``owner``, ``stage``, ``operation``; values as on the StatsD wire). Counters are
OTel counters, gauges sync gauges, timers histograms in milliseconds (what Airflow's own OTel timers are).

Where they go, per process:

* **Airflow's stats facade** (``airflow.sdk.observability.stats``, or core's in the scheduler, dag-processor,
  triggerer and api-server) when Airflow set it up with its OTel logger in this process: the task process of every
  executor, and the components. Airflow 3.3's OTel logger keeps the tags of ``incr``, ``gauge`` and ``timing`` as
  attributes, and tasklens's metrics share Airflow's exporter, resource, prefix and allow/block lists.
* **The OTel SDK directly** (a meter provider of tasklens's own, never the global one) where the facade would drop
  them or their labels: processes in which Airflow did not set the facade up (``airflow dags test``, the
  dag-processor's callback runs, older Airflow versions) and deployments with ``statsd_on`` as well (Airflow's
  facade then speaks StatsD, which drops tags). It exports OTLP like Airflow's logger would: ``OTEL_EXPORTER_OTLP_*``
  variables first, else ``[metrics] otel_host``/``otel_port``/``otel_ssl_active`` (``/v1/metrics``), every
  ``otel_interval_milliseconds`` (or ``OTEL_METRIC_EXPORT_INTERVAL``), service ``OTEL_SERVICE_NAME`` or
  ``otel_service``; each export waits at most :data:`EXPORT_TIMEOUT_S`, and the process flushes once at exit.

The OTel metrics SDK and exporters load only with ``otel_on``: the StatsD path imports neither.

**Traces.** With ``[traces] otel_on`` Airflow runs each task attempt in a ``worker.<task_id>`` span. When that
attempt raises an alert, :func:`annotate_task_span` adds ``tasklens.alert_id`` (once the store took it),
``tasklens.fingerprint`` and ``tasklens.failure_class`` (failures only) to the span; :func:`trace_ids` gives the
event stream ``trace_id`` and ``span_id`` of the active span (hex, as W3C ``traceparent`` writes them).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

# The tracing API only (no SDK): airflow.settings loads it in every Airflow process already.
from opentelemetry import trace

from tasklens import config
from tasklens._once import WarnOnce
from tasklens.alerts import Alert, AlertKind

__all__ = ["EXPORT_TIMEOUT_S", "annotate_task_span", "record_metrics", "reset", "trace_ids"]

log = logging.getLogger(__name__)

#: The most one OTLP export (and the flush at process exit) may take.
EXPORT_TIMEOUT_S = 3.0

#: Airflow's stats facades, task SDK's first (task processes), then core's (scheduler, dag-processor, api-server).
_AIRFLOW_FACADES = ("airflow.sdk._shared.observability.metrics.stats", "airflow._shared.observability.metrics.stats")

_warnings = WarnOnce(log)
_warn_once = _warnings.warn


class _Backend(Protocol):
    def send(self, kind: str, name: str, value: float, attributes: dict[str, str]) -> None: ...


# -- metrics -------------------------------------------------------------------------------------


class _AirflowFacade:
    """Airflow's own stats facade, set up with Airflow's OTel logger in this process."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def send(self, kind: str, name: str, value: float, attributes: dict[str, str]) -> None:
        if kind == "incr":
            self.module.incr(name, count=value, tags=attributes)
        elif kind == "gauge":
            self.module.gauge(name, value, tags=attributes)
        else:
            self.module.timing(name, value, tags=attributes)


class _OwnMeter:
    """A meter provider of tasklens's own (not the global one), exporting OTLP as Airflow's logger would."""

    def __init__(self, settings: config.OtelMetricsSettings) -> None:
        # The OTel metrics SDK and exporter: only with [metrics] otel_on, only where Airflow's facade does not export.
        from opentelemetry import metrics  # noqa: PLC0415 - OTel metrics only with [metrics] otel_on
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - as above
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415 - as above
        from opentelemetry.sdk.metrics.view import (  # noqa: PLC0415 - as above
            ExponentialBucketHistogramAggregation,
            View,
        )
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415 - as above

        interval_ms = _env_float("OTEL_METRIC_EXPORT_INTERVAL") or settings.interval_ms or 60_000.0
        reader = PeriodicExportingMetricReader(
            _exporter(settings), export_interval_millis=interval_ms, export_timeout_millis=EXPORT_TIMEOUT_S * 1000
        )
        service = os.environ.get("OTEL_SERVICE_NAME") or settings.service or "airflow"
        self.provider = MeterProvider(
            resource=Resource.create({SERVICE_NAME: service}),
            metric_readers=[reader],
            # Like Airflow's: durations from milliseconds to hours without hand-tuned buckets.
            views=[View(instrument_type=metrics.Histogram, aggregation=ExponentialBucketHistogramAggregation())],
            shutdown_on_exit=False,
        )
        self.meter = self.provider.get_meter("tasklens")
        self.prefix = settings.prefix
        self.instruments: dict[tuple[str, str], Any] = {}
        self.pid = os.getpid()
        self.flushed = False
        atexit.register(self.flush_at_exit)

    def send(self, kind: str, name: str, value: float, attributes: dict[str, str]) -> None:
        instrument: Any = self.instruments.get((kind, name))
        if instrument is None:
            full_name = f"{self.prefix}.{name}"
            if kind == "incr":
                instrument = self.meter.create_counter(full_name)
            elif kind == "gauge":
                instrument = self.meter.create_gauge(full_name)
            else:
                instrument = self.meter.create_histogram(full_name, unit="ms")
            self.instruments[(kind, name)] = instrument
        if kind == "incr":
            instrument.add(value, attributes)
        elif kind == "gauge":
            instrument.set(value, attributes)
        else:
            instrument.record(value, attributes)

    def flush_at_exit(self) -> None:
        """Export what was recorded and stop the reader; once (the SDK warns on a second shutdown)."""
        if os.getpid() != self.pid or self.flushed:
            return  # a forked child: the parent flushes what it recorded
        self.flushed = True
        try:
            self.provider.shutdown(timeout_millis=EXPORT_TIMEOUT_S * 1000)
        except Exception:
            _warn_once("flush", "tasklens could not flush its OpenTelemetry metrics at exit", exc_info=True)


def _env_float(name: str) -> float | None:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None


def _exporter(settings: config.OtelMetricsSettings) -> Any:
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if env_endpoint and protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415 - only with otel_on
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(timeout=EXPORT_TIMEOUT_S)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415 - only with otel_on
        OTLPMetricExporter,
    )

    if env_endpoint:
        return OTLPMetricExporter(timeout=EXPORT_TIMEOUT_S)  # the SDK reads the OTEL_EXPORTER_OTLP_* variables
    if not (settings.host and settings.port):
        raise ValueError(
            "[metrics] otel_on is set but no OTLP endpoint is: set OTEL_EXPORTER_OTLP_ENDPOINT (or "
            "[metrics] otel_host and otel_port)"
        )
    scheme = "https" if settings.ssl_active else "http"
    host = f"[{settings.host}]" if ":" in settings.host and not settings.host.startswith("[") else settings.host
    return OTLPMetricExporter(endpoint=f"{scheme}://{host}:{settings.port}/v1/metrics", timeout=EXPORT_TIMEOUT_S)


def _airflow_facade() -> _AirflowFacade | None:
    """Airflow's stats facade when Airflow set it up with its OTel logger in this process, else None."""
    for name in _AIRFLOW_FACADES:
        module = sys.modules.get(name)
        # Only a facade Airflow initialised here: tasklens never sets one up (it would replace Airflow's backend).
        if module is None or getattr(module, "_factory", None) is None:
            continue
        if type(module._get_backend()).__name__ == "SafeOtelLogger":
            return _AirflowFacade(module)
    return None


_lock = threading.Lock()
_backend: _Backend | None = None
_backend_failed = False


def _get_backend(settings: config.OtelMetricsSettings) -> _Backend | None:
    global _backend, _backend_failed
    with _lock:
        if _backend is None and not _backend_failed:
            try:
                _backend = _airflow_facade() or _OwnMeter(settings)
            except Exception as exc:
                _backend_failed = True
                _warn_once(
                    "backend", "tasklens metrics are not sent over OpenTelemetry in this process: %s", exc
                )
        return _backend


def _split(stat: str) -> tuple[str, dict[str, str]]:
    # The StatsD sender's tagged name: "tasklens.task.failed,dag_id=a,task_id=b"; values hold no "," or "=".
    name, *pairs = stat.split(",")
    return name, dict(pair.split("=", 1) for pair in pairs)


def record_metrics(ops: Sequence[tuple[str, str, float]]) -> None:
    """Record one batch of the StatsD sender's ``(kind, tagged name, value)`` over OpenTelemetry when Airflow's
    ``[metrics] otel_on`` is set (a no-op otherwise). Never raises."""
    try:
        settings = config.otel_metrics_settings()
        if not settings.on:
            return
        backend = _get_backend(settings)
        if backend is None:
            return
        for kind, stat, value in ops:
            name, attributes = _split(stat)
            if kind == "incr" and value < 0:
                _warn_once(f"negative:{name}", "tasklens metric %s went down: OTel counters only go up", name)
                continue
            backend.send(kind, name, value, attributes)
    except Exception:
        _warn_once("send", "tasklens could not record metrics over OpenTelemetry", exc_info=True)


def reset() -> None:
    """Forget the chosen backend and the warnings (tests, after changing ``[metrics]``, and in a forked child)."""
    global _backend, _backend_failed
    _backend, _backend_failed = None, False
    _warnings.forget()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- traces ----------------------------------------------------------------------------------------


def trace_ids() -> dict[str, str]:
    """``{"trace_id": 32 hex, "span_id": 16 hex}`` of the active span, or ``{}`` outside a trace. Never raises."""
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return {}
        return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
    except Exception:
        return {}


def annotate_task_span(alerts: Iterable[Alert], result: Any) -> None:
    """Put the alert a task attempt raised on its span (the current one): ``tasklens.fingerprint``,
    ``tasklens.failure_class`` when the alert is a classified failure, and ``tasklens.alert_id`` when the store
    recorded exactly that alert (``result`` is :class:`tasklens.store.RecordResult`). The latest alert of the attempt
    wins. A no-op without a recording span. Never raises."""
    try:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        raised = [alert for alert in alerts if alert.kind != AlertKind.RESOLVE]
        if not raised:
            return
        alert = raised[-1]
        attributes: dict[str, str | int] = {"tasklens.fingerprint": alert.fingerprint}
        failure_class = alert.labels.get("failure_class")
        if failure_class:
            attributes["tasklens.failure_class"] = failure_class
        alert_ids = list(getattr(result, "alert_ids", None) or ())
        if len(raised) == 1 and len(alert_ids) == 1 and not getattr(result, "resolved", 0):
            attributes["tasklens.alert_id"] = alert_ids[0]
        span.set_attributes(attributes)
    except Exception:
        _warn_once("span", "tasklens could not annotate the task's span", exc_info=True)

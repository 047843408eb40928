"""StatsD metrics with labels, sent through Airflow's own ``[metrics]`` settings.

tasklens reuses ``[metrics] statsd_on``, ``statsd_host``, ``statsd_port``, ``statsd_prefix`` and
``statsd_ipv6`` and sends UDP packets with the ``statsd`` package: fire-and-forget, one packet per
task event. The host is resolved lazily, once per process: an IP literal at once, a name in a
background thread (metrics wait in a small buffer meanwhile); a host that does not resolve is
logged once and metrics are dropped, the task carries on.

**Wire format.** Labels are InfluxDB-style tags inside the metric name, which statsd_exporter
(``--statsd.parse-influxdb-tags``, on by default) turns into Prometheus labels::

    airflow.tasklens.task.success,dag_id=sales.daily,task_id=load-orders,state=success,operator=PythonOperator,owner=data:1|c

Dots, dashes, underscores and non-ASCII letters in ids are sent unchanged (UTF-8). Characters the
line protocol uses as separators -- ``,`` ``=`` ``:`` ``|`` ``#`` ``[`` ``]``, whitespace and control
characters -- are replaced by ``_`` in label values; an empty value is sent as ``none``.
Custom metric names keep ``[A-Za-z0-9_]`` only (anything else becomes ``_``).

**Label allow-list** (cardinality guard): ``dag_id``, ``task_id``, ``state``, ``operator``, ``owner``,
``stage``, ``operation``. Any other label passed to the custom-metric API is dropped, with a warning
once per label name. ``run_id``, ``try_number`` and ``map_index`` are never labels: they grow without
bound. Every metric name the code emits is listed in :data:`METRICS`.

Task code::

    from tasklens import metrics

    metrics.incr("records_processed", 1200)
    metrics.gauge("data_quality_score", 97.5)
    with metrics.timer("load_orders"):
        ...

Each custom metric also goes to the alert engine (``pipeline.handle_metric``, registered with
:func:`send_to_alerts`) so metric threshold rules see it, whether or not StatsD is on.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import inspect
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import statsd

from tasklens import config, events
from tasklens._once import WarnOnce
from tasklens.events import EVENT_KINDS, TaskEvent

__all__ = [
    "ALLOWED_LABELS",
    "CUSTOM_PREFIX",
    "METRICS",
    "METRIC_NAMES",
    "MetricSpec",
    "count_config_error",
    "count_error",
    "current_task_event",
    "escape_label_value",
    "gauge",
    "incr",
    "observe_operation",
    "record_event",
    "reset",
    "send_to_alerts",
    "send_to_otel",
    "timer",
    "timing",
]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

TASK_LABELS: tuple[str, ...] = ("dag_id", "task_id", "state", "operator", "owner")
CUSTOM_LABELS: tuple[str, ...] = ("dag_id", "task_id")
ALLOWED_LABELS: frozenset[str] = frozenset({*TASK_LABELS, "stage", "operation"})

CUSTOM_PREFIX = "tasklens.custom."
TASK_DURATION = "tasklens.task.duration"
TASK_TRY_NUMBER = "tasklens.task.try_number"
ERRORS = "tasklens.errors"
CONFIG_ERRORS = "tasklens.config_errors"
OPERATION_DURATION = "tasklens.operation.duration"


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric tasklens emits. ``name`` is before Airflow's ``statsd_prefix``; ``*`` is a custom name."""

    name: str
    kind: str  # "counter" | "gauge" | "timer"
    labels: tuple[str, ...]
    description: str


#: Every metric name tasklens emits (the monitoring files and their tests are checked against it).
METRICS: tuple[MetricSpec, ...] = (
    *(
        MetricSpec(f"tasklens.task.{kind}", "counter", TASK_LABELS, f"task attempts that reached '{kind}'")
        for kind in EVENT_KINDS
    ),
    MetricSpec(TASK_DURATION, "timer", TASK_LABELS, "task attempt duration (ms on the wire)"),
    MetricSpec(TASK_TRY_NUMBER, "gauge", TASK_LABELS, "try number of the latest attempt"),
    MetricSpec(ERRORS, "counter", ("stage",), "tasklens stage failures (the task is never affected)"),
    MetricSpec(CONFIG_ERRORS, "counter", ("kind",), "configuration errors tasklens worked around (once per process "
               "that met one, and once per api-server check while it lasts)"),
    MetricSpec(OPERATION_DURATION, "timer", (*CUSTOM_LABELS, "operation"), "tasklens.timed() / performance()"),
    MetricSpec(CUSTOM_PREFIX + "*", "counter", CUSTOM_LABELS, "metrics.incr(name, value)"),
    MetricSpec(CUSTOM_PREFIX + "*", "gauge", CUSTOM_LABELS, "metrics.gauge(name, value)"),
    MetricSpec(CUSTOM_PREFIX + "*", "timer", CUSTOM_LABELS, "metrics.timing(name, seconds) / metrics.timer(name)"),
)
METRIC_NAMES: tuple[str, ...] = tuple(dict.fromkeys(spec.name for spec in METRICS))

_UNSAFE_IN_VALUE = re.compile(r"[,=:|#\[\]\s\x00-\x1f\x7f]")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_]")
_MAX_VALUE_CHARS = 250
_PENDING_LIMIT = 512
_EXIT_FLUSH_WAIT_S = 0.5

_warnings = WarnOnce(log)
_warn_once = _warnings.warn


# -- wire format ---------------------------------------------------------------------------------


def escape_label_value(value: Any) -> str:
    """A label value safe inside ``name,key=value:1|c``: separators become ``_``, empty is ``none``."""
    text = "" if value is None else str(value)
    if not text:
        return "none"
    return _UNSAFE_IN_VALUE.sub("_", text[:_MAX_VALUE_CHARS])


def _tagged(name: str, labels: Mapping[str, Any], keys: Iterable[str]) -> str:
    return name + "".join(f",{key}={escape_label_value(labels.get(key))}" for key in keys)


def _custom_name(name: str) -> str:
    clean = _UNSAFE_IN_NAME.sub("_", str(name)) or "unnamed"
    if clean[0].isdigit():
        clean = "_" + clean
    if clean != name:
        _warn_once(f"name:{name}", "tasklens metric name %r is sent as %r (only [A-Za-z0-9_] are kept)", name, clean)
    return clean


# -- the StatsD client ---------------------------------------------------------------------------


class _Utf8StatsClient(statsd.StatsClient):
    """``statsd.StatsClient`` sends ASCII only; Airflow ids may hold any letter, so send UTF-8."""

    def _send(self, data: str) -> None:
        try:
            self._sock.sendto(data.encode("utf-8", errors="replace"), self._addr)
        except (OSError, RuntimeError):
            pass  # fire-and-forget: a full buffer or an unreachable port must not reach the task


class _Sender:
    """Lazily built client; packets wait in a bounded buffer while a host name resolves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forget()

    def forget(self) -> None:
        self.client: _Utf8StatsClient | None = None
        self.settings: config.StatsdSettings | None = None
        self.resolving: threading.Thread | None = None
        self.failed = False
        self.pending: collections.deque[list[tuple[str, str, float]]] = collections.deque(maxlen=_PENDING_LIMIT)

    def send(self, ops: list[tuple[str, str, float]]) -> None:
        if _otel_hook is not None:
            _otel_hook(ops)  # [metrics] otel_on: the same batch over OpenTelemetry (tasklens.otel)
        client = self.client
        if client is None:
            client = self._client_or_queue(ops)
            if client is None:
                return
        _send_ops(client, ops)

    def _client_or_queue(self, ops: list[tuple[str, str, float]]) -> _Utf8StatsClient | None:
        with self.lock:
            if self.client is not None:
                return self.client
            if self.failed:
                return None
            if self.settings is None:
                self.settings = config.statsd_settings()
            settings = self.settings
            if not settings.on:
                return None
            if _is_ip_literal(settings.host):
                self._build(settings)
                return self.client
            self.pending.append(ops)
            if self.resolving is None:
                self.resolving = threading.Thread(
                    target=self._resolve, args=(settings,), name="tasklens-statsd-resolve", daemon=True
                )
                self.resolving.start()
            return None

    def _build(self, settings: config.StatsdSettings) -> None:
        try:
            self.client = _Utf8StatsClient(
                settings.host, settings.port, prefix=settings.prefix or None, maxudpsize=1432, ipv6=settings.ipv6
            )
        except OSError as exc:  # gaierror for names, OSError for a bad address family
            self.failed = True
            _warn_once(
                "resolve",
                "tasklens metrics are off in this process: StatsD host %r (port %s) does not resolve: %s. "
                "Fix [metrics] statsd_host.",
                settings.host,
                settings.port,
                exc,
            )

    def _resolve(self, settings: config.StatsdSettings) -> None:
        with self.lock:
            pass  # wait until the caller that started us has queued its packet
        self._build(settings)  # getaddrinfo may take long: never under the lock
        with self.lock:
            queued = list(self.pending)
            self.pending.clear()
        if self.client is not None:
            for ops in queued:
                _send_ops(self.client, ops)

    def flush_at_exit(self) -> None:
        thread = self.resolving
        if thread is not None and thread.is_alive():
            thread.join(_EXIT_FLUSH_WAIT_S)

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
            self.forget()

    def after_fork_in_child(self) -> None:
        # The parent may have held the lock or been resolving at fork time: neither exists here.
        self.lock = threading.Lock()
        if self.client is None:
            self.forget()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _send_ops(client: _Utf8StatsClient, ops: list[tuple[str, str, float]]) -> None:
    if len(ops) == 1:
        kind, stat, value = ops[0]
        getattr(client, kind)(stat, value)
        return
    with client.pipeline() as pipe:  # one UDP packet, newline-separated lines
        for kind, stat, value in ops:
            getattr(pipe, kind)(stat, value)


_sender = _Sender()
atexit.register(_sender.flush_at_exit)
os.register_at_fork(after_in_child=_sender.after_fork_in_child)


def reset() -> None:
    """Forget the client, settings and warnings (tests, after changing ``[metrics]``)."""
    _sender.close()
    _attempt_cache.clear()
    _warnings.forget()


# -- task events (pipeline stage) ------------------------------------------------------------------


def record_event(event: TaskEvent) -> None:
    """Send the counter of this transition, the duration timer and the try-number gauge."""
    if event.event not in EVENT_KINDS:
        _warn_once(f"kind:{event.event}", "tasklens has no metric for event kind %r", event.event)
        return
    labels = {
        "dag_id": event.dag_id,
        "task_id": event.task_id,
        "state": event.state or event.event,
        "operator": event.operator,
        "owner": event.owner,
    }
    tags = _tagged("", labels, TASK_LABELS)
    ops: list[tuple[str, str, float]] = [
        ("incr", f"tasklens.task.{event.event}{tags}", 1),
        ("gauge", f"{TASK_TRY_NUMBER}{tags}", event.try_number),
    ]
    if event.duration_s is not None:
        ops.append(("timing", f"{TASK_DURATION}{tags}", event.duration_s * 1000.0))
    _sender.send(ops)


def count_error(stage: str) -> None:
    """Count one failure of a tasklens stage in ``tasklens.errors{stage=...}``. Never raises."""
    try:
        _sender.send([("incr", _tagged(ERRORS, {"stage": stage}, ("stage",)), 1)])
    except Exception:
        _warn_once("count_error", "tasklens could not count a stage error", exc_info=True)


def count_config_error(kind: str) -> None:
    """Count one configuration error in ``tasklens.config_errors{kind=...}`` (``missing_file``,
    ``invalid_yaml``, ``unknown_preset``, ...). Never raises."""
    try:
        _sender.send([("incr", _tagged(CONFIG_ERRORS, {"kind": kind}, ("kind",)), 1)])
    except Exception:
        _warn_once("count_config_error", "tasklens could not count a configuration error", exc_info=True)


# -- the running task --------------------------------------------------------------------------

_attempt_cache: dict[tuple[Any, ...], TaskEvent] = {}


def current_task_event() -> TaskEvent | None:
    """The running task attempt as a ``TaskEvent`` (``event="running"``), or None outside a task."""
    try:
        from airflow.sdk import get_current_context  # noqa: PLC0415 - Airflow's task SDK: only inside a running task

        context = get_current_context()
    except Exception:
        return None
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return None
    key = (ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1), getattr(ti, "try_number", 1))
    cached = _attempt_cache.get(key)
    if cached is None:
        cached = events.from_task_instance("running", ti, source="worker")
        if len(_attempt_cache) > 64:  # dags test runs many tasks in one process
            _attempt_cache.clear()
        _attempt_cache[key] = cached
    return cached


def _custom_labels(labels: Mapping[str, Any], event: TaskEvent | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    if event is not None:
        merged.update(dag_id=event.dag_id, task_id=event.task_id)
    for key, value in labels.items():
        if key not in ALLOWED_LABELS:
            _warn_once(
                f"label:{key}",
                "tasklens dropped metric label %r: not in the label allow-list %s (high-cardinality guard)",
                key,
                sorted(ALLOWED_LABELS),
            )
            continue
        merged[key] = str(value)
    return merged


def _emit_custom(kind: str, stat: str, alert_name: str, value: float, labels: Mapping[str, Any]) -> None:
    """Send one custom metric and hand it to the alert engine. Never raises."""
    try:
        event = current_task_event()
        merged = _custom_labels(labels, event)
        keys = [*CUSTOM_LABELS, *sorted(k for k in merged if k not in CUSTOM_LABELS)]
        wire_value = value * 1000.0 if kind == "timing" else value
        _sender.send([(kind, _tagged(stat, merged, keys), wire_value)])
    except Exception:
        _warn_once(f"custom:{kind}", "tasklens could not send metric %r", alert_name, exc_info=True)
        count_error("metrics.custom")
        return
    hook = _alert_hook
    if hook is not None:
        hook(alert_name, value, merged, event)


#: Receives every custom metric for the alert rules; set by the wiring point (``tasklens.pipeline``), which the
#: plugin's listener loads in every Airflow process, so this stage never imports the pipeline.
_alert_hook: Callable[[str, float, Mapping[str, str], TaskEvent | None], None] | None = None


#: Receives every batch for OpenTelemetry (``tasklens.otel.record_metrics``, set by the wiring point); it checks
#: ``[metrics] otel_on`` itself, must never raise, and keeps OTel's SDK out of this module.
_otel_hook: Callable[[list[tuple[str, str, float]]], None] | None = None


def send_to_otel(hook: Callable[[list[tuple[str, str, float]]], None] | None) -> None:
    """Hand every metric batch to ``hook`` as well (tasklens.otel); it must never raise."""
    global _otel_hook
    _otel_hook = hook


def send_to_alerts(hook: Callable[[str, float, Mapping[str, str], TaskEvent | None], None] | None) -> None:
    """Hand every custom metric to ``hook`` (the alert engine's metric rules); it must never raise."""
    global _alert_hook
    _alert_hook = hook


def incr(name: str, value: float = 1, **labels: Any) -> None:
    """Add ``value`` to counter ``name`` (e.g. ``records_processed``), labelled with the running task."""
    clean = _custom_name(name)
    _emit_custom("incr", CUSTOM_PREFIX + clean, clean, value, labels)


def gauge(name: str, value: float, **labels: Any) -> None:
    """Set gauge ``name`` (e.g. ``data_quality_score``) to ``value``, labelled with the running task."""
    clean = _custom_name(name)
    _emit_custom("gauge", CUSTOM_PREFIX + clean, clean, value, labels)


def timing(name: str, seconds: float, **labels: Any) -> None:
    """Record a duration of ``seconds`` in timer ``name`` (milliseconds on the wire, as StatsD expects)."""
    clean = _custom_name(name)
    _emit_custom("timing", CUSTOM_PREFIX + clean, clean, seconds, labels)


def observe_operation(operation: str, seconds: float, **labels: Any) -> None:
    """Record one run of ``operation`` in ``tasklens.operation.duration{operation=...}`` (used by ``timed``)."""
    _emit_custom("timing", OPERATION_DURATION, "operation_duration_s", seconds, {**labels, "operation": operation})


class timer:  # lower case: reads like the function it stands in for
    """Time a block or a function into timer ``name``.

    >>> with metrics.timer("load_orders"):
    ...     load()
    >>> @metrics.timer("score_model")
    ... def score(): ...
    """

    def __init__(self, name: str, **labels: Any) -> None:
        self.name, self.labels = name, labels
        self._starts: list[float] = []

    def __enter__(self) -> timer:
        self._starts.append(time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        timing(self.name, time.perf_counter() - self._starts.pop(), **self.labels)

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with timer(self.name, **self.labels):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with timer(self.name, **self.labels):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

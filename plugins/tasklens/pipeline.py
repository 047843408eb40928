"""The only place the tasklens stages are wired together.

``handle(event)`` runs each stage in turn: bind into the task log, append to the event stream,
emit StatsD metrics, turn the event into alerts and persist them to the store (outbox). Each
stage is isolated: one that raises is logged once, counted in ``tasklens.errors{stage=...}``
and skipped; the others still run, and the task's state is never affected.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tasklens import config, failures, logs, metrics, otel, persist
from tasklens._once import WarnOnce
from tasklens.alerts import Alert, AlertKind, Delivery
from tasklens.background import Handoff
from tasklens.events import TaskEvent
from tasklens.exceptions import StoreError
from tasklens.spool import Spool

if TYPE_CHECKING:  # types only: the store (SQLAlchemy) and the rules model load on the first alert
    from tasklens.ruleset import Rule, Ruleset
    from tasklens.store import RecordResult

__all__ = [
    "ERROR_COUNTS",
    "NOTIFY_CHANNELS_KEY",
    "handle",
    "handle_metric",
    "ingest_spool",
    "raise_custom_alert",
    "record_alerts",
    "record_settled_success",
    "run_stage",
    "wait_for_task_writes",
]

log = logging.getLogger(__name__)

def _engine() -> tuple[ModuleType, ModuleType]:
    """The rules engine and the router, imported on the first alert: with the rules model and PyYAML they would cost
    every process that merely loads the plugin (each task process) ~12 ms."""
    from tasklens import routing, rules  # noqa: PLC0415 - see the docstring

    return rules, routing


#: Failures per stage in this process; also sent as ``tasklens.errors`` with a ``stage`` label.
ERROR_COUNTS: collections.Counter[str] = collections.Counter()
_stage_warnings = WarnOnce(log)


def run_stage(stage: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; on any error log a warning (once per stage and process), count it, return None."""
    try:
        return func(*args, **kwargs)
    except Exception:
        ERROR_COUNTS[stage] += 1
        if _stage_warnings.first(stage):
            log.warning(
                "tasklens stage %r failed; the task state is not affected (further failures of this stage "
                "are counted in tasklens.errors only)",
                stage,
                exc_info=True,
            )
        try:
            metrics.count_error(stage)
        except Exception:  # noqa: S110 - counting the error must never raise either
            pass
        return None


def _bind_log_context(event: TaskEvent) -> None:
    logs.bind_task_context(event)


def _write_event_stream(event: TaskEvent) -> None:
    logs.write_event(event)


def _emit_metrics(event: TaskEvent) -> None:
    metrics.record_event(event)


def _raise_alerts(event: TaskEvent, on_recorded: Callable[[bool | None], None] | None = None) -> None:
    """Rules -> routing -> store (the alert engine wires this stage), within the store's time budget.

    ``on_recorded(first_report)`` runs once the store answered: False when it already had this attempt's failure
    (another reporter was first), None when the write was spooled instead."""
    if event.event not in _ALERTING_EVENTS:
        return  # no rule reacts to it, so the store is not touched (task start, skips)
    if event.event == "success":
        _raise_success_alerts(event)
        return
    once = _Once(on_recorded)

    def write() -> None:
        try:
            first_report = _record_event_alerts(event)
        except StoreError:
            once(None)  # about to be spooled: counted now, as the store cannot say
            raise
        once(first_report)

    _persist(write, "event", event.to_dict(), wait=_waits_for_store(event))


class _Once:
    """Calls ``callback`` the first time only (a write that timed out may still finish later)."""

    def __init__(self, callback: Callable[[bool | None], None] | None) -> None:
        self.callback = callback
        self.lock = threading.Lock()

    def __call__(self, first_report: bool | None) -> None:
        with self.lock:
            callback, self.callback = self.callback, None
        if callback is not None:
            callback(first_report)


def _raise_success_alerts(event: TaskEvent) -> None:
    """A success touches the store only when a rule fires on it alone (a fixed ``max_duration``). Resolving the
    alerts it ends and comparing it with its history need no word from the task: the api-server does both from
    Airflow's own records (:func:`record_settled_success`), so the common case costs no I/O at all."""
    if config.rules_file() is None:
        return  # the built-in rules raise nothing on a success alone (test_pipeline pins it): no ruleset to use
    rules, _ = _engine()
    ruleset = config.ruleset()
    alerts = [a for a in rules.evaluate_event(event, ruleset, resolves=False) if a.kind != AlertKind.RESOLVE]
    if alerts:
        _persist(lambda: _record(alerts, ruleset, event=event), "event", event.to_dict(),
                 wait=_waits_for_store(event))


def record_settled_success(event: TaskEvent, recent_durations_s: Sequence[float]) -> None:
    """A success read from Airflow's metadata DB (the api-server's checks): close the alerts it resolves, check its
    duration against ``recent_durations_s`` and store the event (the UI's task tab). Raises
    :class:`~tasklens.exceptions.StoreError` when the store cannot take it (the check retries next pass)."""
    rules, _ = _engine()
    ruleset = config.ruleset()
    _record(rules.evaluate_event(event, ruleset, recent_durations_s=recent_durations_s), ruleset, event=event)


def record_alerts(alerts: Sequence[Alert]) -> None:
    """Route and store alerts the api-server's checks raised from Airflow's metadata DB (running too long, late
    runs, deadline forecasts). Raises :class:`~tasklens.exceptions.StoreError` when the store cannot take them (the
    check raises them again next pass)."""
    if alerts:
        _record(alerts, config.ruleset())


def _record_event_alerts(event: TaskEvent) -> bool:
    """Evaluate and store ``event``'s alerts; returns whether this was the first report of the attempt."""
    # SQLAlchemy loads only when a write reaches the store (never on a task's success path).
    from tasklens.store import get_store  # noqa: PLC0415

    rules, _ = _engine()
    ruleset = config.ruleset()
    store = get_store()
    median_rules = _median_duration_rules(ruleset)
    history: tuple[float, ...] = ()
    if any(_may_exceed_median(rule, event) for rule in median_rules):
        history = store.recent_durations(event.dag_id, event.task_id)
    alerts = rules.evaluate_event(event, ruleset, recent_durations_s=history)
    # Terminal events are stored for the UI tab and the duration history; a success is stored only when a
    # median-based duration rule needs the history. Most successes are shorter than the rule's min_duration
    # (5 min built in), so they skip the history read and cost one write transaction.
    keep_event = event.event != "success" or bool(median_rules)
    result = _record(alerts, ruleset, event=event if keep_event else None)
    return result is None or not keep_event or bool(result.first_report)


#: Events the alert rules react to; "running" and "skipped" never touch the store.
_ALERTING_EVENTS = frozenset({"success", "failed", "up_for_retry", "killed"})
#: Reserved key of ``raise_custom_alert(data=...)``: explicit channel names (the notifiers use it) instead of routes.
NOTIFY_CHANNELS_KEY = "_tasklens_channels"
#: Reports from these sources come from long-lived processes (the scheduler's listener, the api-server's): they
#: never wait for the store. Everything else runs in a process that may end right after, so it waits (bounded).
_NON_WAITING_SOURCES = frozenset({"scheduler", "api"})


def _waits_for_store(event: TaskEvent) -> bool:
    return event.source not in _NON_WAITING_SOURCES


def _persist(write: Callable[[], object], op: str, payload: Mapping[str, Any], *, wait: bool,
             stage: str = "alerts") -> None:
    """Store through the writer thread (spooled when the store cannot take it in time); then, when earlier writes
    wait in the spool, ingest them in the background."""
    def write_then_catch_up() -> None:
        try:
            write()
        except StoreError:
            raise  # spooled by persist
        except Exception as exc:
            if wait:
                raise  # the caller's stage counts it
            run_stage(stage, _reraise, exc)  # nobody waits for this write: count it here
            return
        if _spool().has_records():
            persist.run_in_background(ingest_spool)

    # The writer thread runs the write in this thread's context: the task's span (tasklens.otel) is current there.
    persist.persist(functools.partial(contextvars.copy_context().run, write_then_catch_up), op, payload, wait=wait)


def _reraise(exc: Exception) -> None:
    raise exc


def _spool() -> Spool:
    return Spool(config.spool_dir())


def ingest_spool(*, limit: int = 500, budget_s: float = 10.0) -> int:
    """Store the writes waiting in the spool (oldest first, at most ``limit``, for about ``budget_s``); returns how
    many were stored. Raises when the store is still unavailable (the records stay)."""
    def store_unavailable(exc: Exception) -> bool:
        return isinstance(exc, StoreError)

    return int(_spool().ingest(_replay, is_transient=store_unavailable, limit=limit,
                               deadline=time.monotonic() + budget_s))


def _replay(op: str, payload: Mapping[str, Any]) -> None:
    """Repeat one spooled write synchronously (raising, so that a failed one stays in the spool)."""
    context = payload.get("context")
    task = TaskEvent.from_dict(context) if isinstance(context, Mapping) else None
    if op == "event":
        _record_event_alerts(TaskEvent.from_dict(payload))
    elif op == "metric":
        _record_metric_alerts(str(payload["name"]), float(payload["value"]), dict(payload.get("labels") or {}), task)
    elif op == "custom":
        _record_custom_alert(str(payload["title"]), str(payload["severity"]), payload.get("template"),
                             dict(payload.get("data") or {}), task)
    else:
        raise ValueError(f"unknown spool record {op!r}")


def _median_duration_rules(ruleset: Ruleset) -> list[Rule]:
    return [rule for rule in ruleset.rules_of_type("duration") if rule.enabled and rule.median_factor]


def _may_exceed_median(rule: Rule, event: TaskEvent) -> bool:
    """Whether ``rule`` could fire on ``event`` at all: shorter than its min_duration, the median is irrelevant."""
    rules, _ = _engine()
    duration = event.duration_s
    return duration is not None and duration >= rule.min_duration_s and rules.rule_condition(rule)(event)


def _record(alerts: Sequence[Alert], ruleset: Ruleset, *, event: TaskEvent | None = None,
            deliveries_for: Callable[[Alert], Iterable[Delivery]] | None = None) -> RecordResult | None:
    """Route ``alerts`` (muted routes dropped) and record them, with ``event``, in one store transaction.

    Raises :class:`~tasklens.exceptions.StoreError` when the store cannot take them."""
    # SQLAlchemy loads only when a write reaches the store (never on a task's success path).
    from tasklens.store import get_store  # noqa: PLC0415

    if not alerts and event is None:
        return None
    _, routing = _engine()
    now = datetime.now(timezone.utc)
    items: list[tuple[Alert, Sequence[Delivery], bool]] = []
    for alert in alerts:
        if alert.kind == AlertKind.RESOLVE:
            items.append((alert, (), False))  # resolve notices go where the alert went (the store knows)
            continue
        deliveries = list(deliveries_for(alert) if deliveries_for else routing.route(alert, ruleset))
        live = [d for d in deliveries if not routing.is_muted(d, now, ruleset)]
        if deliveries and not live:
            items.append((alert, deliveries, True))  # every route muted: stored as muted, nothing sent
        else:
            items.append((alert, live, False))
    result = get_store().record(items, event=event.to_dict() if event is not None else None)
    otel.annotate_task_span(alerts, result)  # [traces] otel_on: the alert on the task's span
    return result


_EVENT_STAGES: tuple[tuple[str, Callable[[TaskEvent], object]], ...] = (
    ("logs.context", _bind_log_context),
    ("logs.stream", _write_event_stream),
    ("metrics", _emit_metrics),
    ("alerts", _raise_alerts),
)


#: Failure reports that may come several times per attempt when they come from outside the task process.
_FAILURE_EVENTS = frozenset({"failed", "up_for_retry", "killed"})
#: Stages that only write where nobody waits (a file line, a UDP datagram): for the task's own reports they run on
#: the hand-off thread, so the task's thread pays for building the event only (the listener runs before execute()
#: and after the final state). In order, with the task's context (its OTel span for the stream's trace ids).
_HANDED_OFF_STAGES = frozenset({"logs.stream", "metrics"})
_task_writes = Handoff("tasklens-event-writer")


def wait_for_task_writes(timeout_s: float = 5.0) -> bool:
    """Wait up to ``timeout_s`` for the stream lines and StatsD datagrams of the task's reports handled so far
    (they are written off the task's thread, and at the latest when the process exits); True when all are out."""
    return _task_writes.flush(timeout_s)


def _run_stages(stages: Sequence[tuple[str, Callable[[TaskEvent], object]]], event: TaskEvent) -> None:
    for stage, func in stages:
        run_stage(stage, func, event)


def handle(event: TaskEvent) -> None:
    """Run ``event`` through every stage. Never raises."""
    if not run_stage("config", config.enabled):
        return
    if event.event in _FAILURE_EVENTS:  # never on a success: the classifier needs the rules file
        event = run_stage("classify", _classified, event) or event
    if event.source != "worker" and event.event in _FAILURE_EVENTS:
        _handle_secondhand_failure(event)
        return
    if event.source != "worker":
        _run_stages(_EVENT_STAGES, event)
        return
    handed_off = [stage for stage in _EVENT_STAGES if stage[0] in _HANDED_OFF_STAGES]
    if handed_off and not _task_writes.submit(contextvars.copy_context().run, _run_stages, handed_off, event):
        run_stage("handoff", _report_backlog)
    _run_stages([stage for stage in _EVENT_STAGES if stage[0] not in _HANDED_OFF_STAGES], event)


def _report_backlog() -> None:
    raise RuntimeError(f"the event writer's backlog is full ({_task_writes.max_backlog}); this event's stream line "
                       "and metrics are dropped (is the event stream's file system stuck?)")


def _classified(event: TaskEvent) -> TaskEvent:
    """``event`` with its failure class (the rules file's classifier table, then the built-in one)."""
    return dataclasses.replace(event, failure_class=failures.classify(event, config.ruleset().failure_classes))


def _handle_secondhand_failure(event: TaskEvent) -> None:
    """A failure reported from outside the task process: the scheduler listener, the dag-processor's callback (run
    twice), the reconciler (maybe two at once), the api-server. Several of them report one attempt, so the store
    decides first (one failure outcome per attempt) and only the first report reaches the event stream and the
    metrics. The worker's own report keeps the cheap order above; when the store is unavailable, count anyway."""
    run_stage("logs.context", _bind_log_context, event)

    def count_first_report(first_report: bool | None) -> None:
        if first_report is False:
            return  # another reporter was first: its report was streamed and counted
        run_stage("logs.stream", _write_event_stream, event)
        run_stage("metrics", _emit_metrics, event)

    run_stage("alerts", _raise_alerts, event, count_first_report)


def handle_metric(name: str, value: float, labels: Mapping[str, str], context: TaskEvent | None = None) -> None:
    """A task emitted a custom metric: evaluate the metric threshold rules on it. Never raises."""

    def evaluate() -> None:
        if not config.ruleset().rules_of_type("metric"):
            return  # the common case: no threshold rules, no store access on every metric
        payload = {"name": name, "value": value, "labels": dict(labels),
                   "context": context.to_dict() if context is not None else None}
        _persist(lambda: _record_metric_alerts(name, value, labels, context), "metric", payload, wait=True,
                 stage="alerts.metric")

    run_stage("alerts.metric", evaluate)


def _record_metric_alerts(name: str, value: float, labels: Mapping[str, str], context: TaskEvent | None) -> None:
    rules, _ = _engine()
    ruleset = config.ruleset()
    _record(rules.evaluate_metric(name, value, labels, ruleset, context), ruleset)


def raise_custom_alert(title: str, severity: str, template: str | None, data: Mapping[str, Any],
                       context: TaskEvent | None = None) -> None:
    """Task code raised an alert itself (``tasklens.alert(...)``). Never raises."""

    def record() -> None:
        payload = {"title": title, "severity": severity, "template": template, "data": dict(data),
                   "context": context.to_dict() if context is not None else None}
        _persist(lambda: _record_custom_alert(title, severity, template, data, context), "custom", payload,
                 wait=True, stage="alerts.custom")

    run_stage("alerts.custom", record)


def _record_custom_alert(title: str, severity: str, template: str | None, data: Mapping[str, Any],
                         context: TaskEvent | None) -> None:
    rules, _ = _engine()
    ruleset = config.ruleset()
    payload = dict(data)
    channels = payload.pop(NOTIFY_CHANNELS_KEY, None)
    alert = rules.custom_alert(title, severity, template, payload, context, ruleset)
    deliveries_for = _explicit_deliveries(channels, ruleset) if channels else None
    _record([alert], ruleset, deliveries_for=deliveries_for)


def _explicit_deliveries(channels: str | Sequence[str], ruleset: Ruleset) -> Callable[[Alert], list[Delivery]]:
    """Deliveries straight to named channels (a notifier's own target), bypassing the routes."""
    names = [channels] if isinstance(channels, str) else list(channels)
    _, routing = _engine()

    def deliveries(alert: Alert) -> list[Delivery]:
        out = []
        for name in names:
            known = ruleset.channels.get(name)
            channel_type = known.type if known is not None else name
            out.append(Delivery(route="notifier", channel=name, channel_type=channel_type,
                                group_key=routing.group_key(alert, "notifier", ("dag_id", "run_id"))))
        return out

    return deliveries


def _evaluate_custom_metric(name: str, value: float, labels: Mapping[str, str], context: TaskEvent | None) -> None:
    run_stage("alerts.metric", handle_metric, name, value, labels, context)


# The metrics stage hands every custom metric to the alert rules through this hook (it does not import the pipeline).
metrics.send_to_alerts(_evaluate_custom_metric)
metrics.send_to_otel(otel.record_metrics)

"""The only place the tasklens stages are wired together.

``handle(event)`` runs each stage in turn: bind into the task log, append to the event stream,
emit StatsD metrics, turn the event into alerts and persist them to the store (outbox). Each
stage is isolated: one that raises is logged once, counted in ``tasklens.errors{stage=...}``
and skipped; the others still run, and the task's state is never affected.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from typing import Any

from tasklens._once import WarnOnce
from tasklens.events import TaskEvent

__all__ = ["ERROR_COUNTS", "handle", "handle_metric", "raise_custom_alert", "run_stage"]

log = logging.getLogger(__name__)

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
            from tasklens import metrics

            metrics.count_error(stage)
        except Exception:  # noqa: S110 - counting the error must never raise either
            pass
        return None


def _bind_log_context(event: TaskEvent) -> None:
    from tasklens import logs

    logs.bind_task_context(event)


def _write_event_stream(event: TaskEvent) -> None:
    from tasklens import logs

    logs.write_event(event)


def _emit_metrics(event: TaskEvent) -> None:
    from tasklens import metrics

    metrics.record_event(event)


def _raise_alerts(event: TaskEvent) -> bool | None:
    """Rules -> routing -> store (the alert engine wires this stage). False when the store already had this
    attempt's failure (another reporter was first); None when the store was not asked."""
    if event.event not in _ALERTING_EVENTS:
        return None  # no rule reacts to it, so the store is not touched (task start, skips)
    from tasklens import config, rules
    from tasklens.store import get_store

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
    result = _store_alerts(alerts, ruleset, event=event if keep_event else None)
    return None if result is None or not keep_event else result.first_report


#: Events the alert rules react to; "running" and "skipped" never touch the store.
_ALERTING_EVENTS = frozenset({"success", "failed", "up_for_retry", "killed"})
#: Reserved key of ``raise_custom_alert(data=...)``: explicit channel names (the notifiers use it) instead of routes.
NOTIFY_CHANNELS_KEY = "_tasklens_channels"


def _median_duration_rules(ruleset: Any) -> list[Any]:
    return [rule for rule in ruleset.rules_of_type("duration") if rule.enabled and rule.median_factor]


def _may_exceed_median(rule: Any, event: TaskEvent) -> bool:
    """Whether ``rule`` could fire on ``event`` at all: shorter than its min_duration, the median is irrelevant."""
    from tasklens import rules

    duration = event.duration_s
    return duration is not None and duration >= rule.min_duration_s and rules.rule_condition(rule)(event)


def _store_alerts(alerts: Any, ruleset: Any, *, event: TaskEvent | None = None,
                  deliveries_for: Callable[[Any], Any] | None = None) -> Any:
    """Route ``alerts`` (muted routes dropped) and record them, with ``event``, in one store transaction."""
    from datetime import datetime, timezone

    from tasklens import config, routing
    from tasklens.alerts import AlertKind
    from tasklens.store import get_store

    if not alerts and event is None:
        return None
    now = datetime.now(timezone.utc)
    items: list[tuple[Any, Any, bool]] = []
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
    store = get_store()
    result = store.record(items, event=event.to_dict() if event is not None else None)
    budget = config.delivery_budget_s()
    if budget > 0 and result.queued_delivery_ids:
        from tasklens import dispatch

        dispatch.deliver_now(store, result.queued_delivery_ids, budget_s=budget)
    return result


_EVENT_STAGES: tuple[tuple[str, Callable[[TaskEvent], object]], ...] = (
    ("logs.context", _bind_log_context),
    ("logs.stream", _write_event_stream),
    ("metrics", _emit_metrics),
    ("alerts", _raise_alerts),
)


#: Failure reports that may come several times per attempt when they come from outside the task process.
_FAILURE_EVENTS = frozenset({"failed", "up_for_retry", "killed"})


def handle(event: TaskEvent) -> None:
    """Run ``event`` through every stage. Never raises."""
    from tasklens import config

    if not run_stage("config", config.enabled):
        return
    if event.source != "worker" and event.event in _FAILURE_EVENTS:
        _handle_secondhand_failure(event)
        return
    for stage, func in _EVENT_STAGES:
        run_stage(stage, func, event)


def _handle_secondhand_failure(event: TaskEvent) -> None:
    """A failure reported from outside the task process: the scheduler listener, the dag-processor's callback (run
    twice), the reconciler (maybe two at once), the api-server. Several of them report one attempt, so the store
    decides first (one failure outcome per attempt) and only the first report reaches the event stream and the
    metrics. The worker's own report keeps the cheap order above; when the store is unavailable, count anyway."""
    run_stage("logs.context", _bind_log_context, event)
    if run_stage("alerts", _raise_alerts, event) is False:
        return
    run_stage("logs.stream", _write_event_stream, event)
    run_stage("metrics", _emit_metrics, event)


def handle_metric(name: str, value: float, labels: Mapping[str, str], context: TaskEvent | None = None) -> None:
    """A task emitted a custom metric: evaluate the metric threshold rules on it. Never raises."""

    def evaluate() -> None:
        from tasklens import config, rules

        ruleset = config.ruleset()
        if not ruleset.rules_of_type("metric"):
            return  # the common case: no threshold rules, no store access on every metric
        _store_alerts(rules.evaluate_metric(name, value, labels, ruleset, context), ruleset)

    run_stage("alerts.metric", evaluate)


def raise_custom_alert(title: str, severity: str, template: str | None, data: Mapping[str, Any],
                       context: TaskEvent | None = None) -> None:
    """Task code raised an alert itself (``tasklens.alert(...)``). Never raises."""

    def record() -> None:
        from tasklens import config, rules

        ruleset = config.ruleset()
        payload = dict(data)
        channels = payload.pop(NOTIFY_CHANNELS_KEY, None)
        alert = rules.custom_alert(title, severity, template, payload, context, ruleset)
        deliveries_for = _explicit_deliveries(channels, ruleset) if channels else None
        _store_alerts([alert], ruleset, deliveries_for=deliveries_for)

    run_stage("alerts.custom", record)


def _explicit_deliveries(channels: Any, ruleset: Any) -> Callable[[Any], list[Any]]:
    """Deliveries straight to named channels (a notifier's own target), bypassing the routes."""
    from tasklens import routing
    from tasklens.alerts import Delivery

    names = [channels] if isinstance(channels, str) else list(channels)

    def deliveries(alert: Any) -> list[Any]:
        out = []
        for name in names:
            known = ruleset.channels.get(name)
            channel_type = known.type if known is not None else name
            out.append(Delivery(route="notifier", channel=name, channel_type=channel_type,
                                group_key=routing.group_key(alert, "notifier", ("dag_id", "run_id"))))
        return out

    return deliveries

"""Rules: TaskEvents and task metrics in, :class:`~tasklens.alerts.Alert` candidates out. Pure.

The rules file (:mod:`tasklens.ruleset`) is the user interface; this module evaluates it. Every
function takes data and returns data: no store, no network, no clock except the event's own
timestamps, so the same event always gives the same alerts::

    alerts = evaluate_event(event, config.ruleset(), recent_durations_s=store.recent_durations(...))

Conditions are small predicate objects in the tenacity style, combinable with ``&``, ``|`` and
``~`` for programmatic rules (``Rule(condition=...)``)::

    on_event("failed") & after_attempt(2) & ~dag_matches("sandbox_*")
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tasklens import events
from tasklens.alerts import Alert, AlertKind, Severity, fingerprint
from tasklens.events import TaskEvent
from tasklens.exceptions import ConfigError
from tasklens.ruleset import METRIC_OPS, TEMPLATE_NAME, Rule, RuleMatch, Ruleset
from tasklens.text import bounded, format_duration

__all__ = [
    "Condition",
    "after_attempt",
    "always",
    "custom_alert",
    "dag_matches",
    "evaluate_event",
    "evaluate_metric",
    "exception_matches",
    "has_tag",
    "on_event",
    "on_state",
    "operator_matches",
    "owner_matches",
    "rule_condition",
    "task_matches",
]

_MAX_DATA_STRING = 4_000
_MAX_TRACEBACK = 4_000


# --------------------------------------------------------------------------- conditions


@dataclasses.dataclass(frozen=True)
class Condition:
    """A predicate on a :class:`TaskEvent`; ``&``, ``|`` and ``~`` build new conditions."""

    test: Callable[[TaskEvent], bool]
    description: str

    def __call__(self, event: TaskEvent) -> bool:
        return bool(self.test(event))

    def __and__(self, other: Callable[[TaskEvent], bool]) -> Condition:
        right = _as_condition(other)
        return Condition(lambda e: self(e) and right(e), f"({self.description} & {right.description})")

    def __or__(self, other: Callable[[TaskEvent], bool]) -> Condition:
        right = _as_condition(other)
        return Condition(lambda e: self(e) or right(e), f"({self.description} | {right.description})")

    def __invert__(self) -> Condition:
        return Condition(lambda e: not self(e), f"~{self.description}")

    def __repr__(self) -> str:
        return self.description


def _as_condition(value: Callable[[TaskEvent], bool]) -> Condition:
    return value if isinstance(value, Condition) else Condition(value, getattr(value, "__name__", repr(value)))


def _globs(value: str | None, patterns: Iterable[str]) -> bool:
    text = "" if value is None else str(value)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in patterns)


def always() -> Condition:
    """Matches every event."""
    return Condition(lambda e: True, "always()")


def on_event(*kinds: str) -> Condition:
    """The event kind is one of ``kinds`` (``failed``, ``up_for_retry``, ``killed``, ``success``...)."""
    return Condition(lambda e: e.event in kinds, f"on_event{kinds!r}")


#: ``on_state("failed")`` reads like the task states it names; same as :func:`on_event`.
on_state = on_event


def after_attempt(number: int) -> Condition:
    """The attempt's ``try_number`` is at least ``number``."""
    return Condition(lambda e: (e.try_number or 1) >= number, f"after_attempt({number})")


def dag_matches(*patterns: str) -> Condition:
    """The DAG id matches one of the globs."""
    return Condition(lambda e: _globs(e.dag_id, patterns), f"dag_matches{patterns!r}")


def task_matches(*patterns: str) -> Condition:
    """The task id matches one of the globs."""
    return Condition(lambda e: _globs(e.task_id, patterns), f"task_matches{patterns!r}")


def has_tag(*tags: str) -> Condition:
    """The DAG has any of ``tags`` (globs)."""
    return Condition(lambda e: any(_globs(tag, tags) for tag in e.dag_tags), f"has_tag{tags!r}")


def owner_matches(*patterns: str) -> Condition:
    """The task owner matches one of the globs (comma-separated owners are checked one by one)."""

    def test(event: TaskEvent) -> bool:
        owners = [o.strip() for o in (event.owner or "").split(",")] or [""]
        return any(_globs(owner, patterns) for owner in owners)

    return Condition(test, f"owner_matches{patterns!r}")


def operator_matches(*patterns: str) -> Condition:
    """The operator class name matches one of the globs."""
    return Condition(lambda e: _globs(e.operator, patterns), f"operator_matches{patterns!r}")


def exception_matches(*patterns: str) -> Condition:
    """The exception type name matches one of the globs."""
    return Condition(lambda e: _globs(e.exception_type, patterns), f"exception_matches{patterns!r}")


@functools.lru_cache(maxsize=1024)
def _match_condition(match: RuleMatch) -> Condition:
    condition = always()
    if match.dag_id:
        condition &= dag_matches(*match.dag_id)
    if match.task_id:
        condition &= task_matches(*match.task_id)
    if match.tags:
        condition &= has_tag(*match.tags)
    if match.owner:
        condition &= owner_matches(*match.owner)
    if match.operator:
        condition &= operator_matches(*match.operator)
    if match.exception_type:
        condition &= exception_matches(*match.exception_type)
    return condition


@functools.lru_cache(maxsize=1024)
def rule_condition(rule: Rule) -> Condition:
    """Everything a task event must satisfy for ``rule`` to fire (event kind, match, attempt, condition)."""
    condition = on_event(*rule.event_kinds) if rule.event_kinds else always()
    condition &= _match_condition(rule.match)
    if rule.after_attempt:
        condition &= after_attempt(rule.after_attempt)
    if rule.condition is not None:
        condition &= rule.condition
    return condition


# --------------------------------------------------------------------------- helpers


def first_line(text: str | None) -> str:
    """The first non-empty line of ``text`` (exception messages can be long)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _parse_instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_retry_at(next_retry_at: str | None, reference: str | None = None) -> str | None:
    """``"14:05 UTC"`` (with the date when it is not the day of ``reference``)."""
    when = _parse_instant(next_retry_at)
    if when is None:
        return None
    ref = _parse_instant(reference)
    if ref is not None and ref.date() != when.date():
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.strftime("%H:%M UTC")


def _labels(event: TaskEvent | None) -> dict[str, str]:
    if event is None:
        return {}
    labels = {
        "owner": event.owner,
        "operator": event.operator,
        "queue": event.queue,
        "pool": event.pool,
        "hostname": event.hostname,
        "source": event.source,
        "dag_tags": ",".join(event.dag_tags) if event.dag_tags else None,
        "failure_class": event.failure_class,
    }
    return {k: str(v) for k, v in labels.items() if v}


def _bounded(value: Any, depth: int = 0) -> Any:
    """JSON-friendly, bounded copy of task-supplied data (the store serialises it)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, bytes)) or depth >= 4:
        return bounded(value, _MAX_DATA_STRING, "…")
    if isinstance(value, Mapping):
        return {bounded(k, _MAX_DATA_STRING, "…"): _bounded(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_bounded(v, depth + 1) for v in list(value)[:50]]
    return bounded(value, _MAX_DATA_STRING, "…")  # any object, even one whose __str__ raises


def _redacted(value: Any) -> Any:
    return events.redact(value)


def _base_alert(
    rule: Rule,
    event: TaskEvent,
    kind: AlertKind,
    fp: str,
    title: str,
    summary: str,
    data: Mapping[str, Any] | None = None,
    severity: Severity | None = None,
) -> Alert:
    return Alert(
        fingerprint=fp,
        rule=rule.name,
        kind=kind,
        severity=severity or rule.severity,
        title=title,
        summary=summary,
        dag_id=event.dag_id,
        task_id=event.task_id,
        run_id=event.run_id,
        map_index=event.map_index,
        try_number=event.try_number,
        max_tries=event.max_tries,
        exception_type=event.exception_type,
        exception_message=event.exception_message,
        log_url=event.log_url,
        template=rule.template,
        labels=_labels(event),
        data=dict(data or {}),
        occurred_at=event.end_date or event.ts,
    )


def _task_name(event: TaskEvent) -> str:
    name = f"{event.dag_id}.{event.task_id}"
    return name if event.map_index < 0 else f"{name}[{event.map_index}]"


# --------------------------------------------------------------------------- per-type evaluation


def _failed(rule: Rule, event: TaskEvent, _: Ruleset, __: Sequence[float]) -> list[Alert]:
    cause = event.exception_type or "failure"
    detail = first_line(event.exception_message) or event.reason or "no exception reported"
    data: dict[str, Any] = {"reason": event.reason} if event.reason else {}
    if event.traceback:
        data["traceback"] = event.traceback[-_MAX_TRACEBACK:]
    return [
        _base_alert(
            rule,
            event,
            AlertKind.FAILURE,
            fingerprint(event.dag_id, event.task_id, rule.name, event.exception_type),
            f"Task failed: {_task_name(event)}",
            f"{cause}: {detail}",
            data,
        )
    ]


def _retry(rule: Rule, event: TaskEvent, _: Ruleset, __: Sequence[float]) -> list[Alert]:
    retry_number = event.try_number or 1
    total = f"/{event.max_tries}" if event.max_tries else ""
    at = format_retry_at(event.next_retry_at, event.end_date or event.ts)
    when = f" at {at}" if at else ""
    cause = first_line(event.exception_message) or event.reason or "no exception reported"
    summary = f"retry {retry_number}{total}{when} after {event.exception_type or 'failure'}: {cause}"
    data = {"retry_number": retry_number, "retries": event.max_tries, "next_retry_at": event.next_retry_at}
    return [
        _base_alert(
            rule,
            event,
            AlertKind.RETRY,
            fingerprint(event.dag_id, event.task_id, rule.name),
            f"Task retrying: {_task_name(event)}",
            summary,
            {k: v for k, v in data.items() if v is not None},
        )
    ]


def _killed(rule: Rule, event: TaskEvent, _: Ruleset, __: Sequence[float]) -> list[Alert]:
    reason = event.reason or first_line(event.exception_message) or "killed outside Python (no reason reported)"
    # Airflow still retries a killed attempt that has tries left: that is a warning, like any retry.
    will_retry = event.state == "up_for_retry"
    severity = Severity.WARNING if will_retry and rule.severity.rank > Severity.WARNING.rank else None
    title = f"Task killed{' (will retry)' if will_retry else ''}: {_task_name(event)}"
    return [
        _base_alert(
            rule,
            event,
            AlertKind.KILLED,
            fingerprint(event.dag_id, event.task_id, rule.name),
            title,
            f"killed: {reason}",
            {"reason": reason, "will_retry": will_retry},
            severity=severity,
        )
    ]


def _recovered(rule: Rule, event: TaskEvent, ruleset: Ruleset, _: Sequence[float]) -> list[Alert]:
    alerts = []
    for name in rule.resolves:
        resolved = ruleset.rule(name)
        severity = resolved.severity if resolved is not None else rule.severity
        alert = _base_alert(
            rule,
            event,
            AlertKind.RESOLVE,
            # No exception type: the store closes every open alert of this dag/task/rule (see store._resolve).
            fingerprint(event.dag_id, event.task_id, name),
            f"Resolved: {_task_name(event)}",
            f"{event.task_id} succeeded on try {event.try_number}",
            {"resolved_by": rule.name, "resolves_rule": name},
            severity=severity,
        )
        alerts.append(dataclasses.replace(alert, rule=name, exception_type=None, exception_message=None, template=None))
    return alerts


def _duration(rule: Rule, event: TaskEvent, _: Ruleset, history: Sequence[float]) -> list[Alert]:
    duration = event.duration_s
    if duration is None or not math.isfinite(duration) or duration < rule.min_duration_s:
        return []
    reasons: list[str] = []
    data: dict[str, Any] = {"duration_s": round(duration, 3)}
    if rule.max_duration_s is not None and duration > rule.max_duration_s:
        reasons.append(f"limit {format_duration(rule.max_duration_s)}")
        data["max_duration_s"] = rule.max_duration_s
    samples = [float(d) for d in history if d is not None and math.isfinite(float(d)) and float(d) >= 0]
    if rule.median_factor is not None and len(samples) >= rule.min_history:
        median = statistics.median(samples)
        if median > 0 and duration > rule.median_factor * median:
            reasons.append(f"{duration / median:.1f}× its recent median of {format_duration(median)}")
            data.update(median_s=round(median, 3), median_factor=rule.median_factor, history_size=len(samples))
    if not reasons:
        return []
    return [
        _base_alert(
            rule,
            event,
            AlertKind.DURATION,
            fingerprint(event.dag_id, event.task_id, rule.name),
            f"Task ran long: {_task_name(event)}",
            f"ran {format_duration(duration)} ({'; '.join(reasons)})",
            data,
        )
    ]


_EVALUATORS: Mapping[str, Callable[[Rule, TaskEvent, Ruleset, Sequence[float]], list[Alert]]] = {
    "failed": _failed,
    "retry": _retry,
    "killed": _killed,
    "recovered": _recovered,
    "duration": _duration,
}


# --------------------------------------------------------------------------- public API


def evaluate_event(
    event: TaskEvent, ruleset: Ruleset, *, recent_durations_s: Sequence[float] = (), resolves: bool = True
) -> list[Alert]:
    """Alerts (and RESOLVE candidates) the enabled rules raise for ``event``.

    ``recent_durations_s`` are earlier durations of the same task (for ``median_factor``); ``resolves=False`` skips
    the rules that only resolve (a task's own success leaves resolving to the api-server).
    A RESOLVE alert carries the resolved rule as ``rule`` and ``data["resolved_by"]``; the
    store closes matching open alerts and drops it when there are none. Rules with
    ``notify: false`` still produce alerts (stored); routing sends them nowhere.
    """
    alerts: list[Alert] = []
    for rule in ruleset.rules:
        evaluator = _EVALUATORS.get(rule.type)
        if evaluator is None or not rule.enabled or (not resolves and rule.type == "recovered"):
            continue
        if not rule_condition(rule)(event):
            continue
        alerts.extend(evaluator(rule, event, ruleset, recent_durations_s))
    return alerts


def _metric_subject(labels: Mapping[str, str], context: TaskEvent | None) -> TaskEvent:
    if context is not None:
        return context
    return TaskEvent(
        event="metric",
        dag_id=str(labels.get("dag_id") or "unknown"),
        task_id=str(labels.get("task_id") or "unknown"),
        run_id=str(labels.get("run_id") or "unknown"),
        source="metric",
    )


def evaluate_metric(
    name: str, value: float, labels: Mapping[str, str], ruleset: Ruleset, context: TaskEvent | None = None
) -> list[Alert]:
    """Alerts the metric threshold rules raise for one task-emitted metric value.

    A rule with ``resolve_when_ok`` (the default) yields a RESOLVE candidate when the value
    is back on the right side of its threshold. ``dag_id``/``task_id`` come from ``context``
    or, without one, from ``labels``. NaN never fires.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return []
    if math.isnan(number):
        return []
    subject = _metric_subject(labels, context)
    alerts: list[Alert] = []
    for rule in ruleset.rules_of_type("metric"):
        if rule.metric != name or rule.threshold is None or not _match_condition(rule.match)(subject):
            continue
        fp = fingerprint(subject.dag_id, subject.task_id, rule.name)
        metric_labels = {str(k): str(v) for k, v in labels.items()}
        data = {
            "metric": name,
            "value": number,
            "op": rule.op,
            "threshold": rule.threshold,
            "metric_labels": metric_labels,
        }
        if METRIC_OPS[rule.op](number, rule.threshold):
            alert = _base_alert(
                rule,
                subject,
                AlertKind.METRIC,
                fp,
                f"{name} {_number(number)} {rule.op} {_number(rule.threshold)}: {_task_name(subject)}",
                f"{name} = {_number(number)} (threshold {rule.op} {_number(rule.threshold)})",
                data,
            )
        elif rule.resolve_when_ok:
            alert = _base_alert(
                rule,
                subject,
                AlertKind.RESOLVE,
                fp,
                f"Resolved: {name} back to {_number(number)}: {_task_name(subject)}",
                f"{name} = {_number(number)} (threshold {rule.op} {_number(rule.threshold)})",
                {**data, "resolved_by": rule.name, "resolves_rule": rule.name},
            )
        else:
            continue
        if context is None:
            alert = dataclasses.replace(alert, labels=metric_labels, occurred_at=_now_iso())
        else:
            alert = dataclasses.replace(alert, labels={**metric_labels, **alert.labels}, occurred_at=_now_iso())
        alerts.append(alert)
    return alerts


def _now_iso() -> str:
    # A metric has no timestamp of its own; the moment it is evaluated is when it happened.
    return datetime.now(timezone.utc).isoformat()


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def custom_alert(
    title: str,
    severity: str,
    template: str | None,
    data: Mapping[str, Any],
    context: TaskEvent | None,
    ruleset: Ruleset,
) -> Alert:
    """The alert task code raises with ``tasklens.alert(title, severity=..., template=..., **data)``.

    Raises :class:`ConfigError` for an unknown severity or an unsafe template name. The alert
    is always stored; the ``custom`` rule's ``notify``/``enabled`` decide whether it is sent.
    Fingerprint: dag_id + task_id + ``custom`` + title.
    """
    severity_text = str(getattr(severity, "value", severity)).strip().lower()
    if severity_text not in {s.value for s in Severity}:
        raise ConfigError(
            "tasklens.alert()", "severity", f"unknown severity {severity!r}", "use one of: info, warning, critical"
        )
    if template is not None and not TEMPLATE_NAME.match(str(template)):
        raise ConfigError(
            "tasklens.alert()",
            "template",
            f"bad template name {template!r}",
            "use letters, digits, '_', '-' or '.', e.g. ml_model_drift",
        )
    rule = ruleset.rule("custom") or Rule("custom", "custom", Severity.WARNING)
    title_text = str(_redacted(_bounded(str(title)))) or "Custom alert"
    title_text = first_line(title_text) or "Custom alert"
    payload = _redacted(_bounded(dict(data)))
    subject = context or TaskEvent(
        event="custom", dag_id="unknown", task_id="unknown", run_id="unknown", source="custom"
    )
    summary_parts = [f"{k}={_short(v)}" for k, v in list(payload.items())[:6]]
    alert = _base_alert(
        rule,
        subject,
        AlertKind.CUSTOM,
        fingerprint(subject.dag_id, subject.task_id, rule.name, title_text),
        title_text,
        ", ".join(summary_parts) if summary_parts else title_text,
        payload,
        severity=Severity(severity_text),
    )
    # Raised while the task runs: the event's own timestamps are those of its start.
    return dataclasses.replace(
        alert, template=template or rule.template, exception_type=None, exception_message=None, occurred_at=_now_iso()
    )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"

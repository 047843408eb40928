"""Attempts in flight judged against their history: running too long, or stuck waiting. Pure: no I/O, no clock.

One alert per task and rule (mapped instances and retries fold into it), opened by the first attempt past its
limit and resolved once no attempt of that task is past it any more, saying how the attempt ended.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from tasklens.alerts import Alert, AlertKind, Severity, fingerprint
from tasklens.foresight.history import Baseline
from tasklens.ruleset import Rule
from tasklens.text import format_duration

__all__ = ["Attempt", "overrun_alert", "overrun_limit", "resolve_alert", "stuck_alert", "task_name"]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One task attempt in flight, as Airflow's metadata DB has it. ``since`` is when it entered ``state``
    (start_date when running, queued_dttm / scheduled_dttm when waiting)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str
    since: datetime
    operator: str | None = None
    pool: str | None = None
    queue: str | None = None
    hostname: str | None = None


def task_name(dag_id: str, task_id: str, map_index: int = -1) -> str:
    """``dag.task`` (``dag.task[3]`` for a mapped instance)."""
    name = f"{dag_id}.{task_id}"
    return name if map_index < 0 else f"{name}[{map_index}]"


def _alert(rule: Rule, attempt: Attempt, kind: AlertKind, title: str, summary: str, data: dict[str, object],
           now: datetime) -> Alert:
    labels = {k: v for k, v in (("operator", attempt.operator), ("pool", attempt.pool), ("queue", attempt.queue),
                                ("hostname", attempt.hostname), ("source", "api")) if v}
    return Alert(
        fingerprint=fingerprint(attempt.dag_id, attempt.task_id, rule.name),
        rule=rule.name,
        kind=kind,
        severity=rule.severity,
        title=title,
        summary=summary,
        dag_id=attempt.dag_id,
        task_id=attempt.task_id,
        run_id=attempt.run_id,
        map_index=attempt.map_index,
        try_number=attempt.try_number,
        template=rule.template,
        labels=labels,
        data=data,
        occurred_at=now.isoformat(),
    )


def overrun_limit(rule: Rule, history: Baseline | None) -> float | None:
    """How long an attempt may run before ``rule`` alerts: ``max_duration`` when set, else ``factor`` x the
    baseline's high end (never under ``min_duration``); None while the task is learning (too little history)."""
    if rule.max_duration_s is not None:
        return rule.max_duration_s
    if history is None:
        return None
    return max(rule.factor * history.high_s, rule.min_duration_s)


def overrun_alert(rule: Rule, attempt: Attempt, history: Baseline | None, now: datetime) -> Alert | None:
    """The "running too long" alert for ``attempt`` at ``now``, or None while it is within its limit."""
    limit = overrun_limit(rule, history)
    elapsed = (now - attempt.since).total_seconds()
    if limit is None or elapsed <= limit:
        return None
    name = task_name(attempt.dag_id, attempt.task_id, attempt.map_index)
    data: dict[str, object] = {"elapsed_s": round(elapsed, 1), "limit_s": round(limit, 1)}
    if history is not None:
        usual = f"usually {format_duration(history.usual_s)} (p95 {format_duration(history.high_s)})"
        data.update(usual_s=round(history.usual_s, 1), p95_s=round(history.high_s, 1), baseline=history.method,
                    history_size=history.size)
    if rule.max_duration_s is not None:
        data.update(max_duration_s=rule.max_duration_s, baseline="max_duration")
        expected = f"limit {format_duration(rule.max_duration_s)}" + (f"; {usual}" if history is not None else "")
    else:
        expected = usual
    summary = f"{name} running {format_duration(elapsed)}; {expected}"
    return _alert(rule, attempt, AlertKind.OVERRUN, f"Task running long: {name}", summary, data, now)


def stuck_alert(rule: Rule, attempt: Attempt, now: datetime) -> Alert | None:
    """The "stuck in queued / scheduled" alert for a waiting ``attempt``, or None while within the limit."""
    limit = {"queued": rule.max_queued_s, "scheduled": rule.max_scheduled_s}.get(attempt.state)
    waited = (now - attempt.since).total_seconds()
    if limit is None or waited <= limit:
        return None
    name = task_name(attempt.dag_id, attempt.task_id, attempt.map_index)
    summary = f"{name} {attempt.state} for {format_duration(waited)} (limit {format_duration(limit)})"
    data: dict[str, object] = {"waiting_state": attempt.state, "waiting_s": round(waited, 1), "limit_s": limit}
    if attempt.pool:
        data["pool"] = attempt.pool
    return _alert(rule, attempt, AlertKind.STUCK, f"Task stuck {attempt.state}: {name}", summary, data, now)


def resolve_alert(rule_name: str, dag_id: str, task_id: str, outcome: str, now: datetime,
                  details: Mapping[str, object] | None = None) -> Alert:
    """Closes the open ``rule_name`` alert of the task; ``outcome`` says how it ended ("finished after 14m"),
    ``details`` the same as data for the resolve notice's template (state, duration_s, ended_at, waiting_state)."""
    return Alert(
        fingerprint=fingerprint(dag_id, task_id, rule_name),
        rule=rule_name,
        kind=AlertKind.RESOLVE,
        severity=Severity.INFO,
        title=f"Resolved: {task_name(dag_id, task_id)}",
        summary=outcome,
        dag_id=dag_id,
        task_id=task_id,
        data={"resolved_by": f"{rule_name}: {outcome}"[:250], "resolves_rule": rule_name,
              **({"outcome": dict(details)} if details is not None else {})},
        occurred_at=now.isoformat(),
    )

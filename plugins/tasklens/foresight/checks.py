"""One pass of the in-flight checks, run by the api-server's reconciler (one leader across workers).

Reads the attempts in flight from Airflow's metadata DB, judges each against its rules (:mod:`.overrun`, pure),
raises an alert for each task newly past its limit and resolves the alerts of tasks no longer past it, through
the pipeline's normal route / dedup / outbox path. A task's success history is cached for a few minutes: it moves
only when the task succeeds again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from tasklens import config, pipeline, rules
from tasklens.alerts import Alert
from tasklens.events import TaskEvent
from tasklens.foresight import lateness, queries
from tasklens.foresight.deadlines import DeadlineChecks, deadline_rule
from tasklens.foresight.history import Baseline, Sample, baseline
from tasklens.foresight.overrun import Attempt, overrun_alert, overrun_limit, resolve_alert, stuck_alert
from tasklens.ruleset import Rule
from tasklens.text import format_duration

__all__ = ["CheckResult", "InFlightChecks", "duration_outlook", "run_checks"]

log = logging.getLogger(__name__)

#: How long a task's success history is reused before it is read again.
HISTORY_TTL_S = 300.0
#: A learning task's history is read again after this many reconciler intervals.
LEARNING_PASSES = 6
#: Tasks whose history is cached at most (the least recently read go first).
_HISTORY_CACHE_SIZE = 20_000

TaskKey = tuple[str, str]


@dataclasses.dataclass
class CheckResult:
    """What one pass found and did."""

    in_flight: int = 0
    raised: int = 0
    resolved: int = 0
    learning: set[TaskKey] = dataclasses.field(default_factory=set)
    runs: int = 0  # DAG runs in flight with a deadline
    deadline_alerts: int = 0
    learning_runs: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    late: int = 0  # late-run and heartbeat alerts raised or resolved


def _interval_s() -> float:
    try:
        return float(config.reconcile_interval_s())
    except Exception:  # a bad setting is the config check's to report
        return 5.0


def _subject(attempt: Attempt) -> TaskEvent:
    """The attempt as a TaskEvent, so a rule's ``match`` (dag_id, task_id, operator globs) applies as usual."""
    return TaskEvent(event=attempt.state, dag_id=attempt.dag_id, task_id=attempt.task_id, run_id=attempt.run_id,
                     map_index=attempt.map_index, try_number=attempt.try_number, state=attempt.state,
                     operator=attempt.operator, pool=attempt.pool, queue=attempt.queue, hostname=attempt.hostname,
                     source="api")


def _outcome_details(row: Mapping[str, Any], ended: tuple[str | None, float | None, datetime | None],
                     ) -> dict[str, Any]:
    """How the attempt an open alert names ended, as data for the resolve notice (``overrun_resolve.j2``)."""
    state, duration, end = ended
    details: dict[str, Any] = {"state": state, "duration_s": None if duration is None else round(float(duration), 1),
                               "ended_at": None if end is None else end.replace(microsecond=0).isoformat()}
    waiting = (row.get("data") or {}).get("waiting_state")
    if waiting:
        details["waiting_state"] = waiting
    return details


def _outcome(row: Mapping[str, Any], ended: tuple[str | None, float | None, datetime | None], now: datetime) -> str:
    """How the attempt an open alert names ended, in words: "finished after 14m", "failed after 14m"."""
    state, duration, _ = ended
    waiting = (row.get("data") or {}).get("waiting_state")
    if waiting:
        return f"no longer {waiting} (now {state or 'gone'})"
    took = f" after {format_duration(duration)}" if duration is not None else ""
    if state == "success":
        return f"finished{took}"
    if state in ("failed", "up_for_retry", "upstream_failed"):
        return f"failed{took}" + (" (will retry)" if state == "up_for_retry" else "")
    if state == "running":
        return "still running, within its limit again"
    return f"ended ({state})" if state else "ended (the task instance is gone)"


class InFlightChecks:
    """The running-too-long and stuck-waiting checks, with the success histories they read cached across passes."""

    def __init__(self, *, history_ttl_s: float = HISTORY_TTL_S, learning_ttl_s: float | None = None,
                 clock: Any = time.monotonic) -> None:
        self.history_ttl_s = history_ttl_s
        # Re-reading every learning task each pass cost ~100 ms at 30 learning tasks (benchmarks/foresight_scale.py).
        self.learning_ttl_s = learning_ttl_s if learning_ttl_s is not None else LEARNING_PASSES * _interval_s()
        self.clock = clock
        self._history: dict[TaskKey, tuple[float, list[Sample]]] = {}
        self._lock = threading.Lock()
        self.deadlines = DeadlineChecks(clock=clock)

    def history(self, session: Any, dag_id: str, task_id: str, *, at_least: int = 0) -> list[Sample]:
        """The task's recent successes, read at most once per ``history_ttl_s`` once it has ``at_least`` of them,
        else once per ``learning_ttl_s`` (its next success soon ends the learning)."""
        key = (dag_id, task_id)
        now = self.clock()
        with self._lock:
            cached = self._history.get(key)
        if cached is not None:
            ttl = self.history_ttl_s if len(cached[1]) >= at_least else self.learning_ttl_s
            if now - cached[0] < ttl:
                return cached[1]
        samples = queries.success_history(session, dag_id, task_id)
        with self._lock:
            if len(self._history) >= _HISTORY_CACHE_SIZE:
                oldest = min(self._history, key=lambda k: self._history[k][0])
                del self._history[oldest]
            self._history[key] = (now, samples)
        return samples

    def baseline_for(self, session: Any, rule: Rule, attempt: Attempt) -> Baseline | None:
        """The expected duration of ``attempt`` under ``rule`` (None: learning, or ``max_duration`` alone)."""
        samples = self.history(session, attempt.dag_id, attempt.task_id, at_least=rule.min_history)
        return baseline(samples, at=attempt.since, min_history=rule.min_history)

    def run(self, alert_store: Any, now: datetime) -> CheckResult:
        """One pass: raise and resolve. Raises on DB / store errors (the reconciler isolates its passes)."""
        from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

        result = CheckResult()
        ruleset = config.ruleset()
        overrun_rules = ruleset.rules_of_type("overrun")
        stuck_rules = [r for r in ruleset.rules_of_type("stuck") if r.max_queued_s is not None
                       or r.max_scheduled_s is not None]
        deadlines = ruleset.deadlines
        late_rules = [r for r in ruleset.rules_of_type("late") if r.max_delay_s is not None]
        beat_rules = [r for r in ruleset.rules_of_type("heartbeat") if r.max_silence_s is not None]
        if not (overrun_rules or stuck_rules or deadlines or late_rules or beat_rules):
            return result
        task_rules = {rule.name for rule in (*overrun_rules, *stuck_rules)}
        run_rules = {rule.name for rule in (*late_rules, *beat_rules)}
        open_rows = alert_store.open_alerts_of([*task_rules, *run_rules, *(deadline_rule(d) for d in deadlines)])
        with create_session() as session:
            new, resolves = self._task_checks(session, overrun_rules, stuck_rules,
                                              [row for row in open_rows if row["rule"] in task_rules], now, result)
            late = _late_checks(session, late_rules, beat_rules,
                                [row for row in open_rows if row["rule"] in run_rules], now)
            deadline_result = self.deadlines.run(
                session, deadlines, [row for row in open_rows if row["rule"] not in task_rules | run_rules],
                self.history, now)
        result.runs, result.learning_runs = deadline_result.runs, deadline_result.learning
        result.late = len(late)
        pipeline.record_alerts([*new, *resolves, *late, *deadline_result.alerts])
        result.raised, result.resolved = len(new), len(resolves)
        result.deadline_alerts = len(deadline_result.alerts)
        return result

    def _task_checks(self, session: Any, overrun_rules: Sequence[Rule], stuck_rules: Sequence[Rule],
                     open_rows: Sequence[Mapping[str, Any]], now: datetime,
                     result: CheckResult) -> tuple[list[Alert], list[Alert]]:
        """Running too long and stuck waiting: (new alerts, resolves)."""
        past_limit: dict[tuple[str, str, str], Alert] = {}
        attempts = queries.attempts_in_flight(session, waiting=bool(stuck_rules)) if (
            overrun_rules or stuck_rules or open_rows) else []
        result.in_flight = len(attempts)
        for attempt in attempts:
            subject = _subject(attempt)
            for rule in overrun_rules if attempt.state == "running" else stuck_rules:
                key = (rule.name, attempt.dag_id, attempt.task_id)
                if key in past_limit or not rules.rule_condition(rule)(subject):
                    continue
                if rule.type == "overrun":
                    history = None if rule.max_duration_s is not None else self.baseline_for(session, rule, attempt)
                    if history is None and rule.max_duration_s is None:
                        result.learning.add((attempt.dag_id, attempt.task_id))
                    alert = overrun_alert(rule, attempt, history, now)
                else:
                    alert = stuck_alert(rule, attempt, now)
                if alert is not None:
                    past_limit[key] = alert
        by_key = {(row["rule"], row["dag_id"], row["task_id"]): row for row in open_rows}
        new = [alert for key, alert in past_limit.items() if key not in by_key]
        resolves = []
        for (rule_name, dag_id, task_id), row in by_key.items():
            if (rule_name, dag_id, task_id) in past_limit:
                continue
            ended = queries.attempt_end(session, dag_id, task_id, row["run_id"], int(row["map_index"]),
                                        int(row["try_number"] or 1))
            resolves.append(resolve_alert(rule_name, dag_id, task_id, _outcome(row, ended, now), now,
                                          _outcome_details(row, ended)))
        return new, resolves


def _late_checks(session: Any, late_rules: Sequence[Rule], beat_rules: Sequence[Rule],
                 open_rows: Sequence[Mapping[str, Any]], now: datetime) -> list[Alert]:
    """Late runs and silent components: new alerts and resolves."""
    firing: dict[tuple[str, str, str | None], Alert] = {}
    if late_rules:
        due_before = now - timedelta(seconds=min(r.max_delay_s or 0.0 for r in late_rules))
        late = [(row.dag_id, row.run_id, row.run_after) for row in queries.unstarted_runs(session, due_before)]
        late += [(row.dag_id, None, row.next_dagrun_create_after) for row in queries.overdue_dags(session, due_before)]
        for dag_id, run_id, due in late:
            subject = TaskEvent(event="late", dag_id=dag_id, task_id="", run_id=run_id or "", source="api")
            rule = next((r for r in late_rules if rules.rule_condition(r)(subject)), None)
            if rule is None or (rule.name, dag_id, None) in firing or due is None:
                continue
            alert = lateness.late_alert(rule, dag_id, run_id, _utc(due), now)
            if alert is not None:
                firing[(rule.name, dag_id, None)] = alert
    if beat_rules:
        for row in queries.component_heartbeats(session, list(lateness.COMPONENTS)):
            for rule in beat_rules:
                if row.latest_heartbeat is None:
                    continue
                alert = lateness.heartbeat_alert(rule, row.job_type, row.hostname, _utc(row.latest_heartbeat), now)
                if alert is not None:
                    firing[(rule.name, lateness.COMPONENT_DAG_ID, row.job_type)] = alert
    by_key = {(row["rule"], row["dag_id"], row["task_id"]): row for row in open_rows}
    alerts = [alert for key, alert in firing.items() if key not in by_key]
    for (rule_name, dag_id, task_id), row in by_key.items():
        if (rule_name, dag_id, task_id) in firing:
            continue
        if task_id:
            alerts.append(lateness.resolve_alert(rule_name, dag_id, task_id, "heartbeating again", now))
            continue
        outcome, details = _late_outcome(session, row)
        alerts.append(lateness.resolve_alert(rule_name, dag_id, task_id, outcome, now, details))
    return alerts


def _late_outcome(session: Any, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """How a late run stopped being late, in words and as data for the resolve notice (``late_resolve.j2``)."""
    run_id = row.get("run_id")
    if not run_id:
        return "runs are created again", {"created": True}
    started = queries.run_first_start(session, row["dag_id"], run_id)
    started = None if started is None else started.astimezone(timezone.utc)
    if started is None:
        return "no run is late any more", {}
    details: dict[str, Any] = {"started_at": started.replace(microsecond=0).isoformat(), "delay_s": None}
    outcome = f"run {run_id} started at {started.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    due = (row.get("data") or {}).get("due_at")
    try:
        delay = (started - _utc(datetime.fromisoformat(str(due)))).total_seconds() if due else None
    except ValueError:
        delay = None
    if delay is not None:
        details["delay_s"] = round(max(delay, 0.0), 1)
        outcome += f", {format_duration(max(delay, 0.0))} after it was due"
    return outcome, details


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


_checks = InFlightChecks()


def run_checks(alert_store: Any, now: datetime) -> CheckResult:
    """One pass of the in-flight checks with this process's history cache (the reconciler calls this)."""
    return _checks.run(alert_store, now)


def duration_outlook(dag_id: str, task_id: str, *, at: datetime | None = None) -> dict[str, Any] | None:
    """What the running-too-long check expects of the task (the UI's task tab): ``{"status": "learning",
    "samples": 2, "needed": 5}``, or ``{"status": "watching", "usual_s", "p95_s", "limit_s", "baseline",
    "samples"}``; None when no enabled overrun rule covers the task. Reads the metadata DB (api-server only)."""
    from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    subject = TaskEvent(event="running", dag_id=dag_id, task_id=task_id, run_id="", source="api")
    rule = next((r for r in config.ruleset().rules_of_type("overrun") if rules.rule_condition(r)(subject)), None)
    if rule is None:
        return None
    with create_session() as session:
        samples = queries.success_history(session, dag_id, task_id)
    history = baseline(samples, at=at, min_history=rule.min_history)
    limit = overrun_limit(rule, history)
    if history is None:
        return {"status": "learning" if limit is None else "watching", "samples": len(samples),
                "needed": rule.min_history, "limit_s": limit, "rule": rule.name}
    return {"status": "watching", "usual_s": history.usual_s, "p95_s": history.high_s, "limit_s": limit,
            "baseline": history.method, "samples": history.size, "rule": rule.name}

"""Deadline forecasts of in-flight DAG runs, one pass at a time (the reconciler calls it, as the task checks).

For each running DAG run a ``deadlines:`` entry matches (DAG id glob or tag): its deadline (``by:`` a time of day,
``within:`` after the run start or data interval end), its forecast finish (:mod:`.forecast`: the DAG's structure
from the serialized DAG, each remaining task's history), and then

* the p90 finish past the deadline, before the deadline: a "deadline at risk" alert (updated when the forecast
  moves by more than ``update_after_move`` or its chance to miss reaches 50 %). Under 50 % it is a heads-up ("may
  miss 06:00: 15 % chance"), at warning severity at most; from 50 % it says "forecast to miss", with the
  deadline's own severity (a page, when it is critical);
* the deadline passed with the run still in flight: a "missed" alert;
* the run ended: its deadline alerts resolve, saying whether it made it.

A run whose remaining tasks have too little history is "learning": no forecast, no alert.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tasklens.alerts import Alert, AlertKind, Severity, fingerprint
from tasklens.deadlines import Deadline
from tasklens.foresight import queries
from tasklens.foresight.forecast import DONE_STATES, Forecast, TaskProgress, forecast_finish
from tasklens.foresight.history import Sample
from tasklens.text import format_duration

__all__ = ["DeadlineChecks", "DeadlineResult", "deadline_rule", "matching_deadline", "progress_of"]

#: How long a DAG's structure (from its serialized DAG) is reused before it is read again.
STRUCTURE_TTL_S = 300.0
#: A forecast whose chance to miss reaches this is sent at once as an update (a miss is now likely), with the
#: deadline's own severity; below it, a forecast is at most a warning.
LIKELY_MISS = 0.5
_PROGRESS_ORDER = ("running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred", None)


def deadline_rule(deadline: Deadline) -> str:
    """The alert rule name of a deadline (routes may match it: ``rule: deadline:nightly_ml``)."""
    return f"deadline:{deadline.name}"


def matching_deadline(deadlines: Sequence[Deadline], dag_id: str, tags: Sequence[str]) -> Deadline | None:
    """The first deadline whose ``match`` takes the DAG (every given field must match)."""
    for deadline in deadlines:
        if deadline.dag_id and not any(fnmatch.fnmatchcase(dag_id, p) for p in deadline.dag_id):
            continue
        if deadline.tags and not set(deadline.tags) & set(tags):
            continue
        return deadline
    return None


def progress_of(rows: Sequence[Any], now: datetime) -> dict[str, TaskProgress]:
    """Each task's progress in the run; mapped instances fold into the least advanced one."""
    by_task: dict[str, list[Any]] = {}
    for row in rows:
        by_task.setdefault(row.task_id, []).append(row)
    progress = {}
    for task_id, instances in by_task.items():
        open_ones = [r for r in instances if r.state not in DONE_STATES]
        if not open_ones:
            progress[task_id] = TaskProgress("success")
            continue
        row = min(open_ones, key=lambda r: _PROGRESS_ORDER.index(r.state) if r.state in _PROGRESS_ORDER else 99)
        since = row.start_date if row.state == "running" else row.queued_dttm if row.state == "queued" else None
        elapsed = (now - _aware(since)).total_seconds() if since is not None else 0.0
        progress[task_id] = TaskProgress(None if row.state not in ("running", "queued") else row.state, elapsed)
    return progress


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _clock(at: datetime, zone: str) -> str:
    return at.astimezone(timezone.utc).strftime("%H:%M UTC") if zone.upper() == "UTC" else at.strftime("%H:%M")


@dataclasses.dataclass
class DeadlineResult:
    """What one pass found and did."""

    runs: int = 0
    alerts: list[Alert] = dataclasses.field(default_factory=list)
    learning: set[tuple[str, str]] = dataclasses.field(default_factory=set)


class DeadlineChecks:
    """Forecasts against deadlines, with each DAG's structure cached across passes."""

    def __init__(self, *, structure_ttl_s: float = STRUCTURE_TTL_S, clock: Any = time.monotonic) -> None:
        self.structure_ttl_s = structure_ttl_s
        self.clock = clock
        self._structures: dict[str, tuple[float, dict[str, tuple[str, ...]] | None]] = {}
        self._lock = threading.Lock()

    def structure(self, session: Any, dag_id: str) -> dict[str, tuple[str, ...]] | None:
        now = self.clock()
        with self._lock:
            cached = self._structures.get(dag_id)
        if cached is not None and now - cached[0] < self.structure_ttl_s:
            return cached[1]
        upstream = queries.dag_structure(session, dag_id)
        with self._lock:
            self._structures[dag_id] = (now, upstream)
        return upstream

    def run(self, session: Any, deadlines: Sequence[Deadline], open_rows: Sequence[Mapping[str, Any]],
            history: Any, now: datetime) -> DeadlineResult:
        """Alerts to record for this pass: new and moved forecasts, misses, and resolves of ended runs.

        ``history(session, dag_id, task_id, at_least=n)`` returns a task's success samples (cached by the caller);
        ``open_rows`` are the store's open alerts of the deadline rules."""
        result = DeadlineResult()
        if not deadlines:
            return result
        runs = queries.runs_in_flight(session)
        tags = queries.dag_tags(session, sorted({r.dag_id for r in runs})) if any(d.tags for d in deadlines) else {}
        open_by_run: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for row in open_rows:
            open_by_run.setdefault((row["dag_id"], row["run_id"]), []).append(row)
        in_flight: set[tuple[str, str]] = set()
        for run in runs:
            deadline = matching_deadline(deadlines, run.dag_id, tags.get(run.dag_id, ()))
            if deadline is None:
                continue
            in_flight.add((run.dag_id, run.run_id))
            due = deadline.due_at(run_after=_maybe(run.run_after), start=_maybe(run.start_date),
                                  data_interval_end=_maybe(run.data_interval_end))
            if due is None:
                continue
            result.runs += 1
            existing = {row["data"].get("status"): row for row in open_by_run.get((run.dag_id, run.run_id), ())
                        if isinstance(row.get("data"), Mapping)}
            if now >= due:
                if "missed" not in existing:
                    result.alerts.append(self._missed(deadline, run, due, now))
                continue
            forecast = self._forecast(session, deadline, run, history, now)
            if forecast is None:
                result.learning.add((run.dag_id, run.run_id))
                continue
            finish = now + timedelta(seconds=forecast.finish_s)
            # Rounded once, so the message, the stored miss_chance and the severity say the same thing.
            chance = round(forecast.chance_later_than((due - now).total_seconds()), 2)
            previous = existing.get("forecast")
            if finish <= due and previous is None:
                continue
            if previous is not None:
                before = _parse(previous["data"].get("forecast_finish_at"))
                moved = before is None or abs((finish - before).total_seconds()) >= deadline.update_after_move_s
                if not moved and not _became_likely(previous["data"].get("miss_chance"), chance):
                    continue
            sequence = int(previous["try_number"] or 1) + 1 if previous is not None else 1
            result.alerts.append(self._at_risk(deadline, run, due, finish, forecast, chance, sequence, now))
        for (dag_id, run_id), rows in open_by_run.items():
            if (dag_id, run_id) in in_flight:
                continue
            state, ended = queries.run_end(session, dag_id, run_id)
            due = _parse(rows[0]["data"].get("due_at")) if isinstance(rows[0].get("data"), Mapping) else None
            for rule in sorted({row["rule"] for row in rows}):
                result.alerts.append(_resolve(rule, dag_id, run_id, _ending(state, ended, due), now,
                                              _ending_details(state, ended, due)))
        return result

    def _forecast(self, session: Any, deadline: Deadline, run: Any, history: Any, now: datetime) -> Forecast | None:
        upstream = self.structure(session, run.dag_id)
        if not upstream:
            return None
        progress = progress_of(queries.run_tasks(session, run.dag_id, run.run_id), now)
        samples: dict[str, Sequence[Sample]] = {}
        for task_id in upstream:
            if progress.get(task_id, TaskProgress(None)).state not in DONE_STATES:
                samples[task_id] = history(session, run.dag_id, task_id, at_least=deadline.min_history)
        forecast = forecast_finish(upstream, progress, samples, q=deadline.quantile, min_history=deadline.min_history,
                                   seed=f"{run.dag_id}/{run.run_id}")
        return None if forecast.learning else forecast

    @staticmethod
    def _alert(deadline: Deadline, run: Any, status: str, summary: str, data: dict[str, Any], sequence: int,
               now: datetime, severity: Severity | None = None) -> Alert:
        rule = deadline_rule(deadline)
        return Alert(
            fingerprint=fingerprint(run.dag_id, rule, run.run_id, status),
            rule=rule,
            kind=AlertKind.DEADLINE,
            severity=severity or deadline.severity,
            title=f"{'Deadline missed' if status == 'missed' else 'Deadline at risk'}: {run.dag_id}",
            summary=summary,
            dag_id=run.dag_id,
            run_id=run.run_id,
            try_number=sequence,  # one occurrence per forecast update (the store folds them into one alert)
            labels={"source": "api"},
            data={"status": status, "deadline": deadline.label, **data},
            occurred_at=now.isoformat(),
        )

    def _at_risk(self, deadline: Deadline, run: Any, due: datetime, finish: datetime, forecast: Forecast,
                 chance: float, sequence: int, now: datetime) -> Alert:
        late = (finish - due).total_seconds()
        p = f"p{round(deadline.quantile * 100)}"
        when = _clock(due.astimezone(_zone_of(deadline)), deadline.zone) if deadline.by else deadline.label
        path = " → ".join(forecast.critical_path)
        percent = round(chance * 100)
        odds = f"({p}; {percent} % chance to miss); critical path: {path}"
        if late > 0 and chance < LIKELY_MISS:  # a close call reads as one: a heads-up, not a prediction
            summary = (f"may miss {when}: {percent} % chance ({p} finish ~{format_duration(late)} after it); "
                       f"critical path: {path}")
        elif late > 0:
            summary = f"forecast to miss {when} by ~{format_duration(late)} {odds}"
        else:
            summary = f"now forecast to make {when} with {format_duration(-late)} to spare {odds}"
        # Milliseconds, not tenths: the first pass past the deadline can be late by less than 0.05 s, which a
        # coarser rounding would report as 0 late.
        data = {"due_at": due.isoformat(), "forecast_finish_at": finish.isoformat(), "late_by_s": round(late, 3),
                "quantile": deadline.quantile, "miss_chance": chance,
                "critical_path": list(forecast.critical_path),
                "median_finish_at": (now + timedelta(seconds=forecast.median_s)).isoformat(),
                # A later forecast is only made when it moved by update_after_move or a miss became likely:
                # sent at once, not held to the route's repeat_interval.
                "notify_update": sequence > 1}
        # A 1-in-10 close call must not page anyone at 02:00: the first warning comes at about that chance
        # (benchmarks/forecast.py, 40 held-out seeds: precision 0.86 at p90, 0.91 from 50 %).
        severity = deadline.severity if chance >= LIKELY_MISS else min(deadline.severity, Severity.WARNING,
                                                                        key=lambda s: s.rank)
        return self._alert(deadline, run, "forecast", summary, data, sequence, now, severity)

    def _missed(self, deadline: Deadline, run: Any, due: datetime, now: datetime) -> Alert:
        when = _clock(due.astimezone(_zone_of(deadline)), deadline.zone) if deadline.by else deadline.label
        summary = f"missed {when}: still running {format_duration((now - due).total_seconds())} after its deadline"
        return self._alert(deadline, run, "missed", summary, {"due_at": due.isoformat()}, 1, now)


def _became_likely(before: Any, chance: float) -> bool:
    """The chance to miss crossed 50 % since the last message: worth one at once, however little the finish moved
    (the first warning comes at about 1 in 10; benchmarks/forecast.py counts the days that reach 50 %)."""
    return chance >= LIKELY_MISS > (before or 0.0)  # before: None on an alert raised before miss_chance existed


def _zone_of(deadline: Deadline) -> Any:
    return timezone.utc if deadline.zone.upper() == "UTC" else ZoneInfo(deadline.zone)


def _maybe(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return _aware(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


def _ending(state: str | None, ended: datetime | None, due: datetime | None) -> str:
    """How a run with deadline alerts ended, in words."""
    if state is None:
        return "the run is gone"
    if ended is None or due is None:
        return f"the run ended ({state})"
    margin = format_duration(abs((due - ended).total_seconds()))
    verb = "finished" if state == "success" else f"ended {state}"
    return f"{verb} {margin} {'before' if ended <= due else 'after'} its deadline"


def _ending_details(state: str | None, ended: datetime | None, due: datetime | None) -> dict[str, Any] | None:
    """How a run with deadline alerts ended, as data for the resolve notice (``deadline_resolve.j2``)."""
    if state is None:
        return None
    return {"state": state, "ended_at": None if ended is None else ended.replace(microsecond=0).isoformat(),
            "due_at": None if due is None else due.isoformat(),
            "margin_s": None if ended is None or due is None else round((due - ended).total_seconds(), 1)}


def _resolve(rule: str, dag_id: str, run_id: str, outcome: str, now: datetime,
             details: Mapping[str, Any] | None = None) -> Alert:
    """Closes the run's open alerts of ``rule`` (forecast and missed), and only that run's: overlapping runs of
    the DAG each have their own."""
    return Alert(
        fingerprint=fingerprint(dag_id, rule, run_id, "forecast"),
        rule=rule,
        kind=AlertKind.RESOLVE,
        severity=Severity.INFO,
        title=f"Resolved: {dag_id}",
        summary=outcome,
        dag_id=dag_id,
        run_id=run_id,
        data={"resolved_by": f"{rule}: {outcome}"[:250], "resolves_rule": rule, "resolve_scope": "run",
              **({"outcome": dict(details)} if details is not None else {})},
        occurred_at=now.isoformat(),
    )

"""Runs that start late and Airflow components that stop heartbeating. Pure: rows in, alerts out.

* a scheduled DAG run due ``max_delay`` ago that has not started (no task instance started: a stopped scheduler, a
  full pool, ``max_active_runs``), or that was never created (the DAG's ``next_dagrun_create_after`` passed: a
  scheduler or dag-processor down);
* a component whose newest ``job`` heartbeat is older than ``max_silence``.

One alert per DAG (per component), resolved once it is no longer late (heartbeating again).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from tasklens.alerts import Alert, AlertKind, Severity, fingerprint
from tasklens.ruleset import Rule
from tasklens.text import format_duration

__all__ = ["COMPONENTS", "COMPONENT_DAG_ID", "heartbeat_alert", "late_alert", "resolve_alert"]

#: The dag_id of component alerts (they belong to no DAG), as the config check's alerts.
COMPONENT_DAG_ID = "tasklens"
#: Airflow 3.3 job types and what on-call calls them.
COMPONENTS = {"SchedulerJob": "scheduler", "TriggererJob": "triggerer", "DagProcessorJob": "dag-processor"}


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def late_alert(rule: Rule, dag_id: str, run_id: str | None, due: datetime, now: datetime) -> Alert | None:
    """A run due at ``due`` that has not started (``run_id``), or was never created (``run_id`` None)."""
    delay = (now - due).total_seconds()
    if rule.max_delay_s is None or delay <= rule.max_delay_s:
        return None
    what = f"run {run_id} has not started" if run_id else "no run has been created"
    summary = (f"{dag_id}: {what} {format_duration(delay)} after it was due at {_clock(due)} "
               f"(limit {format_duration(rule.max_delay_s)})")
    return Alert(
        fingerprint=fingerprint(dag_id, rule.name), rule=rule.name, kind=AlertKind.LATE, severity=rule.severity,
        title=f"Run late: {dag_id}", summary=summary, dag_id=dag_id, run_id=run_id, template=rule.template,
        labels={"source": "api"},
        data={"due_at": due.isoformat(), "delay_s": round(delay, 1), "limit_s": rule.max_delay_s,
              "created": run_id is not None},
        occurred_at=now.isoformat(),
    )


def heartbeat_alert(rule: Rule, job_type: str, hostname: str | None, last: datetime, now: datetime) -> Alert | None:
    """The component of ``job_type`` last heartbeated at ``last``: an alert past ``max_silence``."""
    silent = (now - last).total_seconds()
    if rule.max_silence_s is None or silent <= rule.max_silence_s:
        return None
    component = COMPONENTS.get(job_type, job_type)
    where = f" on {hostname}" if hostname else ""
    summary = (f"the {component}{where} last heartbeated {format_duration(silent)} ago, at {_clock(last)} "
               f"(limit {format_duration(rule.max_silence_s)}): is it running?")
    return Alert(
        fingerprint=fingerprint(COMPONENT_DAG_ID, job_type, rule.name), rule=rule.name, kind=AlertKind.HEARTBEAT,
        severity=rule.severity, title=f"Airflow {component} silent", summary=summary, dag_id=COMPONENT_DAG_ID,
        task_id=job_type, template=rule.template, labels={"source": "api"},
        data={"component": component, "hostname": hostname, "last_heartbeat": last.isoformat(),
              "silent_s": round(silent, 1), "limit_s": rule.max_silence_s},
        occurred_at=now.isoformat(),
    )


def resolve_alert(rule_name: str, dag_id: str, task_id: str | None, outcome: str, now: datetime,
                  details: Mapping[str, object] | None = None) -> Alert:
    """Closes the open late / heartbeat alert of the DAG (component); ``details``: how it ended, as data for the
    resolve notice's template (a late run: started_at, delay_s)."""
    parts = (dag_id, rule_name) if task_id is None else (dag_id, task_id, rule_name)
    return Alert(
        fingerprint=fingerprint(*parts), rule=rule_name, kind=AlertKind.RESOLVE, severity=Severity.INFO,
        title=f"Resolved: {dag_id if task_id is None else COMPONENTS.get(task_id, task_id)}", summary=outcome,
        dag_id=dag_id, task_id=task_id, data={"resolved_by": f"{rule_name}: {outcome}"[:250],
                                              "resolves_rule": rule_name,
                                              **({"outcome": dict(details)} if details is not None else {})},
        occurred_at=now.isoformat(),
    )

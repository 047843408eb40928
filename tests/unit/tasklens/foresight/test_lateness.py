"""Late runs and silent Airflow components."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tasklens.alerts import AlertKind
from tasklens.foresight.lateness import heartbeat_alert, late_alert, resolve_alert
from tasklens.ruleset import default_ruleset

NOW = datetime(2026, 11, 27, 6, 42, tzinfo=timezone.utc)
LATE = default_ruleset().rule("dag_late")
HEARTBEAT = default_ruleset().rule("component_heartbeat")


def test_a_run_not_started_past_max_delay_is_late():
    """Due 06:00, not started at 06:42 (limit 30m): one late alert per DAG naming the run."""
    alert = late_alert(LATE, "nightly", "scheduled__2026-11-27T06:00", NOW - timedelta(minutes=42), NOW)
    assert alert is not None and alert.kind == AlertKind.LATE and alert.data["created"] is True
    assert alert.summary.startswith("nightly: run scheduled__2026-11-27T06:00 has not started 42m after it was due")
    assert late_alert(LATE, "nightly", None, NOW - timedelta(minutes=20), NOW) is None


def test_a_run_never_created_is_late_too():
    """No run at all (the scheduler is down): the DAG's next run is overdue."""
    alert = late_alert(LATE, "nightly", None, NOW - timedelta(hours=2), NOW)
    assert alert is not None and "no run has been created 2h after it was due" in alert.summary
    assert alert.fingerprint == late_alert(LATE, "nightly", "r", NOW - timedelta(hours=2), NOW).fingerprint


def test_a_silent_component_alerts_and_resolves():
    """The scheduler's newest heartbeat is 5 min old (limit 3m): critical; a resolve closes the same alert."""
    alert = heartbeat_alert(HEARTBEAT, "SchedulerJob", "host-1", NOW - timedelta(minutes=5), NOW)
    assert alert is not None and alert.kind == AlertKind.HEARTBEAT and alert.severity.value == "critical"
    assert alert.title == "Airflow scheduler silent" and "on host-1 last heartbeated 5m ago" in alert.summary
    assert heartbeat_alert(HEARTBEAT, "SchedulerJob", None, NOW - timedelta(seconds=30), NOW) is None
    resolve = resolve_alert("component_heartbeat", "tasklens", "SchedulerJob", "heartbeating again", NOW)
    assert resolve.fingerprint == alert.fingerprint and resolve.kind == AlertKind.RESOLVE

"""Attempts in flight against their limits: running too long, stuck waiting, resolve wording."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from tasklens.alerts import AlertKind
from tasklens.foresight.checks import _outcome
from tasklens.foresight.history import Baseline
from tasklens.foresight.overrun import Attempt, overrun_alert, resolve_alert, stuck_alert
from tasklens.ruleset import default_ruleset

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
RULES = default_ruleset()
OVERRUN = RULES.rule("task_overrun")
STUCK = RULES.rule("task_stuck")
USUAL = Baseline(usual_s=12 * 60, high_s=15 * 60, size=30, method="recent")


def _attempt(minutes: float, state: str = "running", **changes) -> Attempt:
    attempt = Attempt("lakehouse_ml", "train", "scheduled__1", -1, 1, state, NOW - timedelta(minutes=minutes))
    return dataclasses.replace(attempt, **changes)


def test_running_past_factor_times_p95_alerts_with_its_usual_duration():
    """47 min against usually 12 min (p95 15 min): over 2x p95, one overrun alert saying so."""
    alert = overrun_alert(OVERRUN, _attempt(47), USUAL, NOW)
    assert alert is not None and alert.kind == AlertKind.OVERRUN and alert.rule == "task_overrun"
    assert alert.summary == "lakehouse_ml.train running 47m; usually 12m (p95 15m)"
    assert alert.data["p95_s"] == 900 and alert.data["limit_s"] == 1800


def test_within_its_limit_or_learning_no_alert():
    """29 min is under 2x p95; with no baseline (learning) nothing alerts however long it runs."""
    assert overrun_alert(OVERRUN, _attempt(29), USUAL, NOW) is None
    assert overrun_alert(OVERRUN, _attempt(600), None, NOW) is None


def test_min_duration_floors_the_limit_for_short_tasks():
    """A 10 s task running 4 min is not flagged: min_duration (5 min) is the floor."""
    short = Baseline(usual_s=8, high_s=10, size=30, method="recent")
    assert overrun_alert(OVERRUN, _attempt(4), short, NOW) is None
    assert overrun_alert(OVERRUN, _attempt(6), short, NOW) is not None


def test_max_duration_overrides_the_history():
    """A configured max_duration alerts without history and ignores factor x p95."""
    fixed = dataclasses.replace(OVERRUN, max_duration_s=20 * 60)
    alert = overrun_alert(fixed, _attempt(21), None, NOW)
    assert alert is not None and alert.summary == "lakehouse_ml.train running 21m; limit 20m"
    assert overrun_alert(fixed, _attempt(19), USUAL, NOW) is None


def test_mapped_instances_and_retries_share_one_alert_per_task():
    """The fingerprint is the task and rule: map index and try fold into one alert."""
    one = overrun_alert(OVERRUN, _attempt(47, map_index=3), USUAL, NOW)
    other = overrun_alert(OVERRUN, _attempt(50, map_index=7, try_number=2), USUAL, NOW)
    assert one is not None and other is not None and one.fingerprint == other.fingerprint
    assert "train[3]" in one.summary


def test_stuck_in_queued_or_scheduled_past_the_limit():
    """Queued 42 min against a 30 min limit alerts; scheduled 10 min does not."""
    alert = stuck_alert(STUCK, _attempt(42, "queued", pool="etl"), NOW)
    assert alert is not None and alert.kind == AlertKind.STUCK
    assert alert.summary == "lakehouse_ml.train queued for 42m (limit 30m)" and alert.data["pool"] == "etl"
    assert stuck_alert(STUCK, _attempt(10, "scheduled"), NOW) is None
    assert stuck_alert(dataclasses.replace(STUCK, max_queued_s=None), _attempt(42, "queued"), NOW) is None


def test_resolve_says_how_the_attempt_ended():
    """The resolve closes the task's overrun alert and says finished or failed, with the attempt's duration."""
    opened = overrun_alert(OVERRUN, _attempt(47), USUAL, NOW)
    row = {"data": opened.data}
    assert _outcome(row, ("success", 3120.0, NOW), NOW) == "finished after 52m"
    assert _outcome(row, ("failed", 3120.0, NOW), NOW) == "failed after 52m"
    waiting = {"data": {"waiting_state": "queued"}}
    assert _outcome(waiting, ("running", None, None), NOW) == "no longer queued (now running)"
    resolve = resolve_alert("task_overrun", "lakehouse_ml", "train", "finished after 52m", NOW)
    assert resolve.kind == AlertKind.RESOLVE and resolve.fingerprint == opened.fingerprint
    assert resolve.data["resolved_by"] == "task_overrun: finished after 52m"


def test_a_learning_tasks_history_is_read_again_sooner(monkeypatch):
    """The history cache keeps a task's successes for minutes, but a learning one's (too few) only for
    learning_ttl_s: its next success ends the learning within seconds, not when the cache expires."""
    from tasklens.foresight import checks, queries
    from tasklens.foresight.history import Sample

    reads = []
    history = [Sample(NOW, 60.0)]
    monkeypatch.setattr(queries, "success_history", lambda session, dag_id, task_id: reads.append(1) or list(history))
    clock = [0.0]
    cache = checks.InFlightChecks(history_ttl_s=300, learning_ttl_s=30, clock=lambda: clock[0])
    assert len(cache.history(None, "d", "t", at_least=3)) == 1
    history.extend([Sample(NOW, 61.0), Sample(NOW, 62.0)])
    clock[0] = 10.0
    assert len(cache.history(None, "d", "t", at_least=3)) == 1  # learning, cached for 30 s
    clock[0] = 31.0
    assert len(cache.history(None, "d", "t", at_least=3)) == 3  # read again: learning is over
    clock[0] = 200.0
    assert len(cache.history(None, "d", "t", at_least=3)) == 3
    assert len(reads) == 2  # the last call is served from the (5 min) cache

"""Resolve notices of the foresight alerts say what happened, and a deadline resolve closes only its own run's.

The alerts go through a real tasklens store (SQLite) and come back as the snapshots a channel renders; the
deadline pass runs with its metadata-DB reads replaced by a stand-in (Airflow's ORM needs an api-server's DB: the
integration test covers those reads).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from tasklens import routing
from tasklens.alerts import Delivery, Notification, Severity
from tasklens.deadlines import Deadline
from tasklens.foresight import deadlines as deadline_checks
from tasklens.foresight import lateness, queries
from tasklens.foresight.checks import _late_outcome, _outcome, _outcome_details
from tasklens.foresight.history import Baseline
from tasklens.foresight.overrun import Attempt, overrun_alert, resolve_alert, stuck_alert
from tasklens.messages import render_text
from tasklens.ruleset import default_ruleset
from tasklens.store import Store

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
RULES = default_ruleset()
USUAL = Baseline(usual_s=12 * 60, high_s=15 * 60, size=30, method="recent")
TRAIN = Attempt("lakehouse_ml", "train", "scheduled__1", -1, 1, "running", NOW - timedelta(minutes=47))
DEADLINE = Deadline(name="nightly", dag_id=("lakehouse_*",), within_s=3600)


@pytest.fixture
def store(tmp_path):
    clock = [NOW]
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=lambda: clock[0])
    yield s
    s.dispose()


def _record(store: Store, *alerts) -> None:
    store.record([(alert, ()) for alert in alerts])


def _resolve_notice(store: Store, **match) -> dict:
    """The plain text of the resolve notice of the one stored alert matching ``match``."""
    (row,) = [a for a in store.list_alerts(limit=50) if all(a[k] == v for k, v in match.items())]
    assert row["status"] == "resolved"
    (snapshot,) = store.snapshots([row["id"]]).values()
    return render_text(Notification(kind="resolve", channel="slack", items=(snapshot,)), base_url="",
                       templates_dir=None)


@pytest.mark.parametrize(("state", "said"), [
    ("success", "lakehouse_ml.train finished after 52m."),
    ("failed", "lakehouse_ml.train failed after 52m."),
    ("up_for_retry", "lakehouse_ml.train failed after 52m; it will retry."),
])
def test_a_running_long_resolve_says_how_the_attempt_ended(store, state, said):
    """The attempt ran 52 min: the notice says finished / failed after 52m (not the generic "is resolved")."""
    _record(store, overrun_alert(RULES.rule("task_overrun"), TRAIN, USUAL, NOW))
    ended = (state, 52 * 60.0, NOW + timedelta(minutes=5))
    row = {"data": {}}
    _record(store, resolve_alert("task_overrun", "lakehouse_ml", "train", _outcome(row, ended, NOW),
                                 NOW + timedelta(minutes=6), _outcome_details(row, ended)))
    text = _resolve_notice(store, task_id="train")
    assert text["headline"] == "Resolved: lakehouse_ml.train"
    assert text["body"] == said


def test_a_stuck_resolve_says_what_the_attempt_is_now(store):
    """Queued too long, now running: "no longer queued (now running)"."""
    queued = Attempt("lakehouse_ml", "train", "scheduled__1", -1, 1, "queued", NOW - timedelta(hours=1))
    alert = stuck_alert(RULES.rule("task_stuck"), queued, NOW)
    assert alert is not None
    _record(store, alert)
    row = {"data": {"waiting_state": "queued"}}
    ended = ("running", None, None)
    _record(store, resolve_alert("task_stuck", "lakehouse_ml", "train", _outcome(row, ended, NOW),
                                 NOW + timedelta(minutes=1), _outcome_details(row, ended)))
    assert _resolve_notice(store, task_id="train")["body"] == "lakehouse_ml.train is no longer queued (now running)."


def _run(run_id: str, start: datetime) -> SimpleNamespace:
    return SimpleNamespace(dag_id="lakehouse_ml", run_id=run_id, run_after=start, start_date=start,
                           data_interval_end=start)


def _open_rows(store: Store) -> list[dict]:
    return store.open_alerts_of([deadline_checks.deadline_rule(DEADLINE)])


def test_a_deadline_resolve_says_the_run_made_it_and_closes_only_that_run(store, monkeypatch):
    """Two overlapping runs both forecast to miss 1h after their start. Run A ends at 06:50, 10 min before its
    07:00 deadline: its alert resolves saying so; run B, still in flight, keeps its alert open."""
    run_a, run_b = _run("manual__a", NOW), _run("manual__b", NOW + timedelta(minutes=20))
    checks = deadline_checks.DeadlineChecks()
    due_a, due_b = NOW + timedelta(hours=1), NOW + timedelta(minutes=80)
    forecast = deadline_checks.Forecast(finish_s=5000.0, median_s=4000.0, critical_path=("train", "score"))
    _record(store,
            checks._at_risk(DEADLINE, run_a, due_a, due_a + timedelta(minutes=25), forecast, 1.0, 1, NOW),
            checks._at_risk(DEADLINE, run_b, due_b, due_b + timedelta(minutes=25), forecast, 1.0, 1, NOW))
    assert len(_open_rows(store)) == 2
    ended_a = NOW + timedelta(minutes=50)
    monkeypatch.setattr(queries, "runs_in_flight", lambda session: [run_b])
    monkeypatch.setattr(queries, "run_end",
                        lambda session, dag_id, run_id: ("success", ended_a) if run_id == "manual__a" else (None, None))
    monkeypatch.setattr(checks, "_forecast", lambda *args: None)  # run B: no forecast update this pass
    result = checks.run(None, [DEADLINE], _open_rows(store), None, ended_a + timedelta(seconds=5))
    (resolve,) = result.alerts
    _record(store, resolve)
    (still_open,) = _open_rows(store)
    assert still_open["run_id"] == "manual__b"
    text = _resolve_notice(store, run_id="manual__a")
    assert text["headline"] == "Resolved: lakehouse_ml"
    assert text["body"] == ("Run manual__a made its deadline (1h after the run start): it finished at "
                            "2026-11-27T06:50:00+00:00, 10m before it.")


def test_a_deadline_resolve_after_the_deadline_says_by_how_much(store):
    """A missed run that ends 5 min after its deadline: "finished at ..., 5m after its deadline"."""
    run = _run("manual__a", NOW)
    due = NOW + timedelta(hours=1)
    _record(store, deadline_checks.DeadlineChecks()._missed(DEADLINE, run, due, due + timedelta(minutes=1)))
    ended = due + timedelta(minutes=5)
    _record(store, deadline_checks._resolve("deadline:nightly", "lakehouse_ml", "manual__a", "finished late",
                                            ended, deadline_checks._ending_details("success", ended, due)))
    assert _resolve_notice(store, run_id="manual__a")["body"] == (
        "Run manual__a finished at 2026-11-27T07:05:00+00:00, 5m after its deadline (1h after the run start).")


def test_a_late_run_resolve_says_when_it_started(store, monkeypatch):
    """Due 06:00, first task started 06:42: the notice says started at 06:42, 42m after it was due."""
    late = lateness.late_alert(RULES.rule("dag_late"), "nightly", "scheduled__1", NOW, NOW + timedelta(minutes=40))
    assert late is not None
    _record(store, late)
    (row,) = store.open_alerts_of(["dag_late"])
    started = NOW + timedelta(minutes=42)
    monkeypatch.setattr(queries, "run_first_start", lambda session, dag_id, run_id: started)
    outcome, details = _late_outcome(None, row)
    assert outcome == "run scheduled__1 started at 2026-11-27 06:42:00 UTC, 42m after it was due"
    _record(store, lateness.resolve_alert("dag_late", "nightly", None, outcome, started + timedelta(seconds=5),
                                          details))
    text = _resolve_notice(store, dag_id="nightly")
    assert text["body"] == "Run scheduled__1 started at 2026-11-27T06:42:00+00:00, 42m after it was due."
    assert store.list_alerts(limit=5)[0]["resolved_by"] == f"dag_late: {outcome}"


def _passes_to_slack(store: Store, checks: deadline_checks.DeadlineChecks, run: SimpleNamespace, monkeypatch):
    """One deadline pass at a given time with ``run`` in flight, its alerts recorded for a Slack route with a 1h
    repeat interval: the delivery ids it queued."""
    monkeypatch.setattr(queries, "runs_in_flight", lambda session: [run])
    to_slack = Delivery(route="all", channel="slack", channel_type="slack", group_key="run", repeat_interval_s=3600)

    def one_pass(at: datetime) -> list[int]:
        alerts = checks.run(None, [DEADLINE], _open_rows(store), None, at).alerts
        return store.record([(alert, (to_slack,)) for alert in alerts]).queued_delivery_ids if alerts else []

    return one_pass


def test_a_forecast_that_moves_a_lot_is_sent_at_once_not_at_the_repeat_interval(store, monkeypatch):
    """A run forecast to miss by 25m: the alert goes out. A pass later the forecast moved 2 min: nothing new. Then
    it moved 20 min (past update_after_move, 10m): the update is queued to the channel at once, although the
    route's repeat_interval (1h) has not passed."""
    run = _run("manual__a", NOW)
    checks = deadline_checks.DeadlineChecks()
    due = NOW + timedelta(hours=1)
    finish = [due + timedelta(minutes=25)]
    monkeypatch.setattr(checks, "_forecast", lambda session, deadline, run, history, now: deadline_checks.Forecast(
        finish_s=(finish[0] - now).total_seconds(), median_s=0.0, critical_path=("train",)))
    one_pass = _passes_to_slack(store, checks, run, monkeypatch)

    assert len(one_pass(NOW + timedelta(minutes=10))) == 1
    finish[0] += timedelta(minutes=2)
    assert one_pass(NOW + timedelta(minutes=11)) == []
    finish[0] += timedelta(minutes=18)
    assert len(one_pass(NOW + timedelta(minutes=12))) == 1
    (row,) = [a for a in store.list_alerts(limit=5) if a["status"] == "open"]
    assert row["summary"].startswith("forecast to miss 1h after the run start by ~45m") and row["occurrences"] == 2
    # No simulated finishes here, only a p90 past the deadline: every one of them would be later.
    assert row["summary"].endswith("(p90; 100 % chance to miss); critical path: train")
    assert row["data"]["miss_chance"] == 1.0


def _forecast_with_chance(checks: deadline_checks.DeadlineChecks, due: datetime, monkeypatch) -> dict[str, int]:
    """Stands in for the forecast: its p90 ``late_min`` minutes past ``due``, and ``after`` of its 100 simulated
    finishes after it (set them in the returned dict between passes)."""
    state = {"late_min": 1, "after": 15}

    def forecast(session, deadline, run, history, now):
        to_due = (due - now).total_seconds()
        draws = sorted([to_due - 60.0] * (100 - state["after"]) + [to_due + 600.0] * state["after"])
        return deadline_checks.Forecast(finish_s=to_due + 60 * state["late_min"], median_s=0.0,
                                        critical_path=("train",), draws_s=tuple(draws))

    monkeypatch.setattr(checks, "_forecast", forecast)
    return state


def test_a_forecast_whose_chance_to_miss_becomes_likely_is_sent_at_once(store, monkeypatch):
    """The first warning says 15 % (a close call). A pass later the p90 moved only 2 min, but half the simulated
    finishes are now after the deadline: the update goes out at once. Past 50 % already, a small move sends nothing."""
    run = _run("manual__a", NOW)
    checks = deadline_checks.DeadlineChecks()
    state = _forecast_with_chance(checks, NOW + timedelta(hours=1), monkeypatch)
    one_pass = _passes_to_slack(store, checks, run, monkeypatch)

    def open_row() -> dict:
        (row,) = [a for a in store.list_alerts(limit=5) if a["status"] == "open"]
        return row

    assert len(one_pass(NOW + timedelta(minutes=10))) == 1
    assert open_row()["summary"] == "may miss 1h after the run start: 15 % chance (p90 finish ~1m after it); " \
        "critical path: train"
    assert open_row()["data"]["miss_chance"] == 0.15
    state.update(late_min=3, after=55)
    assert len(one_pass(NOW + timedelta(minutes=11))) == 1
    assert open_row()["summary"] == "forecast to miss 1h after the run start by ~3m (p90; 55 % chance to miss); " \
        "critical path: train"
    assert open_row()["data"]["notify_update"] is True
    state.update(late_min=4, after=70)
    assert one_pass(NOW + timedelta(minutes=12)) == []


def test_a_critical_deadline_pages_only_once_a_miss_is_likely(store, monkeypatch):
    """``severity: critical``, with the built-in routes (critical: Slack, escalated to email after 30m; warning:
    Slack). The 15 % close call is a warning on the warning route, which never escalates. The update at 55 % is
    critical: it joins the critical route at once, and its escalation to email comes 30 min after that update."""
    deadline = dataclasses.replace(DEADLINE, severity=Severity.CRITICAL)
    monkeypatch.setattr(queries, "runs_in_flight", lambda session: [_run("manual__a", NOW)])
    checks = deadline_checks.DeadlineChecks()
    state = _forecast_with_chance(checks, NOW + timedelta(hours=1), monkeypatch)
    clock = [NOW]
    store.clock = lambda: clock[0]

    def one_pass(at: datetime) -> list[tuple[str, str]]:
        clock[0] = at
        alerts = checks.run(None, [deadline], _open_rows(store), None, at).alerts
        store.record([(alert, tuple(routing.route(alert, RULES))) for alert in alerts])
        return [(alert.severity.value, delivery.route) for alert in alerts for delivery in routing.route(alert, RULES)]

    assert one_pass(NOW + timedelta(minutes=10)) == [("warning", "warning")]
    clock[0] = NOW + timedelta(minutes=45)
    assert store.queue_escalations() == []
    state.update(late_min=3, after=55)
    assert one_pass(NOW + timedelta(minutes=46)) == [("critical", "critical")]
    assert [(d["route"], d["kind"]) for d in store.deliveries()] == [("warning", "alert"), ("critical", "alert")]
    (row,) = [a for a in store.list_alerts(limit=5) if a["status"] == "open"]
    assert row["severity"] == "critical" and "(p90; 55 % chance to miss)" in row["summary"]
    clock[0] = NOW + timedelta(minutes=46 + 29)
    assert store.queue_escalations() == []
    clock[0] = NOW + timedelta(minutes=46 + 30)
    assert len(store.queue_escalations()) == 1
    assert store.deliveries()[-1]["channel"] == "email" and store.deliveries()[-1]["kind"] == "escalation"

"""Rules: which alerts a TaskEvent, a metric or a custom alert call produces."""

from __future__ import annotations

import textwrap

import pytest

from tasklens.alerts import AlertKind, Severity, fingerprint
from tasklens.events import TaskEvent
from tasklens.exceptions import ConfigError
from tasklens.rules import (
    after_attempt,
    custom_alert,
    dag_matches,
    evaluate_event,
    evaluate_metric,
    has_tag,
    on_event,
    on_state,
    rule_condition,
)
from tasklens.ruleset import Rule, load_ruleset
from tasklens.text import format_duration

CONNS = {"slack_conn_id": "s", "smtp_conn_id": "e"}


@pytest.fixture
def ruleset():
    return load_ruleset(None, **CONNS)


def ruleset_from(tmp_path, text):
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_ruleset(path, **CONNS)


def event(kind="failed", **fields):
    base = dict(
        event=kind,
        dag_id="etl",
        task_id="load",
        run_id="scheduled__2025-01-01",
        try_number=1,
        max_tries=0,
        ts="2025-01-01T14:00:00+00:00",
        end_date="2025-01-01T14:00:05+00:00",
        owner="data-eng",
        operator="PythonOperator",
        dag_tags=("finance", "daily"),
    )
    base.update(fields)
    return TaskEvent(**base)


def by_rule(alerts):
    return {a.rule: a for a in alerts}


def test_final_failure_is_critical_with_exception(ruleset):
    """A final failure raises one critical FAILURE alert with the exception's first line."""
    alerts = evaluate_event(
        event(
            exception_type="ValueError",
            exception_message="bad row 7\nmore detail",
            traceback="Traceback\nValueError: bad row 7",
        ),
        ruleset,
    )
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind is AlertKind.FAILURE and alert.severity is Severity.CRITICAL and alert.rule == "task_failed"
    assert alert.summary == "ValueError: bad row 7"
    assert alert.fingerprint == fingerprint("etl", "load", "task_failed", "ValueError")
    assert alert.labels["owner"] == "data-eng" and alert.labels["dag_tags"] == "finance,daily"
    assert alert.data["traceback"].endswith("bad row 7")
    assert alert.occurred_at == "2025-01-01T14:00:05+00:00"


def test_failure_fingerprint_depends_on_exception_type(ruleset):
    """Two exception types of one task are two problems; the same type twice is one."""
    first = evaluate_event(event(exception_type="ValueError"), ruleset)[0]
    second = evaluate_event(event(exception_type="KeyError"), ruleset)[0]
    again = evaluate_event(event(exception_type="ValueError", run_id="other"), ruleset)[0]
    assert first.fingerprint != second.fingerprint
    assert first.fingerprint == again.fingerprint


def test_failure_without_exception_uses_reason(ruleset):
    """A failure reported without an exception (scheduler path) shows its reason."""
    alert = evaluate_event(event(reason="heartbeat timeout"), ruleset)[0]
    assert "heartbeat timeout" in alert.summary and alert.data["reason"] == "heartbeat timeout"


def test_retry_is_stored_warning_with_retry_time(ruleset):
    """up_for_retry raises a warning RETRY alert saying 'retry 2/4 at 14:05 UTC'; its rule does not notify."""
    alerts = evaluate_event(
        event(
            "up_for_retry",
            try_number=2,
            max_tries=4,
            exception_type="TimeoutError",
            exception_message="read timed out",
            next_retry_at="2025-01-01T14:05:00+00:00",
        ),
        ruleset,
    )
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind is AlertKind.RETRY and alert.severity is Severity.WARNING
    assert alert.summary.startswith("retry 2/4 at 14:05 UTC after TimeoutError: read timed out")
    assert ruleset.rule(alert.rule).notify is False
    assert alert.data["next_retry_at"] == "2025-01-01T14:05:00+00:00"


def test_retry_on_another_day_shows_the_date(ruleset):
    """A retry scheduled for another UTC day shows its date too."""
    alert = evaluate_event(
        event("up_for_retry", try_number=1, max_tries=2, next_retry_at="2025-01-02T01:00:00Z"), ruleset
    )[0]
    assert "retry 1/2 at 2025-01-02 01:00 UTC" in alert.summary


def test_retry_without_next_retry_at(ruleset):
    """Without next_retry_at the retry message has no time."""
    alert = evaluate_event(event("up_for_retry", try_number=1, max_tries=3), ruleset)[0]
    assert alert.summary.startswith("retry 1/3 after failure")


def test_killed_is_critical_with_reason(ruleset):
    """A killed event raises a critical KILLED alert carrying the reason."""
    alert = evaluate_event(event("killed", reason="SIGKILL (exit -9): out of memory"), ruleset)[0]
    assert alert.kind is AlertKind.KILLED and alert.severity is Severity.CRITICAL
    assert "out of memory" in alert.summary and alert.data["reason"].startswith("SIGKILL")
    assert alert.fingerprint == fingerprint("etl", "load", "task_killed")


def test_success_resolves_failure_retry_and_killed(ruleset):
    """A success yields RESOLVE candidates for the task's failure, retry and killed rules."""
    alerts = evaluate_event(event("success", try_number=2, duration_s=3.0), ruleset)
    resolves = by_rule(a for a in alerts if a.kind is AlertKind.RESOLVE)
    assert set(resolves) == {"task_failed", "task_retry", "task_killed"}
    failed = resolves["task_failed"]
    assert failed.fingerprint == fingerprint("etl", "load", "task_failed")
    assert failed.severity is Severity.CRITICAL  # routes like the alert it resolves
    assert failed.data["resolved_by"] == "task_recovered"
    assert resolves["task_retry"].fingerprint == evaluate_event(event("up_for_retry"), ruleset)[0].fingerprint
    assert resolves["task_killed"].fingerprint == evaluate_event(event("killed"), ruleset)[0].fingerprint


def test_running_and_skipped_raise_nothing(ruleset):
    """running and skipped events raise no alerts."""
    assert evaluate_event(event("running"), ruleset) == []
    assert evaluate_event(event("skipped"), ruleset) == []


def test_disabled_rule_does_not_fire(tmp_path):
    """enabled: false silences a rule completely."""
    ruleset = ruleset_from(tmp_path, "rules:\n  task_failed: {enabled: false}\n")
    assert evaluate_event(event(), ruleset) == []


def test_rule_match_and_after_attempt(tmp_path):
    """A rule's match (globs, tags, exception type) and after_attempt select the events it fires on."""
    ruleset = ruleset_from(
        tmp_path,
        """
        rules:
          task_failed: {match: {dag_id: "prod_*"}}
          finance: {type: failed, after_attempt: 2, match: {tags: [fin*], exception_type: "*Error", owner: data-*}}
    """,
    )
    assert evaluate_event(event(exception_type="ValueError"), ruleset) == []
    late = evaluate_event(event(exception_type="ValueError", try_number=2), ruleset)
    assert [a.rule for a in late] == ["finance"]
    assert evaluate_event(event(exception_type="Timeout", try_number=2), ruleset) == []
    assert [a.rule for a in evaluate_event(event(dag_id="prod_x", exception_type="E"), ruleset)] == ["task_failed"]


def test_duration_above_absolute_limit(tmp_path):
    """A task running above max_duration raises a DURATION alert without any history."""
    ruleset = ruleset_from(tmp_path, "rules:\n  task_duration: {max_duration: 1h, min_duration: 0}\n")
    alerts = [a for a in evaluate_event(event("success", duration_s=5400.0), ruleset) if a.kind is AlertKind.DURATION]
    assert len(alerts) == 1
    assert alerts[0].summary == "ran 1h 30m (limit 1h)" and alerts[0].severity is Severity.WARNING
    assert alerts[0].fingerprint == fingerprint("etl", "load", "task_duration")


def test_duration_above_median_factor(ruleset):
    """A task running more than 3x its recent median (with enough history) raises a DURATION alert."""
    history = [600.0, 620.0, 580.0, 610.0, 590.0]
    slow = evaluate_event(event("success", duration_s=2000.0), ruleset, recent_durations_s=history)
    duration = [a for a in slow if a.kind is AlertKind.DURATION]
    assert len(duration) == 1 and "3.3× its recent median of 10m" in duration[0].summary
    assert duration[0].data["median_s"] == 600.0
    normal = evaluate_event(event("success", duration_s=1700.0), ruleset, recent_durations_s=history)
    assert not [a for a in normal if a.kind is AlertKind.DURATION]


def test_duration_needs_history_and_minimum(ruleset):
    """Too little history, or a run shorter than min_duration, never fires the median rule."""
    short_history = evaluate_event(event("success", duration_s=5000.0), ruleset, recent_durations_s=[10.0] * 4)
    assert not [a for a in short_history if a.kind is AlertKind.DURATION]
    quick = evaluate_event(event("success", duration_s=100.0), ruleset, recent_durations_s=[1.0] * 10)
    assert not [a for a in quick if a.kind is AlertKind.DURATION]


def test_duration_ignores_bad_history_values(ruleset):
    """NaN and negative history samples are ignored rather than crashing."""
    history = [float("nan"), -1.0, 600.0, 600.0, 600.0, 600.0, 600.0]
    alerts = evaluate_event(event("success", duration_s=4000.0), ruleset, recent_durations_s=history)
    assert [a.data["history_size"] for a in alerts if a.kind is AlertKind.DURATION] == [5]


@pytest.mark.parametrize(
    ("name", "value", "fires", "severity"),
    [
        ("spark_job_duration", 1801, True, Severity.WARNING),
        ("spark_job_duration", 1800, False, None),
        ("spark_memory_utilization", 91.5, True, Severity.CRITICAL),
        ("data_quality_score", 94.9, True, Severity.WARNING),
        ("data_quality_score", 95, False, None),
        ("prediction_accuracy", 80, True, Severity.WARNING),
        ("roc_auc", 0.52, True, Severity.WARNING),
        ("roc_auc", 0.67, False, None),
    ],
)
def test_builtin_metric_thresholds(ruleset, name, value, fires, severity):
    """The built-in metric rules compare in their configured direction."""
    alerts = evaluate_metric(name, value, {"job": "j1"}, ruleset, context=event("running"))
    assert len(alerts) == 1
    alert = alerts[0]
    if fires:
        assert alert.kind is AlertKind.METRIC and alert.severity is severity
        assert alert.data["value"] == value and alert.data["metric"] == name
        assert alert.labels["job"] == "j1" and alert.labels["owner"] == "data-eng"
    else:
        assert alert.kind is AlertKind.RESOLVE and alert.fingerprint == fingerprint("etl", "load", name)


def test_metric_without_rule_or_nan(ruleset):
    """Unknown metrics and NaN values raise nothing."""
    assert evaluate_metric("rows_loaded", 5, {}, ruleset) == []
    assert evaluate_metric("data_quality_score", float("nan"), {}, ruleset) == []


def test_metric_without_context_uses_labels(ruleset):
    """Without a task context the metric's dag_id/task_id labels identify the alert."""
    alert = evaluate_metric("data_quality_score", 80, {"dag_id": "dq", "task_id": "check"}, ruleset)[0]
    assert (alert.dag_id, alert.task_id) == ("dq", "check")
    assert alert.fingerprint == fingerprint("dq", "check", "data_quality_score")


def test_metric_rule_from_file_with_match(tmp_path):
    """A metric rule from the file applies only to matching tasks, and resolve_when_ok: false keeps quiet."""
    ruleset = ruleset_from(
        tmp_path,
        """
        rules:
          rows_low: {type: metric, metric: rows, op: "<=", threshold: 0, resolve_when_ok: false, match: {dag_id: etl}}
    """,
    )
    assert evaluate_metric("rows", 0, {}, ruleset, context=event("running"))[0].rule == "rows_low"
    assert evaluate_metric("rows", 0, {}, ruleset, context=event("running", dag_id="other")) == []
    assert evaluate_metric("rows", 10, {}, ruleset, context=event("running")) == []


def test_custom_alert(ruleset):
    """tasklens.alert(...) becomes a CUSTOM alert with the call's severity, template and data."""
    alert = custom_alert(
        "Model drift",
        "warning",
        "ml_model_drift",
        {"model": "delay", "drift_score": 0.85, "threshold": 0.70},
        event("running"),
        ruleset,
    )
    assert alert.kind is AlertKind.CUSTOM and alert.severity is Severity.WARNING and alert.rule == "custom"
    assert alert.template == "ml_model_drift" and alert.data["drift_score"] == 0.85
    assert alert.fingerprint == fingerprint("etl", "load", "custom", "Model drift")
    assert "drift_score=0.85" in alert.summary


def test_custom_alert_bad_severity_or_template(ruleset):
    """An unknown severity or a path-like template name raises ConfigError."""
    with pytest.raises(ConfigError) as caught:
        custom_alert("x", "urgent", None, {}, None, ruleset)
    assert caught.value.key == "severity"
    with pytest.raises(ConfigError):
        custom_alert("x", "info", "../secrets", {}, None, ruleset)


def test_custom_alert_data_is_bounded_and_json_friendly(ruleset):
    """Huge, binary and odd data values are bounded and made JSON-serialisable."""
    import json

    alert = custom_alert(
        "Big",
        "CRITICAL",
        None,
        {
            "blob": "x" * 100_000,
            "raw": b"\xff\xfe",
            "obj": object(),
            "inf": float("inf"),
            "nested": {"a": [1, 2, {"b": "\udcff"}]},
        },
        None,
        ruleset,
    )
    assert alert.severity is Severity.CRITICAL and alert.dag_id == "unknown"
    json.dumps(dict(alert.data)).encode("utf-8")
    assert len(alert.data["blob"]) <= 4000


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def test_custom_alert_data_that_cannot_be_printed_is_kept_as_a_stand_in(ruleset):
    """tasklens.alert(...) with a value whose __str__ and __repr__ raise still gives the alert (the value shows as
    ``<unprintable ...>``); surrogates in data become U+FFFD."""
    alert = custom_alert("Odd data", "warning", None, {"value": _Unprintable(), "path": "\udcff", "deep": [[[[[1]]]]]},
                         event("running"), ruleset)
    assert alert.data["value"] == "<unprintable _Unprintable>" and alert.data["path"] == "\ufffd"
    assert alert.data["deep"] == [[["[[1]]"]]]  # cut at depth 4, as text


def test_combinators():
    """Conditions combine with &, | and ~ in the tenacity style."""
    failed_late = on_event("failed") & after_attempt(2)
    assert failed_late(event(try_number=2)) and not failed_late(event(try_number=1))
    either = dag_matches("x_*") | has_tag("finance")
    assert either(event()) and not either(event(dag_tags=()))
    assert (~dag_matches("etl"))(event(dag_id="other"))
    assert "after_attempt(2)" in repr(failed_late)
    assert (on_state("up_for_retry") & ~after_attempt(3))(event("up_for_retry", try_number=2))


def test_programmatic_rule_condition(ruleset):
    """A Rule built in Python may add a condition on top of its type."""
    rule = Rule("late_failure", "failed", Severity.CRITICAL, condition=after_attempt(3))
    condition = rule_condition(rule)
    assert condition(event(try_number=3)) and not condition(event(try_number=2))
    assert not condition(event("success", try_number=3))


@pytest.mark.parametrize(("seconds", "text"), [(5.25, "5.2s"), (60, "1m"), (3725, "1h 2m 5s"), (90000, "1d 1h")])
def test_format_duration(seconds, text):
    """Durations read like people write them."""
    assert format_duration(seconds) == text

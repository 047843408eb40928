"""Routing: which channels an alert goes to, with which grouping and timing, and when routes are muted."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from datetime import datetime, timezone

import pytest

from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.routing import GROUP_KEY_CHARS, group_key, is_muted, matches, route
from tasklens.ruleset import load_ruleset

CONNS = {"slack_conn_id": "s", "smtp_conn_id": "e"}


def ruleset_from(tmp_path, text):
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_ruleset(path, **CONNS)


def alert(**fields) -> Alert:
    base = dict(
        fingerprint="f",
        rule="task_failed",
        kind=AlertKind.FAILURE,
        severity=Severity.CRITICAL,
        title="Task failed: etl.load",
        summary="ValueError: boom",
        dag_id="etl",
        task_id="load",
        run_id="r1",
        exception_type="ValueError",
        exception_message="boom",
        labels={"owner": "data-eng", "dag_tags": "daily,finance"},
    )
    base.update(fields)
    return Alert(**base)


def test_default_critical_goes_to_slack_with_email_escalation():
    """Out of the box a critical alert goes to Slack, escalates to email after 30 min, falls back to email."""
    deliveries = route(alert(), load_ruleset(None, **CONNS))
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert (delivery.route, delivery.channel, delivery.channel_type) == ("critical", "slack", "slack")
    assert delivery.escalate_after_s == 1800 and delivery.escalation_channels == ("email",)
    assert delivery.fallback_channels == ("email",)
    assert delivery.group_wait_s == 3 and delivery.repeat_interval_s == 3600
    assert delivery.group_key == "route=critical;dag_id=etl;run_id=r1"


def test_default_warning_goes_to_slack_without_escalation():
    """Out of the box a warning goes to Slack and never escalates."""
    deliveries = route(
        alert(severity=Severity.WARNING, rule="task_duration", kind=AlertKind.DURATION), load_ruleset(None, **CONNS)
    )
    assert [(d.route, d.channel, d.escalate_after_s) for d in deliveries] == [("warning", "slack", None)]


def test_retries_and_info_are_stored_only():
    """Retry alerts (notify: false) and info alerts route nowhere by default."""
    ruleset = load_ruleset(None, **CONNS)
    assert route(alert(rule="task_retry", kind=AlertKind.RETRY, severity=Severity.WARNING), ruleset) == []
    assert route(alert(rule="custom", kind=AlertKind.CUSTOM, severity=Severity.INFO), ruleset) == []


def test_disabled_rule_routes_nowhere(tmp_path):
    """Alerts of a disabled rule (e.g. a custom alert with the custom rule off) are not sent."""
    ruleset = ruleset_from(tmp_path, "rules:\n  custom: {enabled: false}\n")
    assert route(alert(rule="custom", kind=AlertKind.CUSTOM), ruleset) == []


def test_resolve_routes_like_its_alert_but_never_escalates():
    """A RESOLVE candidate routes like the alert it resolves, without escalation; retry resolves stay quiet."""
    ruleset = load_ruleset(None, **CONNS)
    resolved = route(alert(kind=AlertKind.RESOLVE), ruleset)
    assert [(d.channel, d.escalate_after_s, d.escalation_channels) for d in resolved] == [("slack", None, ())]
    assert route(alert(kind=AlertKind.RESOLVE, rule="task_retry", severity=Severity.WARNING), ruleset) == []


def test_first_match_wins_unless_continue(tmp_path):
    """Routes are tried in order; continue: true keeps matching; a channel is used once."""
    ruleset = ruleset_from(
        tmp_path,
        """
        channels:
          ml: {type: slack}
          pager: {type: email, to: [p@example.com]}
        routes:
          - {name: ml, match: {dag_id: "ml_*"}, channels: [ml, slack], continue: true}
          - {name: crit, match: {severity: critical}, channels: [slack, pager]}
          - {name: all, channels: [email]}
    """,
    )
    ml = route(alert(dag_id="ml_train"), ruleset)
    assert [(d.route, d.channel) for d in ml] == [("ml", "ml"), ("ml", "slack"), ("crit", "pager")]
    assert [d.channel_type for d in ml] == ["slack", "slack", "email"]
    assert [(d.route, d.channel) for d in route(alert(), ruleset)] == [("crit", "slack"), ("crit", "pager")]
    assert [d.route for d in route(alert(severity=Severity.WARNING), ruleset)] == ["all"]


@pytest.mark.parametrize(
    ("match", "fields", "expected"),
    [
        ("{severity: warning}", {}, True),
        ("{severity: critical}", {"severity": Severity.WARNING}, False),
        ("{kind: [killed]}", {}, False),
        ("{kind: [failure, killed]}", {}, True),
        ("{rule: 'task_*'}", {}, True),
        ("{rule: custom}", {}, False),
        ("{dag_id: 'et?'}", {}, True),
        ("{task_id: [extract, transform]}", {}, False),
        ("{tags: [finance]}", {}, True),
        ("{tags: [ml]}", {}, False),
        ("{tags: [ml]}", {"labels": {}}, False),
        ("{owner: 'data-*'}", {}, True),
        ("{owner: ops}", {"labels": {"owner": "ops, data-eng"}}, True),
        ("{regex: '(?i)VALUEERROR'}", {}, True),
        ("{regex: 'OOM'}", {}, False),
        ("{regex: {exception_message: '^bo+m$'}}", {}, True),
        ("{regex: {labels.owner: '^ops$'}}", {}, False),
        ("{regex: {severity: x}}", {}, None),
    ],
)
def test_route_match_criteria(tmp_path, match, fields, expected):
    """Each route match criterion selects alerts as documented."""
    if expected is None:
        with pytest.raises(Exception, match="unknown field"):
            ruleset_from(tmp_path, f"routes:\n  - {{channels: [slack], match: {match}}}\n")
        return
    ruleset = ruleset_from(tmp_path, f"routes:\n  - {{channels: [slack], match: {match}}}\n")
    assert matches(alert(**fields), ruleset.routes[0].match) is expected


def test_group_by_fields_and_labels(tmp_path):
    """group_by builds the group key from alert fields and labels; values are percent-encoded."""
    ruleset = ruleset_from(tmp_path, "routes:\n  - {name: r, channels: [slack], group_by: [dag_id, owner, rule]}\n")
    [delivery] = route(alert(dag_id="a;b=c"), ruleset)
    assert delivery.group_key == "route=r;dag_id=a%3Bb%3Dc;owner=data-eng;rule=task_failed"
    assert group_key(alert(), "x", ()) == "route=x"


def test_route_timing_knobs_reach_the_delivery(tmp_path):
    """group_wait, repeat_interval, escalation and fallback of the route are on each delivery."""
    ruleset = ruleset_from(
        tmp_path,
        """
        routes:
          - name: r
            channels: [slack, email]
            group_wait: 2m
            repeat_interval: 6h
            escalate_after: 15m
            escalation_channels: [email]
            fallback_channels: [email, slack]
    """,
    )
    slack, email = route(alert(), ruleset)
    assert isinstance(slack, Delivery)
    assert (slack.group_wait_s, slack.repeat_interval_s, slack.escalate_after_s) == (120, 21600, 900)
    assert slack.fallback_channels == ("email",)  # never falls back to itself
    assert email.fallback_channels == ("slack",)


def test_is_muted_by_delivery_route_or_name(tmp_path):
    """is_muted checks the route's mute windows at a given instant, via a delivery, a route or its name."""
    ruleset = ruleset_from(
        tmp_path,
        """
        routes:
          - name: quiet
            channels: [slack]
            mute: [{weekdays: [sat, sun]}, {start: "2025-03-04T10:00:00Z", end: "2025-03-04T11:00:00Z"}]
          - {name: loud, channels: [email]}
    """,
    )
    saturday = datetime(2025, 3, 8, 12, tzinfo=timezone.utc)
    tuesday = datetime(2025, 3, 4, 12, tzinfo=timezone.utc)
    [delivery] = route(alert(), ruleset)
    assert is_muted(delivery, saturday, ruleset)
    assert not is_muted(delivery, tuesday, ruleset)
    assert is_muted("quiet", datetime(2025, 3, 4, 10, 30), ruleset)
    assert is_muted(ruleset.route("quiet"), saturday, ruleset)
    assert not is_muted("loud", saturday, ruleset)
    assert not is_muted(dataclasses.replace(delivery, route="gone"), saturday, ruleset)


def test_group_key_is_readable():
    """Group keys name the route and the grouped values so they can be read in the store."""
    key = group_key(alert(), load_ruleset(None, **CONNS).routes[0])
    assert re.fullmatch(r"route=critical;dag_id=etl;run_id=r1", key)


def test_group_key_of_long_non_ascii_ids_fits_the_store_and_stays_distinct():
    """250-character CJK dag and task ids percent-encode to 2,250 characters each: the key is cut to the store's
    500 with a hash of the whole key, so it stays stable, and two runs differing only at the end get two keys."""
    dag_id, task_id = "数据管道" * 62 + "日次", "任务" * 125
    ruleset = load_ruleset(None, **CONNS)
    runs = ["manual__" + "r" * 300 + "-1", "manual__" + "r" * 300 + "-2"]
    keys = [route(alert(dag_id=dag_id, task_id=task_id, run_id=run), ruleset)[0].group_key for run in runs]
    assert all(len(key) <= GROUP_KEY_CHARS for key in keys)
    assert keys[0] != keys[1] and all(key.startswith("route=critical;dag_id=%E6%95%B0") for key in keys)
    assert keys[0] == route(alert(dag_id=dag_id, task_id=task_id, run_id=runs[0]), ruleset)[0].group_key
    assert group_key(alert(), "x", ("dag_id",)) == "route=x;dag_id=etl"  # short keys stay readable

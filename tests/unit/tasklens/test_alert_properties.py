"""Property tests of the pure alert engine: fingerprints, group keys, escaping and truncation."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Severity, Status, fingerprint
from tasklens.events import TaskEvent
from tasklens.messages import (
    SLACK_LIMITS,
    TRUNCATION_MARKER,
    escape_mrkdwn,
    render_email,
    render_slack,
    truncate,
    truncate_mrkdwn,
)
from tasklens.routing import GROUP_KEY_CHARS, group_key, route
from tasklens.rules import custom_alert, evaluate_event
from tasklens.ruleset import load_ruleset

RULESET = load_ruleset(None, slack_conn_id="s", smtp_conn_id="e")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Airflow ids: letters, digits, '_', '-', '.'; exception types are identifiers.
ids = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True)
exception_types = st.none() | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
# Any text, lone surrogates included (what undecodable bytes become with surrogateescape).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300) | st.binary(max_size=200).map(
    lambda b: b.decode("utf-8", errors="surrogateescape")
)
slack_specials = st.sampled_from(
    ["<!channel>", "<!here>", "<@U123>", "<#C1|x>", "<http://e.vil|x>", "&", "&amp;", ">", "&lt;", "*", "`", "```", "|"]
)
hostile = st.lists(any_text | slack_specials, max_size=8).map("".join)

LINK = re.compile(r"<https?://[^\s<>|]+\|[^<>]*>")
ENTITY = re.compile(r"&(?:amp|lt|gt);")


def failure_event(dag_id: str, task_id: str, exception_type: str | None, **fields) -> TaskEvent:
    return TaskEvent(
        event="failed", dag_id=dag_id, task_id=task_id, run_id="r", exception_type=exception_type, **fields
    )


def slack_texts(payload: dict) -> list[str]:
    found = [payload["text"]]

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload["blocks"])
    return found


def assert_safe_mrkdwn(text: str) -> None:
    """No raw '<' or '>' except links we built, and every '&' starts an entity."""
    bare = LINK.sub("", text)
    assert "<" not in bare and ">" not in bare, text
    assert "&" not in ENTITY.sub("", bare), text


def hostile_alert(text: str, kind: AlertKind = AlertKind.FAILURE) -> Alert:
    return Alert(
        fingerprint="f",
        rule="task_failed",
        kind=kind,
        severity=Severity.CRITICAL,
        title=text,
        summary=text,
        dag_id=text,
        task_id=text,
        run_id=text,
        exception_type=text,
        exception_message=text,
        log_url="http://airflow/log?x=" + text[:50],
        labels={"owner": text, "dag_tags": text},
        data={
            "reason": text,
            "traceback": text,
            text[:20]: text,
            "metric": text,
            "value": text,
            "failed_checks": [text],
        },
        template=None,
    )


def snapshot(alert: Alert, text: str = "") -> AlertSnapshot:
    return AlertSnapshot(
        id=1,
        alert=alert,
        status=Status.OPEN,
        occurrences=2,
        first_seen=text,
        last_seen=text,
        alert_url="/tasklens/alerts/1?q=" + text[:30],
    )


# --------------------------------------------------------------------------- fingerprints


@FAST
@given(ids, ids, exception_types)
def test_failure_fingerprint_is_stable(dag_id, task_id, exception_type):
    """The same task and exception type always gets the same fingerprint, whatever the run or message."""
    first = evaluate_event(failure_event(dag_id, task_id, exception_type, exception_message="a"), RULESET)[0]
    second = evaluate_event(
        failure_event(dag_id, task_id, exception_type, exception_message="b", try_number=3), RULESET
    )[0]
    assert first.fingerprint == second.fingerprint == fingerprint(dag_id, task_id, "task_failed", exception_type)


@FAST
@given(
    st.tuples(ids, ids, st.sampled_from(["task_failed", "task_killed", "custom"]), exception_types),
    st.tuples(ids, ids, st.sampled_from(["task_failed", "task_killed", "custom"]), exception_types),
)
def test_fingerprints_differ_for_different_problems(first, second):
    """Distinct dag/task/rule/exception type give distinct fingerprints."""
    if first != second:
        assert fingerprint(*first) != fingerprint(*second)
    else:
        assert fingerprint(*first) == fingerprint(*second)


@FAST
@given(ids, ids, exception_types)
def test_resolve_matches_retry_and_killed_fingerprints(dag_id, task_id, exception_type):
    """A success's RESOLVE candidates carry exactly the retry and killed fingerprints of that task."""
    success = TaskEvent(event="success", dag_id=dag_id, task_id=task_id, run_id="r2", duration_s=1.0)
    resolves = {a.rule: a.fingerprint for a in evaluate_event(success, RULESET) if a.kind is AlertKind.RESOLVE}
    retry = evaluate_event(
        TaskEvent(event="up_for_retry", dag_id=dag_id, task_id=task_id, run_id="r1", exception_type=exception_type),
        RULESET,
    )[0]
    killed = evaluate_event(TaskEvent(event="killed", dag_id=dag_id, task_id=task_id, run_id="r1"), RULESET)[0]
    assert resolves["task_retry"] == retry.fingerprint
    assert resolves["task_killed"] == killed.fingerprint


# --------------------------------------------------------------------------- grouping


@FAST
@given(st.tuples(any_text, any_text), st.tuples(any_text, any_text))
def test_group_keys_equal_exactly_when_dag_and_run_equal(first, second):
    """With the default group_by, two alerts share a group key iff their dag_id and run_id are equal."""

    def key(dag_id, run_id):
        alert = Alert(
            fingerprint="f",
            rule="task_failed",
            kind=AlertKind.FAILURE,
            severity=Severity.CRITICAL,
            title="t",
            summary="s",
            dag_id=dag_id,
            run_id=run_id,
        )
        return route(alert, RULESET)[0].group_key

    assert (key(*first) == key(*second)) == (first == second)


@FAST
@given(
    st.lists(st.sampled_from(["dag_id", "task_id", "run_id", "rule", "owner", "severity"]), max_size=4, unique=True),
    any_text,
    any_text,
)
def test_group_key_is_deterministic_and_single_line(fields, value_a, value_b):
    """Group keys are deterministic, contain no raw separators from values, and are one line."""
    alert = Alert(
        fingerprint="f",
        rule=value_a,
        kind=AlertKind.CUSTOM,
        severity=Severity.WARNING,
        title="t",
        summary="s",
        dag_id=value_a,
        task_id=value_b,
        run_id=value_b,
        labels={"owner": value_a},
    )
    first = group_key(alert, "r", fields)
    assert first == group_key(alert, "r", fields)
    assert "\n" not in first and len(first) <= GROUP_KEY_CHARS
    hashed = re.fullmatch(r".*~[0-9a-f]{12}", first, re.S) is not None  # too long: a head plus a hash (fit_key)
    assert hashed or first.count(";") == len(fields)
    first.encode("utf-8")


# --------------------------------------------------------------------------- escaping


@FAST
@given(hostile, st.sampled_from(["alert", "digest", "resolve", "escalation", "test"]), st.sampled_from(list(AlertKind)))
def test_no_user_text_reaches_mrkdwn_unescaped(text, notification_kind, alert_kind):
    """Whatever the user text, no raw '<', '>' or bare '&' from it appears in any Slack text object."""
    items = (snapshot(hostile_alert(text, alert_kind), text), snapshot(hostile_alert(text[::-1], alert_kind), text))
    count = 2 if notification_kind == "digest" else 1
    payload = render_slack(
        Notification(kind=notification_kind, channel="c", items=items[:count]), base_url="http://h", templates_dir=None
    )
    for value in slack_texts(payload):
        assert_safe_mrkdwn(value)
    json.dumps(payload, ensure_ascii=False).encode("utf-8")


@FAST
@given(hostile)
def test_custom_alert_data_is_escaped(text):
    """Task-supplied custom alert data is escaped in every built-in custom template."""
    for template in (None, "ml_model_drift", "data_quality"):
        alert = custom_alert(
            text or "x",
            "warning",
            template,
            {"model": text, "drift_score": text, "dataset": text, "failed_checks": [text], text: 1},
            None,
            RULESET,
        )
        payload = render_slack(
            Notification(kind="alert", channel="c", items=(snapshot(alert),)), base_url="http://h", templates_dir=None
        )
        for value in slack_texts(payload):
            assert_safe_mrkdwn(value)


@FAST
@given(hostile)
def test_email_html_escapes_user_text(text):
    """User text never reaches the HTML part as markup, and the subject is a single line."""
    marked = f"{text}<zz9 onload=x>&zz9;\"'"
    subject, html, body = render_email(
        Notification(kind="alert", channel="e", items=(snapshot(hostile_alert(marked)),)),
        base_url="http://h",
        templates_dir=None,
    )
    assert "<zz9" not in html and "&zz9;" not in html
    assert "\n" not in subject and "\r" not in subject and len(subject) <= 200
    (subject + html + body).encode("utf-8")


@FAST
@given(hostile)
def test_escape_mrkdwn_is_reversible_and_safe(text):
    """escape_mrkdwn output is safe and unescapes back to the (UTF-8-clean) input."""
    escaped = escape_mrkdwn(text)
    assert_safe_mrkdwn(escaped)
    clean = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").replace("\x00", "")
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == clean


# --------------------------------------------------------------------------- truncation


@FAST
@given(any_text, st.integers(min_value=0, max_value=400))
def test_truncate_never_exceeds_limit(text, limit):
    """truncate never returns more than limit characters and keeps short text whole."""
    cut = truncate(text, limit)
    assert len(cut) <= limit
    cut.encode("utf-8")
    if len(text) <= limit:
        assert TRUNCATION_MARKER not in cut or TRUNCATION_MARKER in text


@FAST
@given(hostile, st.integers(min_value=0, max_value=400))
def test_truncate_mrkdwn_never_splits_entities(text, limit):
    """Cutting escaped mrkdwn never exceeds the limit nor leaves half an entity behind."""
    cut = truncate_mrkdwn(escape_mrkdwn(text), limit)
    assert len(cut) <= limit
    assert_safe_mrkdwn(cut)


@SLOW
@given(
    st.binary(min_size=1, max_size=64),
    st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=16),
)
def test_megabyte_messages_fit_every_limit(raw, chars):
    """1 MB exception messages with invalid UTF-8 and lone surrogates still fit every Slack and email limit."""
    chunk = raw.decode("utf-8", errors="surrogateescape") + chars + "<!channel>&"
    huge = chunk * (1_000_000 // len(chunk) + 1)
    alert = hostile_alert(huge)
    payload = render_slack(
        Notification(kind="alert", channel="c", items=(snapshot(alert),)), base_url="http://h", templates_dir=None
    )
    assert len(payload["blocks"]) <= SLACK_LIMITS["blocks"]
    assert len(payload["blocks"][0]["text"]["text"]) <= SLACK_LIMITS["header"]
    for block in payload["blocks"]:
        for field in block.get("fields", []):
            assert len(field["text"]) <= SLACK_LIMITS["field"]
    for value in slack_texts(payload):
        assert len(value) <= SLACK_LIMITS["text"]
        assert_safe_mrkdwn(value)
    json.dumps(payload, ensure_ascii=False).encode("utf-8")
    subject, html, text = render_email(
        Notification(kind="alert", channel="e", items=(snapshot(alert),)), base_url="http://h", templates_dir=None
    )
    assert len(subject) <= 200 and len(html) < 200_000 and len(text) < 200_000
    (subject + html + text).encode("utf-8")

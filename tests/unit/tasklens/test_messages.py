"""Messages: Slack Block Kit and email rendering from the Jinja templates, escaping, limits, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasklens import messages
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Severity, Status
from tasklens.events import TaskEvent
from tasklens.messages import (
    SLACK_LIMITS,
    TEMPLATE_NAMES,
    escape_mrkdwn,
    render_email,
    render_slack,
    truncate,
    truncate_mrkdwn,
)
from tasklens.rules import custom_alert, evaluate_event, evaluate_metric
from tasklens.ruleset import load_ruleset

REPO = Path(__file__).resolve().parents[3]
BASE = "http://airflow.example.com"
RULESET = load_ruleset(None, slack_conn_id="s", smtp_conn_id="e")


def failure(**fields) -> Alert:
    base = dict(
        fingerprint="f",
        rule="task_failed",
        kind=AlertKind.FAILURE,
        severity=Severity.CRITICAL,
        title="Task failed: etl.load",
        summary="ValueError: boom",
        dag_id="etl",
        task_id="load",
        run_id="scheduled__2025-01-01",
        try_number=2,
        max_tries=3,
        exception_type="ValueError",
        exception_message="boom\nsecond line",
        log_url="http://airflow.example.com/log?dag_id=etl&task_id=load",
        data={"traceback": "Traceback (most recent call last):\nValueError: boom"},
    )
    base.update(fields)
    return Alert(**base)


def snapshot(alert: Alert, **fields) -> AlertSnapshot:
    base = dict(
        id=7,
        alert=alert,
        status=Status.OPEN,
        occurrences=3,
        first_seen="2025-01-01T14:00:00+00:00",
        last_seen="2025-01-01T14:10:00+00:00",
        alert_url="/tasklens/alerts/7",
    )
    base.update(fields)
    return AlertSnapshot(**base)


def note(*alerts_or_snapshots, kind="alert") -> Notification:
    items = tuple(a if isinstance(a, AlertSnapshot) else snapshot(a) for a in alerts_or_snapshots)
    return Notification(kind=kind, channel="slack", items=items)


def slack(notification, **kwargs):
    return render_slack(notification, base_url=BASE, templates_dir=kwargs.pop("templates_dir", None), **kwargs)


def email(notification, **kwargs):
    return render_email(notification, base_url=BASE, templates_dir=kwargs.pop("templates_dir", None), **kwargs)


def texts(payload) -> list[str]:
    """Every text string in a Slack payload (fallback, blocks, fields, context, buttons)."""
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


def test_failure_message_has_every_part():
    """A failure shows DAG, task, run, try x/y, severity, exception first line, occurrences and two buttons."""
    payload = slack(note(failure()))
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header" and "Task failed: etl.load" in blocks[0]["text"]["text"]
    assert blocks[1]["text"]["text"] == "*ValueError*: boom"
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert fields == [
        "*DAG*\netl",
        "*Task*\nload",
        "*Run*\nscheduled__2025-01-01",
        "*Try*\n2/4",
        "*Severity*\ncritical",
        "*Occurrences*\n3",
    ]
    buttons = {b["text"]["text"]: b["url"] for b in blocks[3]["elements"]}
    assert buttons == {
        "View task log": "http://airflow.example.com/log?dag_id=etl&task_id=load",
        "Open in tasklens": "http://airflow.example.com/tasklens/alerts/7",
    }
    assert "second line" not in json.dumps(payload)
    assert payload["text"].startswith(":red_circle: Task failed: etl.load")


def test_mapped_task_shows_map_index():
    """A mapped task instance shows its map index."""
    payload = slack(note(failure(map_index=4)))
    assert "*Task*\nload[4]" in [f["text"] for f in payload["blocks"][2]["fields"]]


def test_unsafe_urls_get_no_button():
    """Only http(s) links become buttons (no javascript: or relative log URLs without base)."""
    payload = slack(note(snapshot(failure(log_url="javascript:alert(1)"), alert_url=None)))
    assert all(b["type"] != "actions" for b in payload["blocks"])


def test_user_text_cannot_ping_or_link():
    """<!channel>, <@U123> and &-entities in user text are escaped everywhere in the Slack payload."""
    evil = "<!channel> <@U123> <http://evil|click> & &amp;"
    alert = failure(
        dag_id=evil, task_id=evil, run_id=evil, title=evil, summary=evil, exception_type=evil, exception_message=evil
    )
    payload = slack(note(alert))
    for text in texts(payload):
        assert "<!channel>" not in text and "<@U123>" not in text and "<http://evil" not in text
    assert "&lt;!channel&gt;" in payload["blocks"][1]["text"]["text"]
    assert "&amp;amp;" in payload["blocks"][1]["text"]["text"]


def test_email_is_escaped_html_and_plain_text():
    """Email HTML escapes user text, the text part keeps it readable, both carry the same content."""
    alert = failure(exception_message="<script>alert('x')</script> & more")
    subject, html, text = email(note(alert))
    assert subject == "[tasklens] CRITICAL: Task failed: etl.load"
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>alert('x')</script> & more" in text
    for part in (
        "etl",
        "load",
        "scheduled__2025-01-01",
        "2/4",
        "critical",
        "Occurrences",
        "ValueError",
        "http://airflow.example.com/tasklens/alerts/7",
    ):
        assert part in html and part in text
    assert "Traceback (most recent call last)" in html and "Traceback (most recent call last)" in text


def test_email_subject_has_no_line_breaks():
    """A title with CR/LF cannot inject mail headers."""
    subject, _, _ = email(note(failure(dag_id="etl\r\nBcc: victim@example.com")))
    assert "\r" not in subject and "\n" not in subject
    assert len(subject) <= 200


def test_retry_message_says_retry_and_time():
    """The retry message reads 'retry 2/4 at 14:05 UTC'."""
    event = TaskEvent(
        event="up_for_retry",
        dag_id="etl",
        task_id="load",
        run_id="r",
        try_number=2,
        max_tries=4,
        ts="2025-01-01T14:00:00+00:00",
        next_retry_at="2025-01-01T14:05:00+00:00",
    )
    [alert] = evaluate_event(event, RULESET)
    payload = slack(note(alert))
    assert "retry 2/4 at 14:05 UTC" in payload["blocks"][1]["text"]["text"]
    assert payload["blocks"][0]["text"]["text"].endswith("Task retrying: etl.load")


def test_killed_duration_metric_messages():
    """Killed, duration and metric alerts use their own templates."""
    killed = evaluate_event(
        TaskEvent(event="killed", dag_id="d", task_id="t", run_id="r", reason="OOM (exit -9)"), RULESET
    )[0]
    assert "*Killed*: OOM (exit -9)" in slack(note(killed))["blocks"][1]["text"]["text"]
    long = evaluate_event(
        TaskEvent(event="success", dag_id="d", task_id="t", run_id="r", duration_s=4000.0),
        RULESET,
        recent_durations_s=[600.0] * 5,
    )
    duration = next(a for a in long if a.kind is AlertKind.DURATION)
    assert "*Duration*: ran 1h 6m 40s" in slack(note(duration))["blocks"][1]["text"]["text"]
    metric = evaluate_metric(
        "spark_memory_utilization",
        91.0,
        {"executor": "1"},
        RULESET,
        TaskEvent(event="running", dag_id="d", task_id="t", run_id="r"),
    )[0]
    body = slack(note(metric))["blocks"][1]["text"]["text"]
    assert "*spark_memory_utilization* = 91 (threshold &gt; 85)" in body and "executor: 1" in body


@pytest.mark.parametrize(
    ("template", "data", "expected"),
    [
        ("ml_model_drift", {"model": "delays", "drift_score": 0.85, "threshold": 0.7}, "*Drift score*: 0.85"),
        (
            "data_quality",
            {"dataset": "flights", "score": 91.5, "threshold": 95, "failed_checks": ["a not null"]},
            "• a not null",
        ),
        (None, {"rows": 0}, "*rows*: 0"),
        ("no_such_template", {"rows": 0}, "*rows*: 0"),
    ],
)
def test_custom_alert_templates(template, data, expected):
    """Custom alerts render with their named template, or the generic custom one."""
    alert = custom_alert("Model drift", "warning", template, data, None, RULESET)
    payload = slack(note(alert))
    assert expected in payload["blocks"][1]["text"]["text"]


def test_digest_lists_alerts_of_one_run():
    """A digest lists each alert of a DAG run as one line with a link to its alert page."""
    items = [
        snapshot(failure(task_id=f"t{i}", title=f"Task failed: etl.t{i}"), id=i, alert_url=f"/a/{i}") for i in range(3)
    ]
    payload = slack(Notification(kind="digest", channel="slack", items=tuple(items)))
    assert payload["blocks"][0]["text"]["text"].endswith("3 alerts in etl")
    lines = payload["blocks"][2]["text"]["text"].split("\n")
    assert len(lines) == 3
    assert lines[0].startswith(":red_circle: <http://airflow.example.com/a/0|Task failed: etl.t0>")
    _, html, text = email(Notification(kind="digest", channel="email", items=tuple(items)))
    assert html.count("<li") == 3 and text.count("\n- ") == 3


def test_huge_digest_respects_block_limit():
    """A digest of 5,000 alerts stays within 50 blocks and 3,000 chars per text, and says how many were left out."""
    items = tuple(snapshot(failure(task_id=f"task_{i}", title="T" * 500, summary="S" * 500), id=i) for i in range(5000))
    payload = slack(Notification(kind="digest", channel="slack", items=items))
    assert len(payload["blocks"]) <= SLACK_LIMITS["blocks"]
    assert all(len(t) <= SLACK_LIMITS["text"] for t in texts(payload))
    assert "more alert(s)" in payload["blocks"][-1]["elements"][0]["text"]


def test_resolve_notice_is_short():
    """A resolve notice is a header, one line and a context line: no fields."""
    payload = slack(note(snapshot(failure(), status=Status.RESOLVED), kind="resolve"))
    assert payload["blocks"][0]["text"]["text"].startswith(":white_check_mark: Resolved: etl.load")
    assert not any("fields" in block for block in payload["blocks"])
    assert "is resolved (3 occurrences)" in payload["blocks"][1]["text"]["text"]
    subject, _, _ = email(note(snapshot(failure(), status=Status.RESOLVED), kind="resolve"))
    assert subject == "[tasklens] Resolved: etl.load"


def test_escalation_message():
    """An escalation says the alert is still open and unacknowledged."""
    payload = slack(note(failure(), kind="escalation"))
    assert payload["blocks"][0]["text"]["text"].startswith(":rotating_light: Escalation: Task failed")
    assert "nobody acknowledged it" in payload["blocks"][1]["text"]["text"]
    assert email(note(failure(), kind="escalation"))[0].startswith("[tasklens] CRITICAL: Escalation: Task failed")


def test_test_notification_is_marked():
    """A test notification (tasklens test-alert) is marked as a test."""
    assert "[test] Task failed" in slack(note(failure(), kind="test"))["blocks"][0]["text"]["text"]


def test_limits_with_megabyte_exception():
    """A 1 MB exception message with lone surrogates still fits every Slack limit and encodes as UTF-8."""
    huge = ("é<&>\udcff" * 200_000) + "\ud800"
    alert = failure(exception_message=huge, title=huge, summary=huge, dag_id=huge[:2000], data={"traceback": huge})
    payload = slack(note(alert))
    json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert payload["blocks"][0]["text"]["text"].__len__() <= SLACK_LIMITS["header"]
    assert all(len(t) <= SLACK_LIMITS["text"] for t in texts(payload))
    subject, html, text = email(note(alert))
    (subject + html + text).encode("utf-8")
    assert len(html) < 100_000


def test_secrets_are_masked(monkeypatch):
    """Values Airflow's secrets masker knows are masked in messages."""
    from tasklens import events

    monkeypatch.setattr(
        events, "redact", lambda value: value.replace("hunter2", "***") if isinstance(value, str) else value
    )
    payload = slack(note(failure(exception_message="login failed for password hunter2")))
    assert "hunter2" not in json.dumps(payload)
    assert "hunter2" not in "".join(email(note(failure(exception_message="pw hunter2")))[1:])


def test_templates_dir_overrides_blocks(tmp_path):
    """A template in templates_dir overrides the built-in one; a block it lacks falls back to the built-in."""
    (tmp_path / "failure.j2").write_text("{% block headline %}BROKEN {{ alert.dag_id }} <b>{% endblock %}")
    payload = slack(note(failure(dag_id="a&b")), templates_dir=tmp_path)
    assert payload["blocks"][0]["text"]["text"].endswith("BROKEN a&amp;b <b>")  # template literals are the author's
    assert payload["blocks"][1]["text"]["text"] == "*ValueError*: boom"


def test_broken_override_falls_back_to_builtin(tmp_path, caplog):
    """An override that fails to render is logged and the built-in template is used."""
    (tmp_path / "failure.j2").write_text("{% block headline %}{{ alert.dag_id | nosuchfilter }}{% endblock %}")
    payload = slack(note(failure()), templates_dir=tmp_path)
    assert payload["blocks"][0]["text"]["text"].endswith("Task failed: etl.load")


def test_templates_dir_from_config(tmp_path, monkeypatch):
    """Without an explicit templates_dir the [tasklens] templates_dir setting is used."""
    from tasklens import config

    (tmp_path / "failure.j2").write_text("{% block headline %}From config{% endblock %}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__TEMPLATES_DIR", str(tmp_path))
    config.reset()
    try:
        payload = render_slack(note(failure()), base_url=BASE)
    finally:
        monkeypatch.delenv("AIRFLOW__TASKLENS__TEMPLATES_DIR")
        config.reset()
    assert payload["blocks"][0]["text"]["text"].endswith("From config")


def test_sandbox_blocks_unsafe_template_code(tmp_path):
    """Templates run sandboxed: reaching Python internals fails and the built-in template is used."""
    (tmp_path / "failure.j2").write_text(
        "{% block headline %}{{ alert.__class__.__mro__[1].__subclasses__() }}{% endblock %}"
    )
    payload = slack(note(failure()), templates_dir=tmp_path)
    assert "subclasses" not in json.dumps(payload)


def test_builtin_and_example_templates_exist_for_every_name():
    """Every template name is shipped built in and as a documented example in include/tasklens_templates."""
    for name in TEMPLATE_NAMES:
        assert (messages.BUILTIN_TEMPLATES_DIR / f"{name}.j2").is_file()
        assert (REPO / "include" / "tasklens_templates" / f"{name}.j2").is_file()
    assert (REPO / "include" / "tasklens_templates" / "README.md").is_file()


@pytest.mark.parametrize("kind", ["alert", "digest", "resolve", "escalation", "test"])
def test_example_templates_render(kind):
    """The example templates in include/tasklens_templates render every notification kind."""
    alerts = [
        failure(),
        custom_alert("Drift", "warning", "ml_model_drift", {"drift_score": 0.9}, None, RULESET),
        custom_alert("DQ", "warning", "data_quality", {"score": 90, "failed_checks": ["x"]}, None, RULESET),
    ]
    for alert in alerts:
        payload = slack(note(alert, kind=kind), templates_dir=REPO / "include" / "tasklens_templates")
        assert payload["blocks"][0]["text"]["text"].strip()
        subject, html, text = email(note(alert, kind=kind), templates_dir=REPO / "include" / "tasklens_templates")
        assert subject and html and text


def test_escape_and_truncate_helpers():
    """escape_mrkdwn escapes the three control characters; truncate marks the cut; mrkdwn cuts avoid entities."""
    assert escape_mrkdwn("a & <b> c") == "a &amp; &lt;b&gt; c"
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("x" * 50, 20) == "x" * 8 + "…[truncated]"
    assert truncate("x" * 50, 3) == "xxx"
    cut = truncate_mrkdwn("a" * 10 + "&amp;" * 10, 24)
    assert cut == "a" * 10 + "…[truncated]" and len(cut) <= 24
    assert truncate_mrkdwn("ab <http://x|y> cd", 16) == "ab …[truncated]"


def test_empty_notification():
    """A notification without items still renders a valid (generic) message."""
    payload = slack(Notification(kind="alert", channel="slack", items=()))
    assert payload["blocks"][0]["type"] == "header"
    assert email(Notification(kind="alert", channel="email", items=()))[0].startswith("[tasklens] INFO")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def test_unprintable_values_still_render():
    """Data whose ``__str__`` and ``__repr__`` raise (custom alert data, an exception object) still renders in Slack
    and email, shown as a stand-in."""
    alert = failure(kind=AlertKind.CUSTOM, data={"check": Unprintable(), "nested": {"deep": [Unprintable()]}})
    payload = slack(note(alert))
    _, html, text = email(note(alert))
    assert "check*: &lt;unprintable Unprintable&gt;" in payload["blocks"][1]["text"]["text"]
    assert "&lt;unprintable Unprintable&gt;" in html and "check: <unprintable Unprintable>" in text
    json.dumps(payload, ensure_ascii=False).encode("utf-8")


def test_traceback_in_email_keeps_its_raising_frames():
    """A traceback longer than the message limit shows its end (the raising frame and the exception), not its
    outermost frames."""
    outer = "".join(f'  File "/dags/etl.py", line {n}, in step_{n}\n    step_{n + 1}()\n' for n in range(200))
    traceback = f'Traceback (most recent call last):\n{outer}  File "/dags/etl.py", line 999, in load_orders\n' \
        "    raise ValueError('boom')\nValueError: boom\n"
    _, html, text = email(note(failure(data={"traceback": traceback})))
    for part in (html, text):
        assert "in load_orders" in part and "ValueError: boom" in part and "in step_199" in part
        assert "in step_0\n" not in part and "…[truncated]" in part

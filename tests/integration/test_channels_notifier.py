"""Any Airflow notifier as a channel, through the real outbox and Dispatcher: the Apprise provider's notifier and the
Slack provider's SlackWebhookNotifier against local servers, and notifiers that raise or do not render."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import BaseNotifier

from tasklens.testing import Reply, SlackSink
from tests.integration.channel_harness import Outbox

pytestmark = pytest.mark.integration

APPRISE = "airflow.providers.apprise.notifications.apprise.AppriseNotifier"
SLACK_WEBHOOK = "airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier"


class RaisingNotifier(BaseNotifier):
    """Fails like a provider whose service is down (its error quotes a webhook URL)."""

    template_fields = ("text",)

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.text = text

    def notify(self, context):
        raise ConnectionError("POST https://hooks.example.com/services/T000/B000/SECRETTOKEN failed")


class RecordingNotifier(BaseNotifier):
    """Records what each instance rendered and the context it got."""

    template_fields = ("text",)
    seen: list[tuple[int, str, dict]] = []

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def notify(self, context):
        RecordingNotifier.seen.append((id(self), self.text, context))


@pytest.fixture
def sink():
    with SlackSink() as server:
        yield server


def _outbox(tmp_path, class_path, kwargs):
    return Outbox(tmp_path, {"chat": ("notifier", {"options": {"class": class_path, "kwargs": kwargs}}),
                             "backup": ("webhook", {"conn_id": "backup_hook"})})


def test_apprise_notifier_delivers_the_rendered_title_and_text(tmp_path, sink, monkeypatch):
    """The Apprise provider's notifier, templated from the tasklens context, posts title and body through Apprise's
    json:// service to a local server; its own ``title`` field does not hide the context's rendered title."""
    monkeypatch.setenv("AIRFLOW_CONN_APPRISE_OPS", json.dumps(
        {"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{sink.port}/apprise"}}}))
    body = "{{ title }}: {{ text }} ({{ ti.dag_id }}.{{ ti.task_id }}, {{ tasklens.severity }})"
    kwargs = {"title": "{{ tasklens.title }}", "apprise_conn_id": "apprise_ops", "body": body}
    outbox = _outbox(tmp_path, APPRISE, kwargs)
    outbox.raise_alert("chat")
    report = outbox.dispatcher().run_once()
    outbox.close()
    assert report.deliveries_sent == 1 and not report.errors
    (message,) = sink.messages
    assert message["title"] == "Task failed: etl.load"
    assert message["message"].startswith("Task failed: etl.load: ValueError")
    assert message["message"].endswith("(etl.load, critical)")


def test_slack_webhook_notifier_500_is_retried_then_delivered(tmp_path, sink, monkeypatch):
    """SlackWebhookNotifier raises on Slack's 500: a failed, retryable delivery; the retry posts it."""
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_NOTIFIER", sink.conn_uri())
    sink.responses.append(Reply(500))
    outbox = _outbox(tmp_path, SLACK_WEBHOOK, {"slack_webhook_conn_id": "slack_notifier", "text": "{{ title }}"})
    outbox.raise_alert("chat")
    dispatcher = outbox.dispatcher()
    assert dispatcher.run_once().failed == 1
    dispatcher.drain()
    states = outbox.states("chat")
    outbox.close()
    assert states == ["sent"] and [m["text"] for m in sink.messages] == ["Task failed: etl.load"]


def test_a_raising_notifier_is_retried_then_the_fallback_gets_the_alert(tmp_path, monkeypatch):
    """A notifier that raises every time: retried (not lost, not inline in a task) until max_age, then dead and the
    fallback channel receives the alert; the URL's token from its error is not stored."""
    from tests.channel_servers import WebhookReceiver

    with WebhookReceiver(secret="backup-secret") as backup:
        monkeypatch.setenv("AIRFLOW_CONN_BACKUP_HOOK", backup.conn_json())
        outbox = _outbox(tmp_path, f"{__name__}.RaisingNotifier", {"text": "{{ title }}"})
        outbox.raise_alert("chat", fallback=("backup",))
        report = outbox.dispatcher(max_age_s=60).drain()
        error = outbox.store.list_alerts()[0]["last_error"]
        states = outbox.states("chat")
        outbox.close()
    assert report.failed >= 2 and states == ["dead"] and len(backup.deliveries) == 1
    assert "ConnectionError" in error and "SECRETTOKEN" not in error


def test_a_notifier_that_does_not_render_is_not_retried(tmp_path):
    """A template error in kwargs is configuration, not an outage: dead at once, with the fix in the error."""
    outbox = _outbox(tmp_path, f"{__name__}.RecordingNotifier", {"text": "{{ title | nosuchfilter }}"})
    outbox.raise_alert("chat")
    report = outbox.dispatcher().run_once()
    outbox.close()
    assert report.dead == 1 and "check kwargs" in report.errors[0]


def test_each_message_gets_a_fresh_notifier_and_its_own_context(tmp_path):
    """Rendering is in place, so every send builds a new instance: two alerts render two different texts."""
    RecordingNotifier.seen.clear()
    outbox = _outbox(tmp_path, f"{__name__}.RecordingNotifier", {"text": "{{ ti.task_id }}: {{ exception }}"})
    outbox.raise_alert("chat", task_id="a", run_id="r1", group_key="g1")
    outbox.raise_alert("chat", task_id="b", run_id="r2", group_key="g2")
    outbox.dispatcher().drain()
    outbox.close()
    (first_id, first, context), (second_id, second, _) = RecordingNotifier.seen
    assert (first, second) == ("a: boom", "b: boom") and first_id != second_id
    assert context["tasklens"]["alerts"][0]["task_id"] == "a" and context["ti"].run_id == "r1"


def test_an_unknown_class_is_not_retried(tmp_path):
    """A class path that does not import: dead at once, the error names the path and shows a correct one."""
    outbox = _outbox(tmp_path, "no.such.Notifier", {})
    outbox.raise_alert("chat")
    report = outbox.dispatcher().run_once()
    outbox.close()
    assert report.dead == 1 and "no.such.Notifier" in report.errors[0] and "SlackWebhookNotifier" in report.errors[0]

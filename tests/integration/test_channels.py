"""The Slack and email channels through the real provider hooks, against local Slack and SMTP sinks."""

from __future__ import annotations

import email.utils
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from tasklens.alerts import Notification
from tasklens.channels import build_channel
from tasklens.channels.slack import SlackChannel
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.exceptions import ConfigError, DeliveryError
from tasklens.store import Store
from tasklens.testing import Reply, SlackSink, SmtpSink
from tests.integration.secrets_backends import FlakySecretsBackend
from tests.unit.tasklens.test_store import FakeClock, make_alert, slack

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}")
    yield s
    s.dispose()


@pytest.fixture
def sink(monkeypatch):
    with SlackSink() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", server.conn_uri())
        yield server


@pytest.fixture
def smtp(monkeypatch):
    with SmtpSink() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", server.conn_json())
        yield server


def notification_for(store: Store, alert=None, kind: str = "alert", channel: str = "slack") -> Notification:
    result = store.record([(alert or make_alert(), [slack()])])
    snapshots = store.snapshots(result.alert_ids, base_url="http://airflow.example")
    return Notification(kind=kind, channel=channel, items=tuple(snapshots.values()))


def test_webhook_200_delivers_blocks_and_text(store, sink):
    """A slackwebhook connection posts the rendered message (text + blocks) once."""
    SlackChannel("slack").send(notification_for(store))
    (message,) = sink.messages
    assert "Task failed: etl.load" in message["text"] and message["blocks"]
    assert sink.paths == ["/services/T000/B000/XXX"]


def test_webhook_500_is_a_retryable_error_and_not_retried_by_slack_sdk(store, sink):
    """HTTP 500 maps to a retryable DeliveryError after exactly one request (the dispatcher owns retries)."""
    sink.responses.append(Reply(500))
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack").send(notification_for(store))
    assert caught.value.retryable and "500" in str(caught.value)
    assert len(sink.posts) == 1


def test_webhook_429_carries_retry_after(store, sink):
    """HTTP 429 maps to a retryable DeliveryError with the Retry-After seconds."""
    sink.responses.append(Reply(429, retry_after=7))
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack").send(notification_for(store))
    assert caught.value.retryable and caught.value.retry_after_s == 7.0


def test_webhook_404_is_not_retryable(store, sink):
    """A rejected webhook (HTTP 404/403) will not get better by retrying."""
    sink.responses.append(Reply(404, body="no_service"))
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack").send(notification_for(store))
    assert not caught.value.retryable and "no_service" in str(caught.value)


def test_connection_refused_is_retryable_and_hides_the_token(store, sink):
    """Slack down (closed port): a retryable error that names the host but not the webhook token."""
    sink.down()
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack").send(notification_for(store))
    assert caught.value.retryable and "Connection refused" in str(caught.value)
    assert "XXX" not in str(caught.value)


def test_slow_slack_times_out_with_the_configured_timeout(store, sink):
    """A Slack that does not answer within the timeout is a retryable timeout, not a hang."""
    sink.responses.append(Reply(200, delay_s=2.0))
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack").send(notification_for(store), timeout_s=0.3)
    assert caught.value.retryable and "timeout" in str(caught.value)


def test_missing_connection_says_how_to_fix_it(store, monkeypatch):
    """No connection: an error naming the connection id and the env var to set, retryable (Airflow reports a
    secrets backend outage exactly like a missing connection; the dispatcher falls back after max_age)."""
    monkeypatch.delenv("AIRFLOW_CONN_TASKLENS_MISSING", raising=False)
    with pytest.raises(DeliveryError) as caught:
        SlackChannel("slack", {"conn_id": "tasklens_missing"}).send(notification_for(store))
    assert caught.value.retryable and "AIRFLOW_CONN_TASKLENS_MISSING" in str(caught.value)


def test_bot_token_connection_uses_chat_post_message(store, monkeypatch):
    """A `slack` (bot token) connection posts through SlackHook's chat.postMessage to the channel option."""
    with SlackSink() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_BOT", server.bot_conn_uri())
        SlackChannel("ops", {"conn_id": "tasklens_bot", "channel": "#ops"}).send(notification_for(store))
        server.responses.append(Reply(429, retry_after=3))
        second = notification_for(store, make_alert(task_id="other"))
        with pytest.raises(DeliveryError) as caught:
            SlackChannel("ops", {"conn_id": "tasklens_bot", "channel": "#ops"}).send(second)
    assert server.paths[0] == "/api/chat.postMessage" and server.messages[0]["channel"] == "#ops"
    assert caught.value.retry_after_s == 3.0


def test_unknown_channel_type_is_a_config_error():
    """A channel type nobody registered fails with the fix."""
    with pytest.raises(ConfigError, match="unknown channel type"):
        build_channel("pager", "pagerdooty")


def test_email_sends_plain_text_and_html(store, smtp):
    """Email goes through SmtpHook to a plain local server as multipart/alternative (text, then HTML)."""
    channel = build_channel("email", "email", {"to": ["oncall@example.com"]})
    channel.send(notification_for(store, channel="email"))
    (message,) = smtp.wait_for(1)
    assert "etl" in message["Subject"] and message["To"] == "oncall@example.com"
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert "Task failed" in parts[0].get_payload(decode=True).decode()


def test_email_without_recipients_is_not_retryable(store, smtp):
    """An email channel without `to` fails at once with the fix."""
    with pytest.raises(DeliveryError, match="no recipients") as caught:
        build_channel("email", "email", {}).send(notification_for(store, channel="email"))
    assert not caught.value.retryable


def test_smtp_server_down_is_retryable(store, monkeypatch):
    """A closed SMTP port is a retryable DeliveryError."""
    with SmtpSink() as server:
        conn = server.conn_json()
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", conn)
    with pytest.raises(DeliveryError) as caught:
        build_channel("email", "email", {"to": "a@example.com"}).send(notification_for(store, channel="email"))
    assert caught.value.retryable


def test_exception_text_with_slack_control_sequences_arrives_escaped(tmp_path, sink):
    """Store -> dispatcher -> SlackWebhookHook: `<!channel>` in an exception reaches Slack escaped."""
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 'e.db'}", clock=clock)
    hostile = make_alert(exception_message="<!channel> <@U123> *bold* <http://evil|click>")
    store.record([(hostile, [slack()])])
    Dispatcher(store, clock=clock, channel_config=lambda name: ChannelConfig("slack", {})).run_once()
    (message,) = sink.messages
    raw = json.dumps(message)
    assert "<!channel>" not in raw and "<@U123>" not in raw and "<http://evil" not in raw
    assert "&lt;!channel&gt;" in raw
    store.dispose()


def test_dispatcher_honours_429_retry_after_from_real_slack_answers(tmp_path, sink):
    """A real 429 with Retry-After 5: the dispatcher waits 5 s (fake clock) before posting again."""
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", clock=clock)
    store.record([(make_alert(), [slack()])])
    sink.responses.append(Reply(429, retry_after=5))
    dispatcher = Dispatcher(
        store, clock=clock, settings=DispatcherSettings(backoff_jitter_s=0.0),
        channel_config=lambda name: ChannelConfig("slack", {}),
    )
    dispatcher.run_once()
    clock.advance(4.9)
    dispatcher.run_once()
    assert len(sink.posts) == 1
    clock.advance(0.1)
    dispatcher.run_once()
    assert sink.answers == [429, 200] and len(sink.messages) == 1
    store.dispose()


def _http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected_wait_s"),
    [("inf", 300.0), ("1e12", 300.0), ("-5", 2.0), ("in a minute", 2.0), ("HTTP-date in 120 s", 120.0)],
    ids=["inf", "1e12", "negative", "garbage", "http-date"],
)
def test_any_retry_after_from_slack_is_parsed_and_capped(tmp_path, sink, header, expected_wait_s):
    """A real 429 whose Retry-After is inf, 1e12, negative, garbage or an HTTP-date: the pass completes, the
    delivery waits the parsed value capped at backoff_max_s (300 s; else the 2 s backoff), then goes out."""
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 'retry_after.db'}", clock=clock)
    store.record([(make_alert(), [slack()])])
    if header.startswith("HTTP-date"):
        header = _http_date_in(120)
    sink.responses.append(Reply(429, retry_after=header))
    dispatcher = Dispatcher(
        store, clock=clock, settings=DispatcherSettings(backoff_jitter_s=0.0, backoff_max_s=300.0),
        channel_config=lambda name: ChannelConfig("slack", {}),
    )
    assert dispatcher.run_once().failed == 1
    (row,) = store.deliveries()
    waited = (row["next_attempt_at"] - clock.now).total_seconds()
    assert row["state"] == "failed" and row["claimed_by"] is None
    assert expected_wait_s - 5 <= waited <= expected_wait_s  # an HTTP-date has whole seconds, read a moment later
    clock.advance(waited)
    assert dispatcher.run_once().messages_sent == 1
    assert sink.answers == [429, 200]
    store.dispose()


@pytest.fixture
def flaky_secrets(monkeypatch):
    """Configure [secrets] backend = FlakySecretsBackend serving the given connections (first lookup fails)."""
    from airflow.sdk.configuration import clear_secrets_backends_cache

    def configure(connections: dict[str, str]) -> None:
        monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "tests.integration.secrets_backends.FlakySecretsBackend")
        monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"connections": connections, "failures": 1}))
        FlakySecretsBackend.lookups.clear()
        clear_secrets_backends_cache()

    yield configure
    clear_secrets_backends_cache()  # the next lookup, after monkeypatch's undo, builds the default backends


@pytest.mark.parametrize("channel_type", ["slack", "email"])
def test_a_secrets_backend_blip_is_retried_then_sent(tmp_path, flaky_secrets, channel_type):
    """The secrets backend fails the first connection lookup: the delivery is retried (not dead, not "no
    recipients" for email, whose recipients come from the connection) and sent on the next attempt."""
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 'secrets.db'}", clock=clock)
    with SlackSink() as slack_sink, SmtpSink() as smtp_sink:
        flaky_secrets({
            "tasklens_vault_slack": slack_sink.conn_uri(),
            "tasklens_vault_smtp": smtp_sink.conn_json(to="oncall@example.com"),
        })
        conn_id = f"tasklens_vault_{'slack' if channel_type == 'slack' else 'smtp'}"
        store.record([(make_alert(), [slack(channel=channel_type, channel_type=channel_type)])])
        dispatcher = Dispatcher(
            store, clock=clock, settings=DispatcherSettings(backoff_jitter_s=0.0),
            channel_config=lambda name: ChannelConfig(channel_type, {"conn_id": conn_id}),
        )
        first = dispatcher.run_once()
        assert (first.failed, first.dead) == (1, 0), first.errors
        assert "could not read" in store.deliveries()[0]["last_error"]
        assert store.list_alerts()[0]["undelivered"] is False
        clock.advance(2)
        assert dispatcher.run_once().messages_sent == 1
        delivered = slack_sink.messages if channel_type == "slack" else smtp_sink.wait_for(1)
    assert len(delivered) == 1 and store.deliveries()[0]["state"] == "sent"
    assert FlakySecretsBackend.lookups[conn_id] >= 2
    store.dispose()


WEBHOOK_SECRET = "SeCrEtWeBhOoK123"  # a made-up token the test looks for


@pytest.mark.parametrize(
    "connection",
    [
        # A space in the host: http.client.InvalidURL quotes the URL path, token included.
        {"conn_type": "slackwebhook", "host": "http://127.0.0.1:9/ser vices",
         "password": f"T0AAAA/B0BBBB/{WEBHOOK_SECRET}"},
        # A webhook URL with a non-HTTP scheme: slack_sdk's SlackRequestError quotes the whole URL.
        {"conn_type": "slackwebhook", "password": f"ftp://hooks.example.com/services/T0AAAA/B0BBBB/{WEBHOOK_SECRET}"},
    ],
    ids=["InvalidURL", "SlackRequestError"],
)
def test_no_webhook_token_in_errors_store_health_or_logs(tmp_path, monkeypatch, caplog, connection):
    """A malformed webhook connection fails with an error that names the problem but never the token: not in the
    report, the deliveries' and alert's last_error, the health numbers, nor any log line."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_LEAKY", json.dumps(connection))
    caplog.set_level(logging.DEBUG)
    store = Store(f"sqlite:///{tmp_path / 'leaky.db'}")
    store.record([(make_alert(), [slack()])])
    dispatcher = Dispatcher(store, channel_config=lambda name: ChannelConfig("slack", {"conn_id": "tasklens_leaky"}))
    report = dispatcher.run_once()
    outputs = {
        "report": json.dumps(report.errors),
        "deliveries": json.dumps(store.deliveries(), default=str),
        "alerts": json.dumps(store.list_alerts(), default=str),
        "health": json.dumps([store.outbox_stats(), dispatcher.last_error_by_channel]),
        "logs": caplog.text,
    }
    leaked = [name for name, text in outputs.items() if WEBHOOK_SECRET in text or "B0BBBB" in text]
    assert leaked == [], {name: outputs[name] for name in leaked}
    assert report.dead == 1 and "unusable webhook URL" in report.errors[0]
    store.dispose()

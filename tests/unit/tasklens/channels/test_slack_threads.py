"""An incident's later messages reply in the first message's Slack thread (bot-token connections), through the real
SlackHook against a local Slack Web API sink."""

from __future__ import annotations

import pytest

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels.slack import SlackChannel
from tasklens.testing import SlackSink
from tests.unit.tasklens.test_messages import failure as alert
from tests.unit.tasklens.test_messages import snapshot


@pytest.fixture
def sink(monkeypatch):
    with SlackSink() as running:
        monkeypatch.setenv("AIRFLOW_CONN_TL_BOT", running.bot_conn_uri())
        monkeypatch.setenv("AIRFLOW_CONN_TL_HOOK", running.conn_uri())
        config.reset()
        yield running
    config.reset()


def test_a_bot_token_send_returns_its_ts_and_a_threaded_send_replies_under_it(sink):
    """The first send returns where Slack put it (channel, ts); a notification with ``thread`` posts with that
    ``thread_ts``."""
    channel = SlackChannel("slack", {"conn_id": "tl_bot", "channel": "#alerts"})
    first = channel.send(Notification(kind="alert", channel="slack", items=(snapshot(alert(), id=1),)))
    assert first and first.ts and "thread_ts" not in sink.messages[-1]
    channel.send(Notification(kind="alert", channel="slack", items=(snapshot(alert(), id=2),), thread=first.ts))
    assert sink.messages[-1]["thread_ts"] == first.ts


def test_a_webhook_send_returns_no_ts(sink):
    """Incoming webhooks answer "ok": nothing to thread under, the update is a short follow-up."""
    channel = SlackChannel("slack", {"conn_id": "tl_hook"})
    assert channel.send(Notification(kind="alert", channel="slack", items=(snapshot(alert(), id=1),))) is None

"""At-least-once delivery: a dispatcher process SIGKILLed between a channel's "accepted" and its mark makes the
next dispatcher send that message again, once, with the same idempotency key (email Message-ID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.store import Store
from tasklens.testing import SlackSink, SmtpSink
from tests.conftest import REPO
from tests.unit.tasklens.test_store import make_alert, slack

pytestmark = pytest.mark.integration

SETTINGS = DispatcherSettings(lease_s=1.0, timeout_s=2.0)

# A real dispatcher process with the real channels; the one named on the command line SIGKILLs the process right
# after it accepted a message, before the dispatcher could mark it sent.
KILLED_DISPATCHER = """
import os, signal, sys
from tasklens.channels import build_channel
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.store import Store

url, kill_after = sys.argv[1], sys.argv[2]

def channel_config(name):
    return ChannelConfig(type=name, options={"to": ["oncall@example.com"]} if name == "email" else {}, rate_per_s=0.0)

class KillAfterSend:
    def __init__(self, name, channel_type, options):
        self.name, self.channel = name, build_channel(name, channel_type, options)

    def send(self, notification, *, timeout_s=None):
        self.channel.send(notification, timeout_s=timeout_s)
        if self.name == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

settings = DispatcherSettings(lease_s=1.0, timeout_s=2.0)
Dispatcher(Store(url, migrate=False), settings=settings, channel_config=channel_config,
           channel_factory=KillAfterSend).run_once()
"""


def channel_config(name: str) -> ChannelConfig:
    return ChannelConfig(type=name, options={"to": ["oncall@example.com"]} if name == "email" else {}, rate_per_s=0.0)


@pytest.mark.parametrize("killed_after", ["slack", "email"])
def test_a_dispatcher_killed_between_send_and_mark_duplicates_at_most_once(tmp_path, monkeypatch, killed_after):
    """One alert to Slack and email; the dispatcher process is SIGKILLed right after one channel accepted it. The
    next dispatcher sends that message once more after the dead one's lease ran out (one duplicate, never more),
    the other channel's message once; both emails carry the same Message-ID."""
    with SlackSink() as slack_sink, SmtpSink() as smtp_sink:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", slack_sink.conn_uri())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp_sink.conn_json())
        url = f"sqlite:///{tmp_path / 'guarantee.db'}"
        store = Store(url)
        store.record([(make_alert(), [slack(), slack(channel="email", channel_type="email")])])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("plugins", "include", "."))}
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_DISPATCHER, url, killed_after],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        (unmarked,) = [d for d in store.deliveries() if d["channel"] == killed_after]
        assert unmarked["state"] == "pending" and unmarked["claimed_by"] is not None  # until the lease ends

        survivor = Dispatcher(store, settings=SETTINGS, channel_config=channel_config)
        deadline = time.monotonic() + 60
        while store.next_due() is not None and time.monotonic() < deadline:
            survivor.run_once()
            time.sleep(0.2)

        delivered = {"slack": len(slack_sink.messages), "email": len(smtp_sink.messages)}
        message_ids = {m["Message-ID"] for m in smtp_sink.messages}
    expected = {"slack": 1, "email": 1, killed_after: 2}
    assert delivered == expected
    assert len(message_ids) == 1 and None not in message_ids
    assert [d["state"] for d in store.deliveries()] == ["sent", "sent"]
    store.dispose()

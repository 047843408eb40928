"""Hostile exception text from the store to real channels: the Slack webhook (local HTTP sink) and email (aiosmtpd).

Lone surrogates (``'\\ud800'``), undecodable bytes decoded with ``surrogateescape``, NULs and a 1 MB message reach
both channels replaced (U+FFFD), as valid UTF-8, within the channels' limits; nothing is lost on the way.
"""

from __future__ import annotations

import json

import pytest

from tasklens.dispatch import ChannelConfig, Dispatcher
from tasklens.events import from_task_instance
from tasklens.rules import evaluate_event
from tasklens.ruleset import load_ruleset
from tasklens.store import Store
from tasklens.testing import SlackSink, SmtpSink
from tests.unit.tasklens.test_events import RuntimeTaskInstance
from tests.unit.tasklens.test_store import FakeClock, slack

pytestmark = pytest.mark.integration

UNDECODABLE = b"\xff\xfe".decode("utf-8", errors="surrogateescape")


class HostileError(Exception):
    """A task's exception: its message carries lone surrogates, undecodable bytes and a NUL."""


def _failure_alert():
    """The alert the real failure rule raises for a task whose exception message is 1 MB of hostile text."""
    try:
        raise HostileError(f"bad {UNDECODABLE} \ud800 nul\x00 " + "x" * 1_000_000)
    except HostileError as exc:
        event = from_task_instance("failed", RuntimeTaskInstance(max_tries=0), error=exc)
    (alert,) = evaluate_event(event, load_ruleset(None, slack_conn_id="tasklens_slack", smtp_conn_id="tasklens_smtp"))
    return alert


def test_hostile_exception_text_reaches_slack_and_email_replaced(tmp_path, monkeypatch):
    """One hostile failure is stored, then the dispatcher posts it to Slack (a JSON body that is valid UTF-8, every
    text within Slack's limit) and mails it through aiosmtpd (text and HTML parts valid UTF-8): U+FFFD where the
    surrogates were, the traceback's raising frame in the mail."""
    clock = FakeClock()
    store = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    store.record([(_failure_alert(), [slack(), slack(channel="email", channel_type="email")])])
    configs = {"slack": ChannelConfig("slack", {}), "email": ChannelConfig("email", {"to": ["oncall@example.com"]})}
    with SlackSink() as sink, SmtpSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", sink.conn_uri())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp.conn_json())
        report = Dispatcher(store, clock=clock, channel_config=configs.get).run_once()
        mails = smtp.wait_for(1)
    store.dispose()
    assert report.deliveries_sent == 2 and not report.errors, report

    (message,) = sink.messages  # the sink parsed the body as strict UTF-8 JSON
    raw = json.dumps(message, ensure_ascii=False)
    raw.encode("utf-8")
    assert "bad \ufffd\ufffd \ufffd nul xxx" in raw and "HostileError" in raw
    assert all(len(block.get("text", {}).get("text", "")) <= 3000 for block in message["blocks"])

    (mail,) = mails
    text_part, html_part = mail.get_payload()
    text = text_part.get_payload(decode=True).decode("utf-8")  # strict
    html = html_part.get_payload(decode=True).decode("utf-8")
    for body in (text, html):
        assert "bad \ufffd\ufffd \ufffd nul xxx" in body
        assert "in _failure_alert" in body and "HostileError: bad" in body  # the traceback's frame survived
    assert "\x00" not in text + html and len(html) < 100_000

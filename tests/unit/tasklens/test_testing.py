"""tasklens.testing: the helpers users' own tests import, and `from tasklens import *`."""

from __future__ import annotations

import json
import smtplib
from email.message import EmailMessage

import tasklens
from tasklens import pipeline
from tasklens.testing import SmtpSink, capture_alerts, capture_events, failed_event, success_event


def test_star_import_gives_every_public_name():
    """`from tasklens import *` works: every name in tasklens.__all__ resolves (tasklens.testing included)."""
    namespace: dict[str, object] = {}
    exec("from tasklens import *", namespace)
    assert set(tasklens.__all__) <= set(namespace)


def test_capture_events_and_alerts_see_a_failure_without_a_store():
    """A failed event passes through handle() into capture_events, and its alert into capture_alerts (no store)."""
    with capture_events() as seen, capture_alerts() as alerts:
        pipeline.handle(failed_event(dag_id="sales", task_id="load", source="worker"))
    assert [event.event for event in seen] == ["failed"]
    assert len(alerts) == 1 and "sales" in repr(alerts[0])


def test_capture_events_restores_handle():
    """Leaving the block puts the real pipeline.handle back."""
    original = pipeline.handle
    with capture_events():
        assert pipeline.handle is not original
    assert pipeline.handle is original and success_event().event == "success"


def test_smtp_sink_collects_what_a_real_smtp_client_sends():
    """SmtpSink is a real SMTP server on 127.0.0.1; its connection JSON points Airflow's SMTP hook at it (plain)."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "tasklens@example.com", "oncall@example.com", "task failed"
    message.set_content("etl.load failed")
    with SmtpSink() as smtp:
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
            client.send_message(message)
        (received,) = smtp.wait_for(1)
        connection = json.loads(smtp.conn_json())
    assert received["Subject"] == "task failed" and received.get_payload().strip() == "etl.load failed"
    assert [e.rcpt_tos for e in smtp.envelopes] == [["oncall@example.com"]]
    assert (connection["host"], connection["port"]) == ("127.0.0.1", smtp.port)
    assert connection["extra"]["disable_ssl"] is True and connection["extra"]["disable_tls"] is True

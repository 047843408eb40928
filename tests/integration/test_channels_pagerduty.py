"""The PagerDuty channel through the real outbox and Dispatcher against a local Events API v2 server: dedup_key is
the fingerprint, one event per alert, trigger/acknowledge/resolve mirrored, the routing key never in errors."""

from __future__ import annotations

import json

import pytest

from tasklens.__main__ import main
from tasklens.alerts import Severity
from tests.channel_servers import PagerDutyServer, Reply
from tests.integration.channel_harness import Outbox
from tests.unit.tasklens.test_store import resolve_of

pytestmark = pytest.mark.integration


@pytest.fixture
def pd(monkeypatch):
    with PagerDutyServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY", server.conn_json())
        yield server


@pytest.fixture
def outbox(tmp_path, pd):
    box = Outbox(tmp_path, {"pd": ("pagerduty", {"options": {"host": pd.url, "source": "airflow-prod"}})})
    yield box
    box.close()


def test_trigger_carries_the_fingerprint_severity_and_links(outbox, pd):
    """An alert is a trigger event: dedup_key = fingerprint, severity as in tasklens, summary, source, details,
    links to the tasklens alert and the task log."""
    alert = outbox.raise_alert("pd", severity=Severity.WARNING, log_url="http://airflow.example/log/1")
    outbox.dispatcher().run_once()
    (event,) = pd.events
    assert event["event_action"] == "trigger" and event["dedup_key"] == alert.fingerprint
    assert event["routing_key"] == pd.routing_key
    payload = event["payload"]
    assert payload["severity"] == "warning" and payload["source"] == "airflow-prod"
    assert payload["summary"].startswith("Task failed: etl.load")
    assert payload["group"] == "etl" and payload["component"] == "load" and payload["class"] == "task_failed"
    assert payload["custom_details"]["run_id"] == "run1"
    assert {link["text"] for link in event["links"]} == {"Open in tasklens", "Task log"}
    assert pd.alerts == {alert.fingerprint: "triggered"}


def test_a_digest_is_one_trigger_per_alert(outbox, pd):
    """Three alerts of one group (a Slack digest) are three trigger events with three dedup keys, each its own
    message in the outbox."""
    alerts = [outbox.raise_alert("pd", task_id=t) for t in ("a", "b", "c")]
    report = outbox.dispatcher().drain()
    assert report.messages_sent == 3 and report.deliveries_sent == 3
    assert [e["dedup_key"] for e in pd.triggers()] == [a.fingerprint for a in alerts]


def test_resolve_in_tasklens_resolves_in_pagerduty(outbox, pd):
    """The task recovers: tasklens resolves the alert and PagerDuty gets resolve with the same dedup_key."""
    alert = outbox.raise_alert("pd")
    dispatcher = outbox.dispatcher()
    dispatcher.run_once()
    outbox.store.record([(resolve_of(alert), [])])
    dispatcher.drain()
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
    assert pd.events[1]["dedup_key"] == alert.fingerprint and pd.alerts[alert.fingerprint] == "resolved"


def test_acknowledge_in_tasklens_acknowledges_in_pagerduty(outbox, pd):
    """An ``ack`` delivery (queued when the UI acknowledges) is an acknowledge event with the alert's dedup_key."""
    alert = outbox.raise_alert("pd")
    dispatcher = outbox.dispatcher()
    dispatcher.run_once()
    assert outbox.acknowledge(outbox.alert_id())
    assert dispatcher.run_once().deliveries_sent == 1
    assert pd.events[-1] == {"routing_key": pd.routing_key, "event_action": "acknowledge",
                             "dedup_key": alert.fingerprint}
    assert pd.alerts[alert.fingerprint] == "acknowledged"


def test_a_400_invalid_event_is_not_retried_and_hides_the_routing_key(outbox, pd, monkeypatch):
    """A wrong routing key: PagerDuty answers 400; the delivery is dead at once and no error text holds the key."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY",
                       json.dumps({"conn_type": "pagerduty_events", "password": "WR0NGKEY00000000"}))
    outbox.raise_alert("pd")
    report = outbox.dispatcher().run_once()
    assert report.dead == 1 and pd.answers == [400]
    error = outbox.store.list_alerts()[0]["last_error"]
    assert "400" in error and "WR0NGKEY" not in error and "WR0NGKEY" not in " ".join(report.errors)


def test_a_connection_without_a_key_says_how_to_fix_it(outbox, pd, monkeypatch):
    """No integration key in the connection: not retried, and the error says where the key goes."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY", json.dumps({"conn_type": "pagerduty_events"}))
    outbox.raise_alert("pd")
    report = outbox.dispatcher().run_once()
    assert report.dead == 1 and not pd.requests
    assert "integration key" in report.errors[0]


def test_storm_under_429_and_500_loses_nothing_and_sends_one_trigger_per_alert(outbox, pd):
    """40 alerts while PagerDuty answers 429/500 to a third of the events: every alert triggers exactly once
    (accepted), none is lost, no event is accepted twice."""
    pd.fail_ratio = 0.35
    pd.fail_replies = [Reply(429, retry_after=2), Reply(500)]
    alerts = [outbox.raise_alert("pd", task_id=f"t{i}") for i in range(40)]
    outbox.dispatcher().drain()
    keys = [e["dedup_key"] for e in pd.triggers()]
    assert sorted(keys) == sorted(a.fingerprint for a in alerts) and len(set(keys)) == 40
    assert 429 in pd.answers and 500 in pd.answers
    assert set(outbox.states("pd")) == {"sent"}


def test_test_alert_triggers_then_resolves(pd, monkeypatch, tmp_path, capsys):
    """``tasklens test-alert --channel pagerduty`` triggers a test event and resolves it at once."""
    rules = tmp_path / "rules.yml"
    rules.write_text(f"channels:\n  pagerduty:\n    type: pagerduty\n    host: {pd.url}\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    from tasklens import config

    config.reset()
    try:
        assert main(["test-alert", "--channel", "pagerduty"]) == 0
    finally:
        config.reset()
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
    assert pd.events[0]["payload"]["severity"] == "info" and "sent a test message" in capsys.readouterr().out

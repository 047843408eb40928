"""Every HTTP channel type (PagerDuty, Opsgenie, Teams, webhook) through the real outbox and Dispatcher against a
local server speaking that API: delivered; 429 + Retry-After honoured; 5xx retried until it succeeds; a 4xx kills
the delivery and the route's fallback channel gets the alert."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from tests.channel_servers import OpsgenieServer, PagerDutyServer, Reply, TeamsServer, WebhookReceiver
from tests.integration.channel_harness import Outbox

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class Target:
    name: str
    type: str
    server: Any
    options: dict[str, Any]
    accepted: Callable[[], int]  # messages the service showed
    rejection: Reply  # a 4xx the real API answers to a bad request


def _pagerduty(monkeypatch) -> Target:
    server = PagerDutyServer().__enter__()
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY", server.conn_json())
    return Target("pd", "pagerduty", server, {"host": server.url}, lambda: len(server.events),
                  Reply(400, body='{"status": "invalid event", "errors": ["\'routing_key\' is invalid"]}'))


def _opsgenie(monkeypatch) -> Target:
    server = OpsgenieServer().__enter__()
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_OPSGENIE", server.conn_json())
    return Target("og", "opsgenie", server, {}, lambda: len(server.actions),
                  Reply(422, body='{"message": "Request body is not processable"}'))


def _teams(monkeypatch) -> Target:
    server = TeamsServer().__enter__()
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS", server.conn_json())
    return Target("teams", "teams", server, {}, lambda: len(server.cards),
                  Reply(400, body='{"error": {"code": "InvalidRequestContent"}}'))


def _webhook(monkeypatch) -> Target:
    server = WebhookReceiver().__enter__()
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_WEBHOOK", server.conn_json())
    return Target("hook", "webhook", server, {}, lambda: len(server.deliveries),
                  Reply(404, body='{"error": "no such hook"}'))


@pytest.fixture(params=[_pagerduty, _opsgenie, _teams, _webhook], ids=["pagerduty", "opsgenie", "teams", "webhook"])
def target(request, monkeypatch):
    made = request.param(monkeypatch)
    yield made
    made.server.__exit__(None, None, None)


@pytest.fixture
def backup(monkeypatch):
    """The fallback channel: a webhook receiver of its own."""
    with WebhookReceiver(secret="backup-secret") as server:
        monkeypatch.setenv("AIRFLOW_CONN_BACKUP_HOOK", server.conn_json())
        yield server


@pytest.fixture
def outbox(tmp_path, target):
    box = Outbox(tmp_path, {target.name: (target.type, target.options),
                            "backup": ("webhook", {"conn_id": "backup_hook"})})
    yield box
    box.close()


def test_an_alert_is_delivered(outbox, target):
    """One alert in the outbox: one message accepted by the service, the delivery marked sent."""
    outbox.raise_alert(target.name)
    report = outbox.dispatcher().run_once()
    assert report.deliveries_sent == 1 and not report.errors, report.errors
    assert target.accepted() == 1 and outbox.states(target.name) == ["sent"]


def test_429_retry_after_is_honoured(outbox, target):
    """A 429 with Retry-After 30: no request before 30 s have passed (fake clock), then the alert goes out once."""
    target.server.responses.append(Reply(429, retry_after=30))
    outbox.raise_alert(target.name)
    dispatcher = outbox.dispatcher()
    assert dispatcher.run_once().failed == 1
    outbox.clock.advance(29)
    dispatcher.run_once()
    assert len(target.server.requests) == 1 and target.accepted() == 0
    outbox.clock.advance(1)
    assert dispatcher.run_once().deliveries_sent == 1
    assert target.server.answers == [429, target.server.answers[-1]] and target.accepted() == 1


def test_5xx_is_retried_until_it_succeeds(outbox, target):
    """Two 5xx answers, then the real one: the dispatcher retries with backoff and the alert arrives once."""
    target.server.responses.extend([Reply(500), Reply(503)])
    outbox.raise_alert(target.name)
    outbox.dispatcher().drain()
    assert target.server.answers[:2] == [500, 503] and target.accepted() == 1
    assert outbox.states(target.name) == ["sent"]


def test_4xx_is_dead_and_the_fallback_channel_gets_the_alert(outbox, target, backup):
    """A 4xx is not retried: the delivery is dead at once, the alert flagged undelivered, and the route's fallback
    channel (a webhook) receives it."""
    target.server.responses.append(target.rejection)
    outbox.raise_alert(target.name, fallback=("backup",))
    outbox.dispatcher().drain()
    assert len(target.server.requests) == 1 and target.accepted() == 0
    assert outbox.states(target.name) == ["dead"]
    ((_, body),) = backup.deliveries
    assert body["items"][0]["title"] == "Task failed: etl.load"
    alert = outbox.store.list_alerts()[0]
    assert alert["undelivered"] is True and str(target.rejection.status) in alert["last_error"]


def test_an_ack_to_a_type_that_does_not_mirror_it_is_cancelled_not_sent(tmp_path, monkeypatch):
    """Teams (like Slack and email) has nothing to acknowledge: an ``ack`` delivery queued for it is cancelled, and
    no card that would look like a new alert is posted."""
    with TeamsServer() as teams:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS", teams.conn_json())
        box = Outbox(tmp_path, {"teams": ("teams", {})})
        box.raise_alert("teams")
        dispatcher = box.dispatcher()
        dispatcher.run_once()
        box.queue_ack(box.alert_id(), "teams")
        report = dispatcher.run_once()
        states = box.states("teams")
        box.close()
    assert report.cancelled == 1 and report.messages_sent == 0 and len(teams.cards) == 1
    assert states == ["sent", "dead"]

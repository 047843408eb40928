"""A Slack message follows what was done elsewhere: acknowledged or muted in the Alerts UI, acknowledged in PagerDuty
or Opsgenie, resolved anywhere. Through the Alerts API (or the incident tools' webhook handler), the store, the
real dispatcher and ``SlackChannel`` against a local Slack Web API (tests/channel_servers.py ``SlackApiServer``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasklens import config, incident_store
from tasklens.dispatch import Dispatcher, DispatcherSettings
from tasklens.store import Store
from tasklens.ui import incident_webhooks, message_sync
from tests.channel_servers import SlackApiServer
from tests.unit.tasklens.test_incidents import db_down, record
from tests.unit.tasklens.ui.test_app import auth_manager, bearer, client, seed, store  # noqa: F401 - fixtures


@pytest.fixture
def slack_api(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackApiServer]:  # noqa: F811
    rules = tmp_path / "rules.yml"
    rules.write_text('channels:\n  slack: {type: slack, conn_id: tl_bot, channel: "#alerts"}\n')
    with SlackApiServer() as server:
        monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
        monkeypatch.setenv("AIRFLOW_CONN_TL_BOT", server.conn_json())
        config.reset()
        yield server
    config.reset()


def posted(store: Store, server: SlackApiServer, **alert: object) -> tuple[int, str]:  # noqa: F811 - the fixture
    """An alert, sent to Slack by the real dispatcher: its id and its message's ts."""
    alert_id = seed(store, **alert)  # type: ignore[arg-type]
    Dispatcher(store, settings=DispatcherSettings(backoff_jitter_s=0.0), rng=random.Random(0),
               base_url="http://airflow").drain()
    (ts,) = [ts for ts, message in server.messages.items() if str(alert_id) in str(message["blocks"])]
    return alert_id, ts


def buttons(message: dict) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
            if not e["action_id"].startswith(("tasklens-log", "tasklens-alert"))]


def test_ack_and_mute_in_the_alerts_ui_redraw_the_slack_message(
    client: TestClient, store: Store, slack_api: SlackApiServer  # noqa: F811 - the fixtures
) -> None:
    """Acknowledge in the UI: the message says who, shows the status and keeps Mute and Resolve; mute: only Resolve
    is left; resolve: the dispatcher's resolve notice replaces it, no buttons, no new message."""
    alert_id, ts = posted(store, slack_api)
    assert buttons(slack_api.messages[ts]) == ["tasklens-ack", "tasklens-mute-1h", "tasklens-resolve"]

    assert client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("admin")).status_code == 200
    message = slack_api.messages[ts]
    assert "*Acknowledged* by admin" in str(message["blocks"]) and "Acknowledged" in str(message["blocks"])
    assert buttons(message) == ["tasklens-mute-1h", "tasklens-resolve"]

    body = {"duration_minutes": 30}
    assert client.post(f"/tasklens/api/alerts/{alert_id}/mute", json=body, headers=bearer("admin")).status_code == 200
    assert "*Muted* until" in str(slack_api.messages[ts]["blocks"])
    assert buttons(slack_api.messages[ts]) == ["tasklens-resolve"]

    assert client.post(f"/tasklens/api/alerts/{alert_id}/resolve", json={}, headers=bearer("admin")).status_code == 200
    Dispatcher(store, settings=DispatcherSettings(backoff_jitter_s=0.0), base_url="http://airflow").drain()
    assert list(slack_api.messages) == [ts]
    assert slack_api.messages[ts]["text"].startswith(":white_check_mark: Resolved:")
    assert buttons(slack_api.messages[ts]) == []


@pytest.mark.parametrize(("tool", "who"), [("pagerduty", "Ada (PagerDuty)"), ("opsgenie", "Grace (Opsgenie)")])
def test_an_ack_in_an_incident_tool_redraws_the_slack_message(
    store: Store, slack_api: SlackApiServer, tool: str, who: str  # noqa: F811 - the fixture
) -> None:
    """PagerDuty's or Opsgenie's acknowledgement (their webhook's handler) shows in Slack with who did it."""
    _, ts = posted(store, slack_api, fingerprint="fp-tool")
    assert incident_webhooks.apply(tool, "fp-tool", "acknowledge", who.split()[0]) == "acknowledged"
    assert f"*Acknowledged* by {who}" in str(slack_api.messages[ts]["blocks"])
    assert buttons(slack_api.messages[ts]) == ["tasklens-mute-1h", "tasklens-resolve"]
    assert len(slack_api.messages) == 1


def test_a_deleted_message_is_left_alone(
    client: TestClient, store: Store, slack_api: SlackApiServer  # noqa: F811 - the fixtures
) -> None:
    """The message was deleted in Slack: the acknowledgement stands and nothing is posted in its place."""
    alert_id, ts = posted(store, slack_api)
    del slack_api.messages[ts]
    assert client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("admin")).status_code == 200
    assert store.get_alert(alert_id)["status"] == "acknowledged" and slack_api.messages == {}


def test_an_incident_acknowledged_in_the_incidents_view_says_so_in_its_slack_message(
    client: TestClient, store: Store, slack_api: SlackApiServer  # noqa: F811 - the fixtures
) -> None:
    """The incident's one Slack message is redrawn with who acknowledged it (still listing its members); nothing is
    posted."""
    record(store, db_down("dag_a", "load"), db_down("dag_b", "load"))
    Dispatcher(store, settings=DispatcherSettings(backoff_jitter_s=0.0), base_url="http://airflow").drain()
    (ts,) = slack_api.messages
    (incident,) = incident_store.list_incidents(store)
    answer = client.post(f"/tasklens/api/incidents/{incident.id}/ack", json={}, headers=bearer("admin"))
    assert answer.status_code == 200
    text = str(slack_api.messages[ts])
    assert "Acknowledged by admin." in text and "2 tasks in 2 DAGs" in text
    assert "dag_a.load" in text and "dag_b.load" in text and list(slack_api.messages) == [ts]


def test_redrawing_stops_when_the_action_s_time_budget_is_spent(
    client: TestClient, store: Store, slack_api: SlackApiServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The person who clicked waits for the redraws: once TOTAL_BUDGET_S is spent (here: none at all) no further
    message is redrawn, and the acknowledgement still stands."""
    monkeypatch.setattr(message_sync, "TOTAL_BUDGET_S", 0.0)
    alert_id, ts = posted(store, slack_api)
    assert client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("admin")).status_code == 200
    assert store.get_alert(alert_id)["status"] == "acknowledged"
    assert buttons(slack_api.messages[ts]) == ["tasklens-ack", "tasklens-mute-1h", "tasklens-resolve"]

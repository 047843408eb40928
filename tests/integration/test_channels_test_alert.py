"""``tasklens test-alert --channel <name>`` for every new channel type, configured in a rules file, against local
servers: exit 0 and the service shows the test message (incident tools: triggered and resolved at once)."""

from __future__ import annotations

import pytest

from tasklens import config
from tasklens.__main__ import main
from tasklens.testing import SlackSink
from tests.channel_servers import OpsgenieServer, PagerDutyServer, TeamsServer, WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def servers(monkeypatch, tmp_path):
    with PagerDutyServer() as pd, OpsgenieServer() as og, TeamsServer() as teams, WebhookReceiver() as hook, \
            SlackSink() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_PAGERDUTY", pd.conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_OPSGENIE", og.conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS", teams.conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_WEBHOOK", hook.conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_NOTIFIER_SLACK", slack.conn_uri())
        rules = tmp_path / "rules.yml"
        rules.write_text(
            "channels:\n"
            f"  pager:\n    type: pagerduty\n    host: {pd.url}\n"
            "  genie:\n    type: opsgenie\n"
            "  teams:\n    type: teams\n"
            "  hook:\n    type: webhook\n"
            "  chat:\n    type: notifier\n"
            "    class: airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier\n"
            "    kwargs: {slack_webhook_conn_id: notifier_slack, text: '{{ title }}'}\n"
        )
        monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
        config.reset()
        yield {"pager": pd, "genie": og, "teams": teams, "hook": hook, "chat": slack}
        config.reset()


@pytest.mark.parametrize("channel", ["pager", "genie", "teams", "hook", "chat"])
def test_test_alert_reaches_every_channel_type(servers, channel, capsys):
    """test-alert sends one test message through the channel's real code path and exits 0."""
    assert main(["test-alert", "--channel", channel]) == 0
    assert "sent a test message" in capsys.readouterr().out
    server = servers[channel]
    if channel == "pager":
        assert [e["event_action"] for e in server.events] == ["trigger", "resolve"]
    elif channel == "genie":
        assert [action for action, _ in server.actions] == ["create", "close"]
    elif channel == "teams":
        assert "\\[test\\] tasklens test message" in server.cards[0]["body"][0]["text"]
    elif channel == "hook":
        assert server.deliveries[0][1]["kind"] == "test"
    else:
        assert server.messages[0]["text"].startswith("[test]")


def test_test_alert_failure_exits_1_without_the_secret(servers, monkeypatch, capsys):
    """A Teams URL with a wrong signature: exit 1, what went wrong, and no part of the URL's secret."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_TEAMS",
                       f'{{"conn_type": "http", "password": "{servers["teams"].url}/x?sig=WR0NGSIG"}}')
    assert main(["test-alert", "--channel", "teams"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "401" in out and "WR0NGSIG" not in out

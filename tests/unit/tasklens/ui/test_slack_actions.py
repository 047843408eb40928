"""Which Airflow user a Slack user acts as, with Airflow's real SimpleAuthManager (it has no emails)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

from tasklens.channels.slack import ACTION_MUTE, ACTION_RESOLVE, action_buttons
from tasklens.ui import slack_actions


@pytest.fixture
def simple_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "ada:user,bob@example.com:viewer")
    manager = SimpleAuthManager()
    monkeypatch.setattr(slack_actions, "_auth_manager", lambda: manager)


def test_the_connections_airflow_users_map_comes_first(simple_auth: None) -> None:
    """``airflow_users`` maps an email to a username (emails compared case-insensitively)."""
    user = slack_actions.airflow_user_for_email("Ada@Example.com", {"ada@example.com": "ada"})
    assert (user.username, user.role) == ("ada", "user")


def test_simple_auth_manager_matches_only_a_user_named_by_the_email(simple_auth: None) -> None:
    """Without a mapping, SimpleAuthManager's only match is a user whose name is the email; anyone else is nobody."""
    assert slack_actions.airflow_user_for_email("bob@example.com").username == "bob@example.com"
    assert slack_actions.airflow_user_for_email("ada@example.com") is None
    assert slack_actions.airflow_user_for_email("ada@example.com", {"ada@example.com": "nobody"}) is None


def test_the_updated_message_says_who_and_keeps_the_useful_buttons() -> None:
    """After Mute, only Resolve is left next to the link buttons, and a line says who muted, escaped for Slack."""
    message = {
        "text": "t",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Task failed"}},
            {"type": "actions", "elements": [*action_buttons(5, "open"),
                                             {"type": "button", "url": "http://x", "action_id": "tasklens-log-0"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "tasklens"}]},
        ],
    }
    updated = slack_actions.updated_message(message, ACTION_MUTE, 5, "<!channel> eve",
                                            datetime(2026, 1, 1, 9, 30, tzinfo=timezone.utc))
    actions = updated["blocks"][1]["elements"]
    assert [e["action_id"] for e in actions] == [ACTION_RESOLVE, "tasklens-log-0"]
    note = updated["blocks"][2]["elements"][0]["text"]
    assert "*Muted for 1 h* by &lt;!channel&gt; eve via Slack · 2026-01-01 09:30 UTC" in note
    assert updated["blocks"][3]["type"] == "context"
    resolved = slack_actions.updated_message(message, ACTION_RESOLVE, 5, "eve", datetime.now(timezone.utc))
    assert [e["action_id"] for b in resolved["blocks"] if b["type"] == "actions" for e in b["elements"]] == [
        "tasklens-log-0"]

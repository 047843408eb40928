"""The Acknowledge / Mute 1 h / Resolve buttons a bot-token Slack message carries."""

from __future__ import annotations

from tasklens.alerts import AlertSnapshot, Notification, Status
from tasklens.channels.slack import ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE, with_action_buttons
from tasklens.messages import render_slack
from tests.unit.tasklens.test_messages import failure as alert
from tests.unit.tasklens.test_messages import snapshot


def _note(*items: AlertSnapshot, kind: str = "alert") -> Notification:
    return Notification(kind=kind, channel="slack", items=items)


def _actions(body: dict) -> list[dict]:
    return [element for block in body["blocks"] if block["type"] == "actions" for element in block["elements"]]


def test_an_open_alert_gets_all_three_buttons_with_its_id_next_to_the_link_buttons() -> None:
    """The buttons join the rendered actions block (the log and tasklens links stay) and carry the alert id."""
    notification = _note(snapshot(alert(), id=42))
    body = with_action_buttons(render_slack(notification, base_url="http://airflow", templates_dir=None), notification)
    elements = _actions(body)
    interactive = [e for e in elements if "value" in e]
    assert [e["action_id"] for e in interactive] == [ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE]
    assert {e["value"] for e in interactive} == {"42"}
    assert any("url" in e for e in elements)
    assert sum(block["type"] == "actions" for block in body["blocks"]) == 1
    assert body["blocks"][-1]["type"] == "context"


def test_buttons_follow_the_alert_status() -> None:
    """An acknowledged alert can still be muted or resolved; a muted one only resolved."""
    for status, expected in ((Status.ACKNOWLEDGED, [ACTION_MUTE, ACTION_RESOLVE]), (Status.MUTED, [ACTION_RESOLVE])):
        notification = _note(snapshot(alert(), status=status))
        body = with_action_buttons({"text": "t", "blocks": [{"type": "section"}]}, notification)
        assert [e["action_id"] for e in _actions(body)] == expected


def test_no_buttons_on_resolve_notices_tests_or_digests() -> None:
    """Only a message about one alert someone can act on gets buttons."""
    rendered = {"text": "t", "blocks": [{"type": "section"}]}
    for notification in (
        _note(snapshot(alert()), kind="resolve"),
        _note(snapshot(alert()), kind="test"),
        _note(snapshot(alert(), id=1), snapshot(alert(), id=2), kind="digest"),
    ):
        assert with_action_buttons(rendered, notification) == rendered

"""A Slack message with its Acknowledge / Mute 1 h / Resolve buttons, rendered from the payload tasklens really posts
(``SlackChannel.send`` through the provider's ``SlackHook`` to a local Slack Web API) and from the ``chat.update``
the Slack endpoint makes after a click, then screenshotted in headless Chromium (``docs/img/slack-message.png`` is a
copy of ``tests/browser/artifacts/slack-message.png``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tasklens import config
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Notification, Severity, Status
from tasklens.channels.slack import ACTION_ACK, SlackChannel
from tasklens.ui.slack_actions import updated_message
from tests.browser.blockkit import render_page
from tests.channel_servers import SlackApiServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The message the Slack channel posts for one failed task (bot-token connection, so it has buttons)."""
    with SlackApiServer() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", slack.conn_json())
        monkeypatch.setenv("AIRFLOW__TASKLENS__BASE_URL", "https://airflow.example.com")
        config.reset()
        alert = Alert(
            fingerprint="3f9c", rule="task_failed", kind=AlertKind.FAILURE, severity=Severity.CRITICAL,
            title="Task failed: lakehouse_preprocessor.join_weather",
            summary="AnalysisException: [UNRESOLVED_COLUMN] `wind_gust` cannot be resolved",
            dag_id="lakehouse_preprocessor", task_id="join_weather", run_id="scheduled__2013-06-01T00:00:00+00:00",
            try_number=3, max_tries=3, exception_type="AnalysisException",
            exception_message="[UNRESOLVED_COLUMN] `wind_gust` cannot be resolved. Did you mean `wind_speed`?",
            log_url="https://airflow.example.com/dags/lakehouse_preprocessor/runs/x/tasks/join_weather",
        )
        snapshot = AlertSnapshot(id=1287, alert=alert, status=Status.OPEN, occurrences=1,
                                 first_seen="2026-11-27T09:41:07+00:00", last_seen="2026-11-27T09:41:07+00:00",
                                 alert_url="https://airflow.example.com/tasklens/alerts/1287")
        SlackChannel("slack", {"channel": "#alerts"}).send(Notification(kind="alert", channel="slack",
                                                                        items=(snapshot,)))
        (message,) = slack.messages.values()
        yield message
    config.reset()


def test_a_slack_message_with_its_buttons_is_rendered_and_screenshotted(posted: dict[str, Any]) -> None:
    """The posted message shows Acknowledge, Mute 1 h and Resolve next to the links; after Acknowledge it says who
    acknowledged and keeps Mute 1 h and Resolve."""
    from playwright.sync_api import sync_playwright

    after = updated_message(posted, ACTION_ACK, 1287, "oncall@example.com",
                            datetime(2026, 11, 27, 9, 44, tzinfo=timezone.utc))
    page_html = render_page([("Posted by the tasklens dispatcher (bot token)", posted),
                             ("After a click on Acknowledge (chat.update)", after)])
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600}, device_scale_factor=2)
            page.set_content(page_html)
            first, second = page.locator(".msg").all()
            assert [b.inner_text() for b in first.locator(".btn").all()][:3] == ["Acknowledge", "Mute 1 h", "Resolve"]
            assert "Acknowledged by oncall@example.com via Slack" in second.inner_text()
            assert [b.inner_text() for b in second.locator(".btn").all()][:2] == ["Mute 1 h", "Resolve"]
            page.screenshot(path=str(ARTIFACTS / "slack-message.png"), full_page=True)
        finally:
            browser.close()

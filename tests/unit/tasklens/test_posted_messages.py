"""With a Slack bot-token connection, the message an alert or incident got is updated in place (``chat.update``)
instead of posting again: through the real dispatcher and ``SlackChannel`` (the provider's ``SlackHook``) against a
local Slack Web API (tests/channel_servers.py ``SlackApiServer``)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tasklens import config, posted_messages
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.store import Store
from tests.channel_servers import SlackApiServer
from tests.unit.tasklens.test_incidents import db_down, failure, record
from tests.unit.tasklens.test_store import FakeClock

BOT = ChannelConfig(type="slack", options={"conn_id": "tl_bot", "channel": "#alerts"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    yield s
    s.dispose()


@pytest.fixture
def slack_api(monkeypatch):
    with SlackApiServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TL_BOT", server.conn_json())
        monkeypatch.setattr("tasklens.config.incident_window_s", lambda: 900.0)
        monkeypatch.setattr("tasklens.config.incident_update_interval_s", lambda: 60.0)
        config.reset()
        yield server
    config.reset()


def bot_dispatcher(store: Store, clock: FakeClock) -> Dispatcher:
    return Dispatcher(store, settings=DispatcherSettings(backoff_jitter_s=0.0, max_age_s=600.0), clock=clock,
                      sleep=clock.advance, rng=random.Random(0), channel_config=lambda name: BOT,
                      base_url="http://airflow")


def calls(server: SlackApiServer, method: str) -> int:
    return sum(1 for path, *_ in server.requests if path.endswith(f"/{method}"))


def test_an_incidents_later_members_and_resolve_update_its_one_message(store, clock, slack_api):
    """One post for the incident; a later member and the incident's resolve are chat.update of that ts, the message
    then names every member, the new count and the resolved state."""
    dispatcher = bot_dispatcher(store, clock)
    record(store, db_down("sales", "load"), db_down("finance", "load"))
    dispatcher.drain()
    assert calls(slack_api, "chat.postMessage") == 1
    (ts,) = slack_api.messages
    assert "2 tasks in 2 DAGs" in slack_api.messages[ts]["text"]

    clock.advance(5)
    record(store, db_down("crm", "load"))
    clock.advance(61)
    dispatcher.drain()
    assert calls(slack_api, "chat.postMessage") == 1 and [u["ts"] for u in slack_api.updates] == [ts]
    text = str(slack_api.messages[ts])
    assert "3 tasks in 3 DAGs" in text and "Update:" not in text
    assert all(name in text for name in ("sales.load", "finance.load", "crm.load"))

    for alert in store.list_alerts():
        store.resolve(alert["id"], by="someone")
    clock.advance(1)
    dispatcher.drain()
    assert calls(slack_api, "chat.postMessage") == 1 and list(slack_api.messages) == [ts]
    assert slack_api.messages[ts]["text"].startswith(":white_check_mark: Resolved: wh.internal unreachable")


def test_an_incident_takes_over_the_message_its_first_member_got_alone(store, clock, slack_api):
    """The first failure goes out alone (one DAG is no incident yet); when a second DAG fails the same way the
    incident's message replaces that one rather than posting a second."""
    dispatcher = bot_dispatcher(store, clock)
    record(store, db_down("sales", "load"))
    dispatcher.drain()
    (ts,) = slack_api.messages
    clock.advance(30)
    record(store, db_down("finance", "load"))
    dispatcher.drain()
    assert calls(slack_api, "chat.postMessage") == 1 and list(slack_api.messages) == [ts]
    assert "2 tasks in 2 DAGs" in slack_api.messages[ts]["text"]


def test_a_resolve_updates_the_alerts_own_message(store, clock, slack_api):
    """A plain alert's resolve notice replaces the alert's message (its buttons go: nothing left to do)."""
    dispatcher = bot_dispatcher(store, clock)
    (alert_id,) = record(store, failure("ml", "train", "KeyError", "'customer_id'", "code"))
    dispatcher.drain()
    (ts,) = slack_api.messages
    assert "tasklens-ack" in str(slack_api.messages[ts]["blocks"])
    store.resolve(alert_id, by="someone")
    dispatcher.drain()
    assert calls(slack_api, "chat.postMessage") == 1 and [u["ts"] for u in slack_api.updates] == [ts]
    assert slack_api.messages[ts]["text"].startswith(":white_check_mark: Resolved: ml.train")
    assert "tasklens-ack" not in str(slack_api.messages[ts]["blocks"])


def test_a_deleted_message_is_posted_anew(store, clock, slack_api):
    """Someone deleted the alert's message: chat.update answers message_not_found and the resolve is posted as a new
    message; nothing is lost."""
    dispatcher = bot_dispatcher(store, clock)
    (alert_id,) = record(store, failure("ml", "train", "KeyError", "'customer_id'", "code"))
    dispatcher.drain()
    (ts,) = slack_api.messages
    del slack_api.messages[ts]
    store.resolve(alert_id, by="someone")
    report = dispatcher.drain()
    assert report.messages_sent == 1 and report.dead == 0
    assert calls(slack_api, "chat.update") == 1 and calls(slack_api, "chat.postMessage") == 2
    (new,) = slack_api.messages.values()
    assert new["text"].startswith(":white_check_mark: Resolved: ml.train")


def test_a_digests_message_is_not_replaced_by_one_of_its_alerts(store, clock, slack_api):
    """Only a message showing exactly the resolved alerts is replaced: one alert of a digest resolving posts its
    notice, the digest stays as it was."""
    dispatcher = bot_dispatcher(store, clock)
    first, _second = record(store, failure("ml", "a", "KeyError", "'x'", "code"),
                            failure("ml", "b", "ValueError", "bad", "code"))
    dispatcher.drain()
    assert len(slack_api.messages) == 1
    assert posted_messages.message_for(store, "slack", [first]) is None
    store.resolve(first, by="someone")
    dispatcher.drain()
    assert calls(slack_api, "chat.update") == 0 and calls(slack_api, "chat.postMessage") == 2


def test_where_a_message_went_is_pruned_with_its_alert(store, clock, slack_api):
    """retention_days removes a resolved alert and, with it (ON DELETE CASCADE), where its message went."""
    dispatcher = bot_dispatcher(store, clock)
    (alert_id,) = record(store, failure("ml", "train", "KeyError", "'customer_id'", "code"))
    dispatcher.drain()
    assert len(posted_messages.messages_showing_only(store, alert_id)) == 1
    store.resolve(alert_id, by="someone")
    dispatcher.drain()
    clock.advance(3 * 86400)
    assert store.prune(older_than=timedelta(days=1)) > 0
    assert store.get_alert(alert_id) is None and posted_messages.messages_showing_only(store, alert_id) == []

"""The Opsgenie channel through OpsgenieAlertHook's SDK client, the real outbox and Dispatcher, against a local Alert
API server: alias = fingerprint, GenieKey auth, priority from severity, close on resolve, acknowledge on ack."""

from __future__ import annotations

import json

import pytest
from opsgenie_sdk import CreateAlertPayload

from tasklens.alerts import Severity
from tests.channel_servers import OpsgenieServer
from tests.integration.channel_harness import Outbox
from tests.unit.tasklens.test_store import resolve_of

pytestmark = pytest.mark.integration


@pytest.fixture
def og(monkeypatch):
    with OpsgenieServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_OPSGENIE", server.conn_json())
        yield server


@pytest.fixture
def outbox(tmp_path, og):
    box = Outbox(tmp_path, {"og": ("opsgenie", {"options": {"tags": ["team-data"]}})})
    yield box
    box.close()


def test_create_uses_alias_priority_and_genie_key(outbox, og):
    """An alert creates an Opsgenie alert with alias = fingerprint, P1 for critical, tags, details; the SDK sent
    ``Authorization: GenieKey <key>`` to the connection's host."""
    alert = outbox.raise_alert("og", severity=Severity.CRITICAL)
    outbox.dispatcher().run_once()
    (path, _, headers, raw) = og.requests[0]
    body = json.loads(raw)
    assert path == "/v2/alerts" and headers["Authorization"] == f"GenieKey {og.api_key}"
    assert body["alias"] == alert.fingerprint and body["priority"] == "P1"
    assert body["message"] == "Task failed: etl.load" and body["details"]["dag_id"] == "etl"
    assert {"tasklens", "task_failed", "team-data"} <= set(body["tags"])
    assert og.alerts[alert.fingerprint]["status"] == "open"


def test_resolve_in_tasklens_closes_the_opsgenie_alert_by_alias(outbox, og):
    """A warning creates a P3 alert; resolving it in tasklens closes it in Opsgenie by alias."""
    alert = outbox.raise_alert("og", severity=Severity.WARNING)
    dispatcher = outbox.dispatcher()
    dispatcher.run_once()
    outbox.store.record([(resolve_of(alert), [])])
    dispatcher.drain()
    assert og.actions == [("create", alert.fingerprint), ("close", alert.fingerprint)]
    assert og.alerts[alert.fingerprint]["status"] == "closed"
    assert json.loads(og.requests[0][3])["priority"] == "P3"


def test_acknowledge_is_mirrored_by_alias(outbox, og):
    """An ``ack`` delivery acknowledges the Opsgenie alert (POST /v2/alerts/{alias}/acknowledge by alias)."""
    alert = outbox.raise_alert("og")
    dispatcher = outbox.dispatcher()
    dispatcher.run_once()
    assert outbox.acknowledge(outbox.alert_id())
    assert dispatcher.run_once().deliveries_sent == 1
    assert og.actions[-1] == ("acknowledge", alert.fingerprint)
    assert og.alerts[alert.fingerprint]["status"] == "acknowledged"


def test_a_wrong_api_key_is_not_retried_and_never_shown(outbox, og, monkeypatch):
    """401 (wrong key): the delivery is dead at once; neither the key nor the host appears in the error."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_OPSGENIE",
                       json.dumps({"conn_type": "opsgenie", "host": og.url, "password": "wrong-key-12345"}))
    outbox.raise_alert("og")
    report = outbox.dispatcher().run_once()
    assert report.dead == 1 and og.answers == [401]
    error = outbox.store.list_alerts()[0]["last_error"]
    assert "401" in error and "wrong-key-12345" not in error and "wrong-key" not in " ".join(report.errors)


def test_one_request_per_send_even_though_the_sdk_retries_by_default(outbox, og):
    """The SDK would retry a 500 five times over a minute; tasklens makes one request and the dispatcher retries."""
    from tests.channel_servers import Reply

    og.responses.append(Reply(500))
    outbox.raise_alert("og")
    report = outbox.dispatcher().run_once()
    assert report.failed == 1 and len(og.requests) == 1


def test_two_opsgenie_channels_keep_their_own_keys(og, monkeypatch):
    """The SDK shares one api_key dict between all clients of a process; a client built for one connection still
    sends that connection's key after a client for another connection was built."""
    from tasklens.channels.opsgenie import OpsgenieChannel

    with OpsgenieServer(api_key="second-key-0000") as other:
        monkeypatch.setenv("AIRFLOW_CONN_OG_OTHER", other.conn_json())
        first_api, _ = OpsgenieChannel("a")._api()
        second_api, _ = OpsgenieChannel("b", {"conn_id": "og_other"})._api()
        first_api.create_alert(CreateAlertPayload(message="m", alias="x"), _request_timeout=(5, 5))
        second_api.create_alert(CreateAlertPayload(message="m", alias="y"), _request_timeout=(5, 5))
    assert og.actions == [("create", "x")] and other.actions == [("create", "y")]

"""The way back, inside a REAL api-server (scheduler + dag-processor + api-server, SimpleAuthManager): Slack button
clicks, PagerDuty webhook v3 and Opsgenie webhook requests change tasklens alerts only when signed, and never loop.

The alerts are sent by the api-server's own dispatcher through the real outbox to local servers that speak each
API's contract (tests/channel_servers.py): the Slack click is built from the message tasklens really posted.
Airflow users: ``oncall@example.com`` (role user: may edit task instances) and ``watcher@example.com`` (viewer);
SimpleAuthManager has no emails, so those users are named by their email (docs/channels.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.channels.slack import ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE
from tasklens.store import Store
from tests.channel_servers import OpsgenieServer, PagerDutyServer, SlackApiServer
from tests.integration.stack import AirflowStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ONCALL, WATCHER, STRANGER = "U0ONCALL", "U0WATCHER", "U0STRANGER"
PD_SECRET = "pd-webhook-s3cret"
GENIE_SECRET = "genie-webhook-s3cret"
DAG_ID = "inbound_dag"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SlackApiServer, PagerDutyServer, OpsgenieServer]]:
    users = {ONCALL: "oncall@example.com", WATCHER: "watcher@example.com", STRANGER: "stranger@example.com"}
    with SlackApiServer(users=users) as slack, PagerDutyServer() as pd, OpsgenieServer() as genie:
        yield slack, pd, genie


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, servers: Any) -> Iterator[AirflowStack]:
    slack, pd, genie = servers
    home = tmp_path_factory.mktemp("inbound-home")
    dags = tmp_path_factory.mktemp("inbound-dags")
    (home / "rules.yml").write_text(
        "version: 1\nchannels:\n"
        "  slack: {type: slack, channel: '#alerts'}\n"
        f"  pd: {{type: pagerduty, host: '{pd.url}'}}\n"
        "  genie: {type: opsgenie}\n"
    )
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS":
            "admin:admin,viewer:viewer,oncall@example.com:user,watcher@example.com:viewer",
        "AIRFLOW__TASKLENS__RULES_FILE": str(home / "rules.yml"),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_json(),
        "AIRFLOW_CONN_TASKLENS_PAGERDUTY": json.dumps(
            {"conn_type": "pagerduty_events", "password": pd.routing_key, "extra": {"webhook_secret": PD_SECRET}}),
        "AIRFLOW_CONN_TASKLENS_OPSGENIE": json.dumps(
            {"conn_type": "opsgenie", "host": genie.url, "password": genie.api_key,
             "extra": {"webhook_secret": GENIE_SECRET}}),
    }
    with AirflowStack(home, dags, env) as running:
        yield running


def _wait(what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _store(stack: AirflowStack) -> Store:
    return Store(f"sqlite:///{stack.home / 'tasklens.db'}")


def _seed(stack: AirflowStack, name: str, *channels: str) -> tuple[int, str]:
    """One open alert routed to ``channels`` (``slack``, ``pd``, ``genie``); returns its id and fingerprint once
    the api-server's dispatcher has sent it everywhere."""
    types = {"slack": "slack", "pd": "pagerduty", "genie": "opsgenie"}
    alert = Alert(
        fingerprint=f"fp-{name}", rule="task_failed", kind=AlertKind.FAILURE, severity=Severity.CRITICAL,
        title=f"{DAG_ID}.{name} failed", summary="ValueError: boom", dag_id=DAG_ID, task_id=name,
        run_id="manual__1", try_number=1, exception_type="ValueError", exception_message="boom",
    )
    deliveries = [Delivery(route="default", channel=c, channel_type=types[c], group_key=name) for c in channels]
    store = _store(stack)
    try:
        alert_id = store.record([(alert, deliveries)]).alert_ids[0]
        _wait("the alert to go out", lambda: {d["state"] for d in store.deliveries(alert_id)} == {"sent"})
    finally:
        store.dispose()
    return alert_id, alert.fingerprint


def _alert(stack: AirflowStack, alert_id: int) -> dict[str, Any]:
    store = _store(stack)
    try:
        row = store.get_alert(alert_id)
        assert row is not None
        return row
    finally:
        store.dispose()


def _message_of(slack: SlackApiServer, alert_id: int) -> str:
    """The ts of the Slack message tasklens posted about ``alert_id`` (found by its buttons' value)."""
    def find() -> str | None:
        for ts, message in list(slack.messages.items()):
            for block in message["blocks"] or ():
                if any(e.get("value") == str(alert_id) for e in block.get("elements", ()) if isinstance(e, dict)):
                    return ts
        return None
    return str(_wait(f"the Slack message of alert {alert_id}", find))


def _post(stack: AirflowStack, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(f"{stack.api_url}/tasklens{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw) if raw else None


def _click(stack: AirflowStack, slack: SlackApiServer, ts: str, action: str, user: str, **signing: Any):
    body, headers = slack.signed_request(slack.click(ts, action, user), **signing)
    return _post(stack, "/integrations/slack/actions", body, headers)


def _buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"] if "value" in e]


def test_a_signed_click_acknowledges_records_who_and_updates_the_message(stack, servers) -> None:
    """Acknowledge by the on-call user: the alert is acknowledged by them (via Slack), PagerDuty gets the ack (the
    UI's mirroring), and the Slack message says who acknowledged, keeping only Mute and Resolve."""
    slack, pd, _ = servers
    alert_id, fingerprint = _seed(stack, "ack", "slack", "pd")
    ts = _message_of(slack, alert_id)
    assert _buttons(slack.messages[ts]) == [ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE]

    status, body = _click(stack, slack, ts, ACTION_ACK, ONCALL)

    assert status == 200, body
    row = _alert(stack, alert_id)
    assert (row["status"], row["acked_by"]) == ("acknowledged", "oncall@example.com (Slack)")
    message = slack.messages[ts]
    assert "*Acknowledged* by oncall@example.com via Slack" in json.dumps(message)
    assert _buttons(message) == [ACTION_MUTE, ACTION_RESOLVE]
    _wait("PagerDuty to show the ack", lambda: pd.alerts.get(fingerprint) == "acknowledged")


def test_forged_replayed_or_unpermitted_clicks_are_refused_and_change_nothing(stack, servers) -> None:
    """A bad signature or a five-minute-old timestamp is 401; a viewer or a Slack user no Airflow user matches is
    403 with an ephemeral message; the alert stays open and the message untouched."""
    slack, _, _ = servers
    alert_id, _ = _seed(stack, "refused", "slack")
    ts = _message_of(slack, alert_id)
    before = json.dumps(slack.messages[ts], sort_keys=True)
    updates, ephemerals = len(slack.updates), len(slack.ephemerals)

    assert _click(stack, slack, ts, ACTION_RESOLVE, ONCALL, secret="not-the-signing-secret")[0] == 401
    assert _click(stack, slack, ts, ACTION_RESOLVE, ONCALL, timestamp=int(time.time()) - 301)[0] == 401
    assert len(slack.ephemerals) == ephemerals  # an unverified request is not answered in Slack either
    status, body = _click(stack, slack, ts, ACTION_RESOLVE, WATCHER)
    assert status == 403 and f"DAG {DAG_ID}" in body["text"]
    status, body = _click(stack, slack, ts, ACTION_ACK, STRANGER)
    assert status == 403 and "Airflow user" in body["text"]

    assert [e["user"] for e in slack.ephemerals[ephemerals:]] == [WATCHER, STRANGER]
    row = _alert(stack, alert_id)
    assert (row["status"], row["acked_by"], row["resolved_by"]) == ("open", None, None)
    assert json.dumps(slack.messages[ts], sort_keys=True) == before and len(slack.updates) == updates


def _pagerduty_event(event_type: str, fingerprint: str) -> bytes:
    return json.dumps({"event": {
        "id": "01DEN4HPBQAAAG05V5QQYBRZMF", "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-27T12:00:00.000Z",
        "agent": {"id": "PLH1HKV", "summary": "Ada Lovelace", "type": "user_reference"},
        "data": {"id": "PGR0VU2", "type": "incident", "status": event_type.split(".")[1], "incident_key": fingerprint,
                 "title": "inbound_dag.pd failed"},
    }}).encode()


def test_a_resolve_in_pagerduty_resolves_the_alert_without_echoing_back(stack, servers) -> None:
    """An unsigned or wrongly signed webhook is 401 and changes nothing; a signed incident.resolved resolves the
    alert by its PagerDuty user, Slack gets the resolve notice and PagerDuty gets no resolve event back."""
    _, pd, _ = servers
    alert_id, fingerprint = _seed(stack, "pd", "slack", "pd")
    body = _pagerduty_event("incident.resolved", fingerprint)
    headers = {"Content-Type": "application/json"}
    assert _post(stack, "/integrations/pagerduty/webhook", body, headers)[0] == 401
    wrong = "v1=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    assert _post(stack, "/integrations/pagerduty/webhook", body, {**headers, "X-PagerDuty-Signature": wrong})[0] == 401
    assert _alert(stack, alert_id)["status"] == "open"

    signature = "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, answer = _post(stack, "/integrations/pagerduty/webhook", body,
                           {**headers, "X-PagerDuty-Signature": signature})

    assert (status, answer) == (200, {"result": "resolved"})
    row = _alert(stack, alert_id)
    assert (row["status"], row["resolved_by"]) == ("resolved", "Ada Lovelace (PagerDuty)")
    store = _store(stack)
    try:
        _wait("the Slack resolve notice", lambda: any(
            d["kind"] == "resolve" and d["state"] == "sent" for d in store.deliveries(alert_id)))
        assert {d["channel"] for d in store.deliveries(alert_id) if d["kind"] == "resolve"} == {"slack"}
    finally:
        store.dispose()
    assert [e["event_action"] for e in pd.events if e.get("dedup_key") == fingerprint] == ["trigger"]


def test_an_acknowledge_in_opsgenie_acknowledges_the_alert_and_reaches_pagerduty_only(stack, servers) -> None:
    """A wrong shared secret is 401; an Acknowledge webhook acknowledges the alert, the ack is mirrored to
    PagerDuty but not sent back to Opsgenie."""
    _, pd, genie = servers
    alert_id, fingerprint = _seed(stack, "genie", "pd", "genie")
    body = json.dumps({"action": "Acknowledge", "alert": {"alertId": "8418d193-2dab-4490-b331-8c02cdd196b7",
                                                          "alias": fingerprint, "username": "grace@example.com"},
                       "source": {"name": "web", "type": "web"}, "integrationName": "tasklens"}).encode()
    headers = {"Content-Type": "application/json"}
    assert _post(stack, "/integrations/opsgenie/webhook", body,
                 {**headers, "X-Tasklens-Webhook-Secret": "guess"})[0] == 401
    assert _alert(stack, alert_id)["status"] == "open"

    status, answer = _post(stack, "/integrations/opsgenie/webhook", body,
                           {**headers, "X-Tasklens-Webhook-Secret": GENIE_SECRET})

    assert (status, answer) == (200, {"result": "acknowledged"})
    row = _alert(stack, alert_id)
    assert (row["status"], row["acked_by"]) == ("acknowledged", "grace@example.com (Opsgenie)")
    _wait("PagerDuty to show the ack", lambda: pd.alerts.get(fingerprint) == "acknowledged")
    assert ("acknowledge", fingerprint) not in genie.actions

"""Request signatures of the inbound endpoints, and acting on an alert from an incident tool without looping."""

from __future__ import annotations

import hashlib
import hmac
import time

from tasklens.alerts import Delivery
from tasklens.store import Store
from tasklens.ui import incident_webhooks
from tasklens.ui.inbound import (
    open_alert_id,
    verify_pagerduty_signature,
    verify_shared_secret,
    verify_slack_signature,
)
from tests.unit.tasklens.test_messages import failure as alert

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"


def _slack_signature(timestamp: str, body: bytes = BODY, secret: str = SECRET) -> str:
    return "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def test_slack_signature_accepts_slacks_v0_signature_and_nothing_else() -> None:
    """Right secret, body and recent timestamp verify; another secret, a changed body or a garbled header do not."""
    now = time.time()
    ts = str(int(now))
    assert verify_slack_signature(SECRET, ts, BODY, _slack_signature(ts), now=now)
    assert not verify_slack_signature(SECRET, ts, BODY, _slack_signature(ts, secret="other"), now=now)
    assert not verify_slack_signature(SECRET, ts, BODY + b"x", _slack_signature(ts), now=now)
    assert not verify_slack_signature(SECRET, ts, BODY, "v0=ü", now=now)
    assert not verify_slack_signature(SECRET, "soon", BODY, _slack_signature("soon"), now=now)
    assert not verify_slack_signature("", ts, BODY, _slack_signature(ts, secret=""), now=now)


def test_slack_signature_refuses_a_replay_older_than_five_minutes() -> None:
    """A correctly signed request replayed (or sent) more than 300 s from now is refused, either way in time."""
    now = time.time()
    for skew in (301, -301):
        ts = str(int(now - skew))
        assert not verify_slack_signature(SECRET, ts, BODY, _slack_signature(ts), now=now)
    ts = str(int(now - 299))
    assert verify_slack_signature(SECRET, ts, BODY, _slack_signature(ts), now=now)


def test_pagerduty_signature_v1_among_several() -> None:
    """Any one ``v1=`` of the (comma-separated) header may match, as during a secret rotation."""
    good = "v1=" + hmac.new(b"pd-secret", b'{"event":{}}', hashlib.sha256).hexdigest()
    assert verify_pagerduty_signature("pd-secret", b'{"event":{}}', f"v1=deadbeef, {good}")
    assert not verify_pagerduty_signature("pd-secret", b'{"event":{"x":1}}', good)
    assert not verify_pagerduty_signature("pd-secret", b'{"event":{}}', None)
    assert not verify_pagerduty_signature("", b'{"event":{}}', good)


def test_shared_secret() -> None:
    assert verify_shared_secret("s3cret", "s3cret")
    assert not verify_shared_secret("s3cret", "s3cre")
    assert not verify_shared_secret("s3cret", None)
    assert not verify_shared_secret("", "")


def _recorded(store: Store, *channel_types: str) -> int:
    deliveries = [Delivery(route="r", channel=t, channel_type=t, group_key="g") for t in channel_types]
    alert_id = store.record([(alert(fingerprint="fp-1"), deliveries)]).alert_ids[0]
    claimed = store.claim("test", limit=10, lease_s=60)  # the alert went out everywhere
    store.mark_sent([c.id for c in claimed], token=claimed[0].claim_token)
    assert {r["state"] for r in store.deliveries(alert_id)} == {"sent"}
    return alert_id


def test_a_resolve_from_pagerduty_notifies_every_channel_but_pagerduty(alert_store: Store) -> None:
    """No loop: the resolve notice goes to Slack and Opsgenie, not back to PagerDuty."""
    alert_id = _recorded(alert_store, "slack", "pagerduty", "opsgenie")
    assert open_alert_id(alert_store, "fp-1") == alert_id
    assert incident_webhooks.apply("pagerduty", "fp-1", "resolve", "Ada") == "resolved"
    row = alert_store.get_alert(alert_id)
    assert (row["status"], row["resolved_by"]) == ("resolved", "Ada (PagerDuty)")
    notices = {r["channel_type"] for r in alert_store.deliveries(alert_id) if r["kind"] == "resolve"}
    assert notices == {"slack", "opsgenie"}
    assert open_alert_id(alert_store, "fp-1") is None
    assert incident_webhooks.apply("pagerduty", "fp-1", "resolve", "Ada") == "ignored"


def test_an_acknowledge_from_opsgenie_is_mirrored_to_pagerduty_only(alert_store: Store) -> None:
    """The ack goes to the other incident tool, not back to Opsgenie (and Slack takes no ack deliveries)."""
    alert_id = _recorded(alert_store, "slack", "pagerduty", "opsgenie")
    assert incident_webhooks.apply("opsgenie", "fp-1", "acknowledge", "Grace") == "acknowledged"
    row = alert_store.get_alert(alert_id)
    assert (row["status"], row["acked_by"]) == ("acknowledged", "Grace (Opsgenie)")
    acks = {r["channel_type"] for r in alert_store.deliveries(alert_id) if r["kind"] == "ack"}
    assert acks == {"pagerduty"}
    assert incident_webhooks.apply("opsgenie", "fp-1", "acknowledge", "Grace") == "ignored"
    assert incident_webhooks.apply("opsgenie", "unknown-alias", "resolve", "Grace") == "ignored"

"""The generic webhook through the real outbox and Dispatcher against a receiver that verifies the HMAC signature
and the timestamp as the documented snippet does: schema v1 body, idempotency key header, tampering rejected."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tasklens.channels import webhook
from tests.channel_servers import WebhookReceiver
from tests.integration.channel_harness import Outbox
from tests.unit.tasklens.test_store import resolve_of

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver(monkeypatch):
    with WebhookReceiver() as server:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_WEBHOOK", server.conn_json())
        yield server


@pytest.fixture
def outbox(tmp_path, receiver):
    box = Outbox(tmp_path, {"hook": ("webhook", {})})
    yield box
    box.close()


def test_body_is_schema_v1_and_signed(outbox, receiver):
    """The receiver verified the signature; the body has schema_version 1, the alert fields, status and URLs, and the
    Idempotency-Key header equals the body's idempotency_key."""
    alert = outbox.raise_alert("hook", log_url="http://airflow.example/log/1")
    outbox.dispatcher().run_once()
    ((headers, body),) = receiver.deliveries
    assert body["schema_version"] == 1 and body["kind"] == "alert" and body["channel"] == "hook"
    assert headers["idempotency-key"] == body["idempotency_key"] and len(body["idempotency_key"]) == 32
    (item,) = body["items"]
    assert item["fingerprint"] == alert.fingerprint and item["status"] == "open" and item["severity"] == "critical"
    assert item["dag_id"] == "etl" and item["urls"]["log"] == "http://airflow.example/log/1"
    assert item["urls"]["alert"].startswith("http://airflow.example/tasklens/alerts/")
    assert body["title"] == "Task failed: etl.load"


def test_the_documented_verification_snippet_accepts_a_delivery(outbox, receiver):
    """The snippet in the module docstring, run as written, verifies what tasklens sent."""
    snippet = webhook.__doc__.split("Verifying a delivery")[1].split("::", 1)[1]
    namespace: dict = {}
    exec(compile("\n".join(line[4:] for line in snippet.splitlines()), "snippet", "exec"), namespace)
    outbox.raise_alert("hook")
    outbox.dispatcher().run_once()
    _, _, headers, raw = receiver.requests[0]
    assert namespace["verify"](receiver.secret.encode(), headers, raw) is True
    assert namespace["verify"](b"another secret", headers, raw) is False


def test_resolve_and_ack_are_sent_as_their_kinds(outbox, receiver):
    """A resolve notice and an ack go out as kind "resolve" / "ack" with the alert's status."""
    alert = outbox.raise_alert("hook")
    dispatcher = outbox.dispatcher()
    dispatcher.run_once()
    assert outbox.acknowledge(outbox.alert_id())
    dispatcher.run_once()
    outbox.store.record([(resolve_of(alert), [])])
    dispatcher.drain()
    kinds = [(body["kind"], body["items"][0]["status"]) for _, body in receiver.deliveries]
    assert kinds == [("alert", "open"), ("ack", "acknowledged"), ("resolve", "resolved")]


def test_a_wrong_secret_is_rejected_and_not_retried(outbox, receiver, monkeypatch):
    """Signed with another secret: the receiver answers 401, the delivery is dead, the secret is in no error."""
    monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_WEBHOOK", receiver.conn_json(secret="not-the-secret"))
    outbox.raise_alert("hook")
    report = outbox.dispatcher().run_once()
    assert report.dead == 1 and receiver.rejected == ["bad signature"]
    assert "not-the-secret" not in outbox.store.list_alerts()[0]["last_error"]


def test_a_replayed_old_delivery_is_rejected(receiver):
    """The receiver refuses a correctly signed body whose timestamp is older than its tolerance (a replay)."""
    import requests

    body = b'{"schema_version": 1}'
    old = str(int(time.time()) - 3600)
    signature = "v1=" + hmac.new(receiver.secret.encode(), old.encode() + b"." + body, hashlib.sha256).hexdigest()
    answer = requests.post(f"{receiver.url}/hooks/tasklens", data=body, timeout=5,
                           headers={"X-Tasklens-Timestamp": old, "X-Tasklens-Signature": signature})
    assert answer.status_code == 401 and receiver.rejected == ["stale timestamp"]


def test_sign_matches_hmac_sha256_of_timestamp_dot_body():
    """sign() is HMAC-SHA256 over ``timestamp + "." + body``, hex, prefixed v1=."""
    body = json.dumps({"a": 1}).encode()
    expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook.sign("k3y", "1700000000", body) == f"v1={expected}"

'''A generic webhook: a versioned JSON body, signed with HMAC-SHA256, POSTed to any URL.

Connection: type ``http`` with the URL in its host (``https://hooks.example.com/tasklens``; a host without a
scheme gets the connection's schema, default https, and port) and the signing secret in its password, e.g.
``AIRFLOW_CONN_TASKLENS_WEBHOOK='{"conn_type": "http", "host": "https://hooks.example.com/tasklens",
"password": "s3cret"}'``. Rules-file options: ``conn_id`` (default ``tasklens_webhook``).

Body (``schema_version: 1``; fields are only ever added within a version)::

    {
      "schema_version": 1,
      "kind": "alert" | "digest" | "escalation" | "resolve" | "ack" | "test",
      "channel": "<channel name in the rules file>",
      "idempotency_key": "<the same on every send of this message>",
      "sent_at": "<ISO 8601, UTC>",
      "title": "<the rendered headline, plain text>",
      "text": "<the rendered body, plain text>",
      "items": [                                   # one per alert (a digest has several)
        {"id": 42, "fingerprint": "<the alert's identity>", "rule": "task_failed", "kind": "failure",
         "severity": "info" | "warning" | "critical",
         "status": "open" | "acknowledged" | "resolved" | "muted",
         "title": "...", "summary": "...", "dag_id": "...", "task_id": "...", "run_id": "...",
         "map_index": -1, "try_number": 2, "max_tries": 3,
         "exception_type": "...", "exception_message": "...",   # bounded, secrets masked
         "occurrences": 3, "first_seen": "<ISO 8601>", "last_seen": "<ISO 8601>",
         "labels": {...}, "urls": {"alert": "<tasklens UI>", "log": "<task log>"}}
      ]
    }

Headers: ``X-Tasklens-Timestamp`` (Unix seconds), ``X-Tasklens-Signature: v1=<hex>`` where hex is
HMAC-SHA256(secret, ``timestamp + "." + body``) over the raw body bytes, ``Idempotency-Key`` (the body's
``idempotency_key``: a message sent again after a dispatcher crash carries the same one), ``X-Tasklens-Schema: 1``.
Without a password the body goes unsigned (no signature header).

Answers: 2xx delivered; 429 and 5xx retried (``Retry-After`` honoured, capped by the dispatcher); other 4xx are not
retried (the route's fallback channels get the alert).

Verifying a delivery (Python; reject stale timestamps to stop replays, compare in constant time)::

    import hashlib, hmac, time

    def verify(secret: bytes, headers: dict, body: bytes, tolerance_s: int = 300) -> bool:
        timestamp = headers["X-Tasklens-Timestamp"]
        if abs(time.time() - int(timestamp)) > tolerance_s:
            return False
        expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers["X-Tasklens-Signature"], f"v1={expected}")
'''

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels import _http
from tasklens.channels._render import alert_fields, plain_parts
from tasklens.exceptions import DeliveryError

__all__ = ["SCHEMA_VERSION", "WebhookChannel", "body_of", "sign"]

SCHEMA_VERSION = 1


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Tasklens-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``timestamp.body`` with ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


def body_of(notification: Notification, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``schema_version: 1`` body of ``notification``."""
    parts = plain_parts(notification)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": notification.kind,
        "channel": notification.channel,
        "idempotency_key": notification.idempotency_key,
        "sent_at": (now or datetime.now(timezone.utc)).isoformat(),
        "title": parts["headline"],
        "text": parts["body"],
        "items": [alert_fields(s, item) for s, item in zip(notification.items, parts["items"], strict=True)],
    }


class WebhookChannel:
    """One webhook receiver. ``clock`` (Unix seconds) is injectable for tests."""

    channel_type = "webhook"

    def __init__(
        self, name: str, options: Mapping[str, Any] | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or "tasklens_webhook")
        self.clock = clock

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """POST the signed body of ``notification``; raises :class:`DeliveryError` saying what went wrong."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        conn = _http.read_connection(self.conn_id, "webhook", "type http, host = URL, password = signing secret")
        secrets = _http.secrets_of(conn)
        url = _url_of(conn)
        if url is None:
            raise DeliveryError(
                f"webhook connection {self.conn_id!r} has no URL; put https://... in its host", retryable=False,
                secrets=secrets,
            )
        body = json.dumps(body_of(notification), ensure_ascii=False, default=str).encode("utf-8")
        timestamp = str(int(self.clock()))
        headers = {"X-Tasklens-Timestamp": timestamp, "X-Tasklens-Schema": str(SCHEMA_VERSION)}
        if notification.idempotency_key:
            headers["Idempotency-Key"] = notification.idempotency_key
        if conn.password:
            headers["X-Tasklens-Signature"] = sign(conn.password, timestamp, body)
        _http.post("webhook", url, body, timeout_s=timeout, headers=headers, secrets=secrets)


def _url_of(conn: Any) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    scheme = (conn.schema or "https").strip() or "https"
    port = f":{conn.port}" if conn.port else ""
    host, slash, path = host.partition("/")
    return f"{scheme}://{host}{port}{slash}{path}"

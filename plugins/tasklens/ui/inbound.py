"""What the inbound endpoints (Slack buttons, PagerDuty and Opsgenie webhooks) share: request signatures, the
connections whose secrets may sign a request, and the open alert an incident tool's key names.

These endpoints are called by Slack, PagerDuty and Opsgenie, not by a logged-in Airflow user: a request is
trusted only when it is signed with a secret from an Airflow connection (compared in constant time), and a
Slack click then acts with the permissions of the Airflow user the Slack user maps to.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException, Request, status

from tasklens import config
from tasklens.store import Store, alerts_table

__all__ = [
    "SLACK_TOLERANCE_S",
    "conn_ids_for",
    "connection_extra",
    "open_alert_id",
    "read_body",
    "verify_pagerduty_signature",
    "verify_shared_secret",
    "verify_slack_signature",
]

log = logging.getLogger(__name__)

#: Slack's advice: refuse a request whose timestamp is more than five minutes from now (a replay).
SLACK_TOLERANCE_S = 300


def verify_slack_signature(
    secret: str, timestamp: str | None, body: bytes, signature: str | None, *, now: float | None = None,
    tolerance_s: float = SLACK_TOLERANCE_S,
) -> bool:
    """Whether ``signature`` (``X-Slack-Signature``) is Slack's v0 signature of ``body`` sent at ``timestamp``
    (``X-Slack-Request-Timestamp``) with the app's signing secret, and the timestamp is within ``tolerance_s``."""
    if not secret or not timestamp or not signature:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    base = b"v0:" + timestamp.encode("ascii", "replace") + b":" + body
    expected = "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def verify_pagerduty_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``X-PagerDuty-Signature`` holds a ``v1=<hex HMAC-SHA256 of body>`` made with ``secret`` (the header
    may list several, comma-separated, while a secret is being rotated)."""
    if not secret or not header:
        return False
    expected = ("v1=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()).encode("ascii")
    return any(
        hmac.compare_digest(expected, candidate.strip().encode("utf-8", "replace")) for candidate in header.split(",")
    )


def verify_shared_secret(secret: str, presented: str | None) -> bool:
    """Whether ``presented`` is ``secret`` (constant time); an empty secret never matches."""
    if not secret or presented is None:
        return False
    return hmac.compare_digest(secret.encode("utf-8"), presented.encode("utf-8", "replace"))


def conn_ids_for(channel_type: str, default: str) -> list[str]:
    """The connections of every ``channel_type`` channel in the rules file, after ``default``: the secrets that may
    sign a request from that tool. Connections named nowhere are never read on a caller's behalf."""
    found = [default]
    try:
        channels: Iterable[Any] = (config.ruleset().channels or {}).values()
    except Exception:
        log.warning("tasklens: could not read the rules file's channels; only %r signs requests", default)
        channels = ()
    for channel in channels:
        conn_id = getattr(channel, "conn_id", None)
        if getattr(channel, "type", None) == channel_type and conn_id and conn_id not in found:
            found.append(str(conn_id))
    return found


def connection_extra(conn_id: str) -> dict[str, Any]:
    """The extra of Airflow connection ``conn_id`` (``{}`` when it does not exist or cannot be read)."""
    from airflow.sdk import BaseHook  # noqa: PLC0415 - Airflow's connection lookup loads only when a request needs it

    try:
        return dict(BaseHook.get_connection(conn_id).extra_dejson or {})
    except Exception:
        return {}


def open_alert_id(store: Store, fingerprint: str) -> int | None:
    """The unresolved alert with ``fingerprint`` (the PagerDuty ``dedup_key``, the Opsgenie ``alias``), if any."""
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(alerts_table.c.id).where(alerts_table.c.open_key == fingerprint)).scalar()
    return int(found) if found is not None else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes (before it is all in memory)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "payload too large")
        chunks.append(chunk)
    return b"".join(chunks)

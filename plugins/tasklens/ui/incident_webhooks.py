"""PagerDuty and Opsgenie back to tasklens: an acknowledge or resolve there updates the tasklens alert.

- ``POST /tasklens/integrations/pagerduty/webhook``: a PagerDuty webhook v3 subscription (events
  ``incident.acknowledged`` and ``incident.resolved``). The request must carry ``X-PagerDuty-Signature:
  v1=<hex HMAC-SHA256 of the body>`` made with the subscription's secret, kept in the ``webhook_secret`` extra of
  the PagerDuty connection (``tasklens_pagerduty`` or a ``type: pagerduty`` channel's ``conn_id``).
- ``POST /tasklens/integrations/opsgenie/webhook``: an Opsgenie Webhook integration (actions ``Acknowledge`` and
  ``Close``) with the custom header ``X-Tasklens-Webhook-Secret`` set to the ``webhook_secret`` extra of the
  Opsgenie connection.

The incident's key is the alert's fingerprint (PagerDuty ``incident_key`` = the ``dedup_key`` tasklens sent,
Opsgenie ``alias``). An acknowledge is mirrored to the *other* incident tools and a resolve notifies every channel
but the one it came from, so nothing loops back (and a tool telling tasklens what tasklens told it changes
nothing: the alert is no longer open). Unsigned requests get 401; events about incidents tasklens does not know,
or already did, get 200 (the tool must not retry them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from tasklens.channels import mirrors_acknowledge
from tasklens.store import get_store
from tasklens.text import bounded
from tasklens.ui import message_sync
from tasklens.ui.inbound import (
    conn_ids_for,
    connection_extra,
    open_alert_id,
    read_body,
    verify_pagerduty_signature,
    verify_shared_secret,
)

__all__ = ["OPSGENIE_PATH", "OPSGENIE_SECRET_HEADER", "PAGERDUTY_PATH", "apply", "router"]

log = logging.getLogger(__name__)

PAGERDUTY_PATH = "/integrations/pagerduty/webhook"
OPSGENIE_PATH = "/integrations/opsgenie/webhook"
OPSGENIE_SECRET_HEADER = "X-Tasklens-Webhook-Secret"  # noqa: S105 - a header name, not a secret
_MAX_BODY = 256 * 1024
_PAGERDUTY_EVENTS = {"incident.acknowledged": "acknowledge", "incident.resolved": "resolve"}
_OPSGENIE_ACTIONS = {"acknowledge": "acknowledge", "close": "resolve"}

router = APIRouter(tags=["integrations"])


def apply(tool: str, fingerprint: str, action: str, who: str) -> str:
    """Acknowledge or resolve the open alert with ``fingerprint`` on behalf of ``who`` in ``tool`` (a channel type),
    without sending it back to ``tool``. Returns what happened: ``acknowledged``, ``resolved`` or ``ignored``."""
    store = get_store()
    alert_id = open_alert_id(store, fingerprint)
    if alert_id is None:
        return "ignored"
    by = f"{bounded(who, 200) or 'someone'} ({'PagerDuty' if tool == 'pagerduty' else 'Opsgenie'})"
    others: Callable[[str], bool] = lambda channel_type: channel_type != tool  # noqa: E731 - one-line predicate
    if action == "acknowledge":
        changed = store.acknowledge(
            alert_id, by=by, mirror_to=lambda channel_type: others(channel_type) and mirrors_acknowledge(channel_type)
        )
        if changed:
            message_sync.follow_status(store, [alert_id])
        return "acknowledged" if changed else "ignored"
    return "resolved" if store.resolve(alert_id, by=by, notify=others) else "ignored"


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected a JSON body") from None
    if not isinstance(parsed, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected a JSON object")
    return parsed


def _pagerduty(request: Request, body: bytes) -> dict[str, Any]:
    header = request.headers.get("x-pagerduty-signature")
    secrets = (connection_extra(c).get("webhook_secret") for c in conn_ids_for("pagerduty", "tasklens_pagerduty"))
    if not any(secret and verify_pagerduty_signature(str(secret), body, header) for secret in secrets):
        log.warning("tasklens: refused a PagerDuty webhook: no PagerDuty connection's webhook_secret verifies it")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid PagerDuty signature")
    event = _json_body(body).get("event") or {}
    action = _PAGERDUTY_EVENTS.get(str(event.get("event_type")))
    incident = event.get("data") or {}
    fingerprint = incident.get("incident_key")
    if action is None or not fingerprint:
        return {"result": "ignored"}
    who = str((event.get("agent") or {}).get("summary") or "PagerDuty")
    return {"result": apply("pagerduty", str(fingerprint), action, who)}


def _opsgenie(request: Request, body: bytes) -> dict[str, Any]:
    presented = request.headers.get(OPSGENIE_SECRET_HEADER)
    secrets = (connection_extra(c).get("webhook_secret") for c in conn_ids_for("opsgenie", "tasklens_opsgenie"))
    if not any(secret and verify_shared_secret(str(secret), presented) for secret in secrets):
        log.warning("tasklens: refused an Opsgenie webhook: its %s matches no Opsgenie connection's webhook_secret",
                    OPSGENIE_SECRET_HEADER)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing or wrong {OPSGENIE_SECRET_HEADER}")
    payload = _json_body(body)
    action = _OPSGENIE_ACTIONS.get(str(payload.get("action") or "").lower())
    alert = payload.get("alert") or {}
    fingerprint = alert.get("alias")
    if action is None or not fingerprint:
        return {"result": "ignored"}
    who = str(alert.get("username") or (payload.get("source") or {}).get("name") or "Opsgenie")
    return {"result": apply("opsgenie", str(fingerprint), action, who)}


@router.post(PAGERDUTY_PATH, summary="PagerDuty webhook v3: incident acknowledged/resolved (signed)")
async def pagerduty_webhook(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_pagerduty, request, await read_body(request, _MAX_BODY))


@router.post(OPSGENIE_PATH, summary="Opsgenie webhook: alert acknowledged/closed (shared secret header)")
async def opsgenie_webhook(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_opsgenie, request, await read_body(request, _MAX_BODY))

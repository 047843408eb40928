"""Slack's Acknowledge / Mute 1 h / Resolve buttons: ``POST /tasklens/integrations/slack/actions``.

Set it as the Slack app's Interactivity Request URL. A click is acted on only when:

1. the request carries Slack's v0 signature made with the ``signing_secret`` of a Slack connection tasklens uses
   (``[tasklens] slack_conn_id`` or a ``type: slack`` channel's ``conn_id``), timestamped within five minutes
   (otherwise 401, nothing read or changed);
2. the Slack user maps to an Airflow user: ``users.info`` gives the user's email, which the connection's extra
   ``airflow_users`` (``{"email": "airflow username"}``) or the auth manager (a FAB user with that email; a
   SimpleAuthManager user named by that email) turns into an Airflow user (otherwise 403 and an ephemeral
   message);
3. that user may edit the alert's DAG's task instances, checked by Airflow's ``requires_access_dag`` exactly as the
   UI's own actions are (otherwise 403 and an ephemeral message).

Then the action is recorded on the alert (``acked_by``/``resolved_by`` "<user> (Slack)"), acknowledging is
mirrored to PagerDuty/Opsgenie like the UI's, and the message is updated (``chat.update``): who did what, and only
the buttons still useful.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tasklens import config
from tasklens.channels import mirrors_acknowledge
from tasklens.channels.slack import (
    ACTION_ACK,
    ACTION_MUTE,
    ACTION_RESOLVE,
    MUTE_MINUTES,
    SlackApp,
    action_buttons,
)
from tasklens.exceptions import DeliveryError
from tasklens.messages import escape_mrkdwn
from tasklens.store import get_store
from tasklens.ui import auth
from tasklens.ui.inbound import conn_ids_for, read_body, verify_slack_signature

__all__ = ["ACTIONS_PATH", "airflow_user_for_email", "router", "updated_message"]

log = logging.getLogger(__name__)

ACTIONS_PATH = "/integrations/slack/actions"
_MAX_BODY = 64 * 1024  # a block_actions payload with the whole message is a few KB
_SLACK_ID = re.compile(r"^[A-Z0-9]{2,40}$")
_PAST = {ACTION_ACK: "Acknowledged", ACTION_MUTE: f"Muted for {MUTE_MINUTES // 60} h", ACTION_RESOLVE: "Resolved"}
_NEW_STATUS = {ACTION_ACK: "acknowledged", ACTION_MUTE: "muted", ACTION_RESOLVE: "resolved"}

router = APIRouter(tags=["integrations"])


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager  # noqa: PLC0415 - Airflow's API-server app loads only when a request needs it

    return get_auth_manager()


def airflow_user_for_email(email_address: str, explicit: dict[str, Any] | None = None) -> Any | None:
    """The Airflow user a Slack user with ``email_address`` acts as, or None.

    ``explicit`` (the Slack connection's extra ``airflow_users``) maps emails to Airflow usernames first. Otherwise
    the auth manager decides: FAB's users have emails; SimpleAuthManager's have none, so only a user whose name *is*
    the email matches.
    """
    wanted = email_address.strip().lower()
    by_email = {str(k).strip().lower(): str(v) for k, v in (explicit or {}).items()}
    username = by_email.get(wanted)
    manager = _auth_manager()
    get_users = getattr(manager, "get_users", None)  # SimpleAuthManager: the configured users
    if callable(get_users):
        name = (username or wanted).lower()
        return next((user for user in get_users() if str(user.username).lower() == name), None)
    find_user = getattr(getattr(manager, "security_manager", None), "find_user", None)  # FAB
    if callable(find_user):
        user = find_user(username=username) if username else find_user(email=email_address)
        return user if user is not None and getattr(user, "is_active", True) else None
    return None


def updated_message(message: dict[str, Any], action: str, alert_id: int, who: str, when: datetime) -> dict[str, Any]:
    """The clicked message after ``action``: tasklens's buttons replaced by the ones still useful, and a line saying
    who did what (before the closing context block)."""
    blocks = []
    for block in message.get("blocks") or ():
        if block.get("type") == "actions":
            links = [e for e in block.get("elements", ()) if not str(e.get("action_id", "")).startswith(
                (ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE))]
            block = {**block, "elements": action_buttons(alert_id, _NEW_STATUS[action]) + links}
            if not block["elements"]:
                continue
        blocks.append(block)
    note = {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f":white_check_mark: *{_PAST[action]}* by {escape_mrkdwn(who)} "
                                                f"via Slack · {when:%Y-%m-%d %H:%M} UTC"}],
    }
    at = len(blocks) - 1 if blocks and blocks[-1].get("type") == "context" else len(blocks)
    blocks.insert(at, note)
    return {"text": str(message.get("text") or "tasklens alert"), "blocks": blocks}


def _verified_app(request: Request, body: bytes) -> SlackApp:
    timestamp = request.headers.get("x-slack-request-timestamp")
    signature = request.headers.get("x-slack-signature")
    for conn_id in conn_ids_for("slack", config.slack_conn_id()):
        app = SlackApp(conn_id)
        secret = app.signing_secret()
        if secret and verify_slack_signature(secret, timestamp, body, signature):
            return app
    log.warning("tasklens: refused a Slack action: no Slack connection's signing_secret verifies it (or it is older "
                "than 5 minutes)")
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired Slack signature")


def _refuse(app: SlackApp, payload: dict[str, Any], code: int, text: str) -> JSONResponse:
    """Tell the clicking user why (ephemeral: only they see it), and answer ``code`` (200 when there is simply
    nothing to do: Slack marks a click whose request failed with a warning)."""
    channel_id = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id")
    user_id = (payload.get("user") or {}).get("id")
    if channel_id and user_id:
        try:
            app.post_ephemeral(str(channel_id), str(user_id), text)
        except DeliveryError as exc:
            log.warning("tasklens: could not tell the Slack user why their click was refused: %s", exc)
    return JSONResponse({"response_type": "ephemeral", "text": text}, status_code=code)


def _handle(request: Request, body: bytes) -> JSONResponse:
    app = _verified_app(request, body)
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=False)
        payload = json.loads(form["payload"][0])
    except (KeyError, IndexError, ValueError, UnicodeDecodeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected a form with a JSON `payload`") from None
    actions = [a for a in payload.get("actions") or () if a.get("action_id") in _PAST]
    if payload.get("type") != "block_actions" or not actions:
        return JSONResponse({})  # link buttons, other apps' actions: nothing to do, Slack wants a 200
    action = str(actions[0]["action_id"])
    try:
        alert_id = int(actions[0].get("value"))
    except (TypeError, ValueError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the button carries no alert id") from None
    user_id = str((payload.get("user") or {}).get("id") or "")
    if not _SLACK_ID.match(user_id):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the payload names no Slack user")
    store = get_store()
    row = store.get_alert(alert_id)
    if row is None:
        return _refuse(app, payload, status.HTTP_200_OK, f"tasklens alert {alert_id} no longer exists.")
    extra = app.extra()
    try:
        email_address = app.user_email(user_id)
    except DeliveryError as exc:
        log.warning("tasklens: could not look up Slack user %s: %s", user_id, exc)
        email_address = None
    user = airflow_user_for_email(email_address, extra.get("airflow_users")) if email_address else None
    if user is None:
        return _refuse(app, payload, status.HTTP_403_FORBIDDEN,
                       "tasklens does not know you as an Airflow user (no Airflow user has your Slack email), so "
                       "it cannot act on your behalf. Ask an Airflow admin to map you.")
    try:
        for method in ("GET", "PUT"):  # as the UI's actions: read the alert, then edit the DAG's task instances
            auth.require_dag_access(request, user, row["dag_id"], method)
    except HTTPException:
        return _refuse(app, payload, status.HTTP_403_FORBIDDEN,
                       f"You may not change alerts of DAG {row['dag_id']}: your Airflow user cannot edit its task "
                       "instances.")
    who = auth.user_name(user)
    by = f"{who} (Slack)"
    if action == ACTION_ACK:
        changed = store.acknowledge(alert_id, by=by, mirror_to=mirrors_acknowledge)
    elif action == ACTION_MUTE:
        changed = store.mute(alert_id, until=datetime.now(timezone.utc) + timedelta(minutes=MUTE_MINUTES), by=by)
    else:
        changed = store.resolve(alert_id, by=by)
    if not changed:
        current = store.get_alert(alert_id) or row
        return _refuse(app, payload, status.HTTP_200_OK,
                       f"tasklens alert {alert_id} is {current['status']} already; nothing changed.")
    log.info("tasklens: alert %s %s by %s via Slack", alert_id, _NEW_STATUS[action], who)
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    channel_id = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    ts = container.get("message_ts") or message.get("ts")
    if channel_id and ts and message:
        try:
            app.update_message(str(channel_id), str(ts),
                               updated_message(message, action, alert_id, who, datetime.now(timezone.utc)))
        except DeliveryError as exc:  # the action stands; the message just does not show it
            log.warning("tasklens: alert %s changed, but its Slack message could not be updated: %s", alert_id, exc)
    return JSONResponse({})


@router.post(ACTIONS_PATH, summary="Slack interactivity: the Acknowledge / Mute 1 h / Resolve buttons (Slack-signed)")
async def slack_actions(request: Request) -> JSONResponse:
    return await run_in_threadpool(_handle, request, await read_body(request, _MAX_BODY))

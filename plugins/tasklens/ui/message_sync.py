"""Slack messages follow what was done elsewhere: an alert acknowledged or muted in the Alerts UI, the Incidents view,
PagerDuty or Opsgenie gets its Slack message (bot-token connections) redrawn in place: the status field, a line
saying who did it and when, and only the buttons still useful; an incident acknowledged in the Incidents view gets
its message redrawn saying who. A resolve needs nothing here: its resolve notice goes through the outbox and
replaces the message (``tasklens.dispatch``).

Only messages that show the alert alone are redrawn (a digest or an incident's message speaks for other alerts
too). The update runs in the request that made the change, bounded: at most :data:`MAX_MESSAGES` messages, each
within ``[tasklens] http_timeout_s`` (at most 5 s), all within :data:`TOTAL_BUDGET_S`. It never raises: the change
stands, a message that could not be updated is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from tasklens import config, incident_store, posted_messages
from tasklens.alerts import Notification, PostedMessage, Status
from tasklens.channels import build_channel
from tasklens.channels.slack import SlackChannel
from tasklens.dispatch import DispatcherSettings, channel_config_from_ruleset, message_language_from_ruleset
from tasklens.i18n import localizer
from tasklens.messages import escape_mrkdwn
from tasklens.store import Store

__all__ = ["MAX_MESSAGES", "TOTAL_BUDGET_S", "follow_incident", "follow_status", "status_line"]

log = logging.getLogger(__name__)

#: Messages one action redraws at most (an incident's acknowledgement touches every member).
MAX_MESSAGES = 20
#: Seconds one action may spend redrawing messages in all: the person who clicked is waiting for the page.
TOTAL_BUDGET_S = 10.0
_TIMEOUT_CAP_S = 5.0


def _time_left(deadline: float, timeout: float) -> float:
    """The timeout of the next Slack call: ``timeout``, or what is left of the action's budget (0: stop)."""
    return max(0.0, min(timeout, deadline - time.monotonic()))


def status_line(row: dict[str, Any], locale: str | None = None, timezone: str | None = None) -> str | None:
    """The context line of an acknowledged or muted alert's message: what, by whom (``acked_by`` says where:
    "ann (PagerDuty)"), when."""
    tr = localizer(locale, timezone)
    who = escape_mrkdwn(str(row.get("acked_by") or "someone"))
    when = row.get("acked_at")
    at = f" · {tr.datetime(when)}" if when is not None else ""
    if row.get("status") == Status.ACKNOWLEDGED.value:
        return ":eyes: " + tr.gettext("*Acknowledged* by %(who)s") % {"who": who} + at
    if row.get("status") == Status.MUTED.value:
        until = row.get("muted_until")
        text = (tr.gettext("*Muted* until %(until)s by %(who)s") % {"until": tr.datetime(until), "who": who}
                if until is not None else tr.gettext("*Muted* by %(who)s") % {"who": who})
        return ":mute: " + text + at
    return None


def _route_of(row: dict[str, Any], channel: str) -> str:
    for route in row.get("routes") or ():
        if isinstance(route, dict) and route.get("channel") == channel:
            return str(route.get("route") or "default")
    return "default"


def follow_status(store: Store, alert_ids: Iterable[int]) -> int:
    """Redraw the Slack messages showing each of ``alert_ids`` alone to its current status; returns how many were
    updated. Never raises."""
    updated = budget = 0
    timeout = min(config.http_timeout_s(), _TIMEOUT_CAP_S)
    deadline = time.monotonic() + TOTAL_BUDGET_S
    try:
        base_url = config.base_url()
    except Exception:
        base_url = None
    for alert_id in alert_ids:
        try:
            row = store.get_alert(alert_id)
            if row is None or row["status"] not in (Status.ACKNOWLEDGED.value, Status.MUTED.value):
                continue
            for channel, message in posted_messages.messages_showing_only(store, alert_id):
                left = _time_left(deadline, timeout)
                if budget >= MAX_MESSAGES or left <= 0:
                    return updated
                budget += 1
                updated += _redraw(store, row, channel, message, left, base_url)
        except Exception:
            log.warning("tasklens: alert %s changed, but its Slack messages could not be updated", alert_id,
                        exc_info=True)
    return updated


def follow_incident(store: Store, incident_id: int) -> int:
    """Redraw the incident's Slack messages (the members it lists, its counts, who acknowledged it); returns how
    many were updated. Never raises."""
    updated = 0
    deadline = time.monotonic() + TOTAL_BUDGET_S
    try:
        found = incident_store.get_incident(store, incident_id, member_limit=1)
        if found is None:
            return 0
        incident = found[0]
        listed = incident_store.member_alert_ids(store, incident_id, limit=DispatcherSettings().digest_max_items)
        try:
            base_url = config.base_url()
        except Exception:
            base_url = None
        snapshots = store.snapshots(listed, base_url=base_url)
        items = tuple(snapshots[i] for i in listed if i in snapshots)
        first = store.get_alert(listed[0]) if listed else None
        timeout = min(config.http_timeout_s(), _TIMEOUT_CAP_S)
        for channel, sent in list(incident.messages.items())[:MAX_MESSAGES]:
            if not (isinstance(sent, dict) and sent.get("ts") and sent.get("channel")) or not items:
                continue
            target = _slack_target(channel)
            left = _time_left(deadline, timeout)
            if left <= 0:
                break
            if target is None:
                continue
            locale, zone = message_language_from_ruleset(_route_of(first or {}, channel), channel)
            notification = Notification(kind="digest", channel=channel, items=items, locale=locale, timezone=zone,
                                        incident=incident.view(incident.members - len(items)))
            try:
                updated += target.update(notification, PostedMessage(str(sent["channel"]), str(sent["ts"])),
                                         timeout_s=left)
            except Exception as exc:  # DeliveryError carries no secret
                log.warning("tasklens: incident %s changed, but its message on %r could not be updated: %s",
                            incident_id, channel, exc)
    except Exception:
        log.warning("tasklens: incident %s changed, but its Slack messages could not be updated", incident_id,
                    exc_info=True)
    return updated


def _slack_target(channel: str) -> SlackChannel | None:
    cfg = channel_config_from_ruleset(channel)
    if (cfg.type if cfg is not None else channel) != "slack":
        return None
    target = build_channel(channel, "slack", cfg.options if cfg is not None else {})
    return target if isinstance(target, SlackChannel) else None


def _redraw(store: Store, row: dict[str, Any], channel: str, message: PostedMessage,
            timeout: float, base_url: str | None) -> int:
    target = _slack_target(channel)
    if target is None:
        return 0
    snapshot = store.snapshots([row["id"]], base_url=base_url).get(row["id"])
    if snapshot is None:
        return 0
    locale, zone = message_language_from_ruleset(_route_of(row, channel), channel)
    notification = Notification(kind="alert", channel=channel, items=(snapshot,), locale=locale, timezone=zone)
    try:
        done = target.update(notification, message, status_line=status_line(row, locale, zone), timeout_s=timeout)
    except Exception as exc:  # DeliveryError carries no secret
        log.warning("tasklens: alert %s is %s, but its message on %r could not be updated: %s", row["id"],
                    row["status"], channel, exc)
        return 0
    return int(done)

"""What the non-Slack channels show of a notification: its plain-text parts and each alert's fields.

Every value comes from :func:`tasklens.messages.render_text`: bounded (a 1 MB exception stays a few KB), secrets
masked, valid UTF-8. Channels escape it for their own markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklens import config, messages
from tasklens.alerts import AlertSnapshot, Notification

__all__ = ["alert_fields", "plain_parts"]


def plain_parts(notification: Notification) -> dict[str, Any]:
    """``headline``, ``body``, digest ``lines`` and ``items`` (alert views) of ``notification``."""
    return messages.render_text(notification, base_url=config.base_url())


def alert_fields(snapshot: AlertSnapshot, item: Mapping[str, Any]) -> dict[str, Any]:
    """One alert (``snapshot`` and its view ``item`` from :func:`plain_parts`) as JSON-ready fields: the webhook
    schema's ``items[]`` entry, the notifier context's ``alerts[]``, PagerDuty's ``custom_details``."""
    alert = item["alert"]
    return {
        "id": item["id"],
        "fingerprint": snapshot.alert.fingerprint,
        "rule": alert["rule"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "status": item["status"],
        "title": alert["title"],
        "summary": alert["summary"],
        "dag_id": alert["dag_id"],
        "task_id": alert["task_id"],
        "run_id": alert["run_id"],
        "map_index": alert["map_index"],
        "try_number": alert["try_number"],
        "max_tries": alert["max_tries"],
        "exception_type": alert["exception_type"],
        "exception_message": alert["exception_message"],
        "occurrences": item["occurrences"],
        "first_seen": item["first_seen"],
        "last_seen": item["last_seen"],
        "labels": alert["labels"],
        "urls": {"alert": item["alert_url"], "log": item["log_url"]},
    }

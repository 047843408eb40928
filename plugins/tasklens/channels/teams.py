"""Microsoft Teams through a Workflows (Power Automate) webhook, or a classic incoming webhook, with an Adaptive Card.

There is no Airflow provider for Teams: the card is one plain HTTP POST (``requests``, the dispatcher's timeout,
no retries of its own). Connection: type ``http`` with the webhook URL in its **password** (Airflow masks
passwords in the UI and logs; a Workflows URL carries its signature in the query string), e.g.
``AIRFLOW_CONN_TASKLENS_TEAMS='{"conn_type": "http", "password": "https://prod-00.westus.logic.azure.com/..."}'``.
A URL in the connection's host is used when the password is empty. Rules-file options: ``conn_id`` (default
``tasklens_teams``).

Safety: every text tasklens did not write is escaped for the TextBlock markdown subset (``\\*`` ``\\_`` ``\\~``
``\\``` ``\\[`` ``\\]`` ``\\<`` ``\\>`` ``\\#`` ``\\-``, and list or heading markers at line starts), so an
exception message shows as typed: it cannot bold, link, mention (``<at>``) or list. Teams refuses messages over
about 28 KB: the card is kept under :data:`PAYLOAD_LIMIT` bytes by leaving out digest lines ("…and N more") and
then shortening the body.

What is mirrored: nothing comes back from Teams; resolve notices are posted as cards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels import _http
from tasklens.channels._render import plain_parts
from tasklens.exceptions import DeliveryError
from tasklens.text import bounded

__all__ = ["PAYLOAD_LIMIT", "TeamsChannel", "escape_markdown", "render_card"]

#: Bytes of the whole JSON body (Teams allows about 28 KB; the rest is headroom for its envelope).
PAYLOAD_LIMIT = 27_000
_SPECIAL = re.compile(r"([\\*_~`\[\]<>#\-])")
_LINE_START = re.compile(r"^(\s*)(\d+)\.(\s)|^(\s*)([+=|])", re.MULTILINE)
_COLORS = {"critical": "Attention", "warning": "Warning", "info": "Accent"}
_ICONS = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def escape_markdown(value: Any) -> str:
    """``value`` as literal text in a Teams TextBlock: markdown characters and line-start markers escaped."""
    text = _SPECIAL.sub(r"\\\1", "" if value is None else str(value))
    return _LINE_START.sub(lambda m: f"{m[1]}{m[2]}\\.{m[3]}" if m[2] else f"{m[4]}\\{m[5]}", text)


def _link_url(url: str) -> str:
    """A URL that cannot end a markdown link early."""
    return url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")


def _line(item: Mapping[str, Any]) -> str:
    alert = item["alert"]
    title = escape_markdown(alert["title"])
    if item["alert_url"]:
        title = f"[{title}]({_link_url(item['alert_url'])})"
    text = f"**{escape_markdown(str(alert['severity']).upper())}** {title}"
    if alert["summary"]:
        text += f" · {escape_markdown(alert['summary'])}"
    if item["occurrences"] > 1:
        text += f" (×{item['occurrences']})"
    return text


def _facts(item: Mapping[str, Any], kind: str) -> list[dict[str, str]]:
    alert = item["alert"]
    pairs = [
        ("DAG", alert["dag_id"]), ("Task", alert["task"]), ("Run", alert["run_id"]), ("Try", alert["try_label"]),
        ("Severity", alert["severity"]), ("Occurrences", str(item["occurrences"])),
    ]
    if kind == "resolve" or item["status"] != "open":
        pairs.append(("Status", item["status"]))
    return [{"title": label, "value": escape_markdown(value)} for label, value in pairs if value]


def _envelope(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _size(payload: Mapping[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def render_card(notification: Notification, *, limit: int = PAYLOAD_LIMIT) -> dict[str, Any]:
    """The webhook body (a ``message`` with one Adaptive Card) for ``notification``, at most ``limit`` bytes."""
    parts = plain_parts(notification)
    items = parts["items"]
    severities = [str(item["alert"]["severity"]) for item in items]
    severity = next((s for s in ("critical", "warning", "info") if s in severities), "info")
    if notification.kind == "resolve":
        color, icon = "Good", "✅"
    else:
        color, icon = _COLORS[severity], ("🚨" if notification.kind == "escalation" else _ICONS[severity])
    headline = bounded(parts["headline"] or "tasklens alert", 300, "…")
    many = len(items) > 1 or notification.kind == "digest"
    lines = [_line(item) for item in items] if many else []
    single = items[0] if items and not many else None
    actions = []
    if single is not None:
        for title, url in (("View task log", single["log_url"]), ("Open in tasklens", single["alert_url"])):
            if url:
                actions.append({"type": "Action.OpenUrl", "title": title, "url": url})

    def build(body_text: str, kept: int) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": f"{icon} {escape_markdown(headline)}", "weight": "Bolder",
             "size": "Medium", "color": color, "wrap": True},
        ]
        if body_text:
            blocks.append({"type": "TextBlock", "text": escape_markdown(body_text), "wrap": True})
        blocks.extend({"type": "TextBlock", "text": line, "wrap": True, "spacing": "Small"} for line in lines[:kept])
        if kept < len(lines):
            blocks.append({"type": "TextBlock", "text": f"…and {len(lines) - kept} more alert(s) in tasklens",
                           "isSubtle": True, "wrap": True})
        if single is not None:
            facts = _facts(single, notification.kind)
            if facts:
                blocks.append({"type": "FactSet", "facts": facts})
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": blocks,
        }
        if actions:
            card["actions"] = actions
        return _envelope(card)

    body = parts["body"] or ""
    payload = build(body, len(lines))
    if _size(payload) <= limit:
        return payload
    low, high = 0, len(lines)  # the most digest lines that fit
    while low < high:
        middle = (low + high + 1) // 2
        if _size(build(body, middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    payload = build(body, low)
    budget = len(body)
    while _size(payload) > limit and budget > 0:  # a huge body: shorten it until the card fits
        budget //= 2
        payload = build(bounded(body, budget, "…"), low)
    return payload


class TeamsChannel:
    """One Teams channel's Workflows or incoming webhook."""

    channel_type = "teams"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or "tasklens_teams")

    def render(self, notification: Notification) -> dict[str, Any]:
        return render_card(notification)

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Post the card of ``notification``; raises :class:`DeliveryError` saying what went wrong."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        conn = _http.read_connection(self.conn_id, "Teams", "type http, password = the webhook URL")
        secrets = _http.secrets_of(conn)
        url = (conn.password or "").strip() or (conn.host or "").strip()
        if not url.lower().startswith(("https://", "http://")):
            raise DeliveryError(
                f"Teams connection {self.conn_id!r} has no webhook URL; put the Workflows webhook URL "
                "(https://...) in its password",
                retryable=False, secrets=secrets,
            )
        body = json.dumps(self.render(notification), ensure_ascii=False).encode("utf-8")
        answer = _http.post("Teams", url, body, timeout_s=timeout, secrets=secrets)
        # Classic connectors answer 200 with an error text instead of an error status.
        if answer.text.startswith("Webhook message delivery failed"):
            rate_limited = "429" in answer.text
            raise DeliveryError(
                f"Teams refused the message: {answer.text[:300]}",
                retryable=rate_limited or "HTTP error 5" in answer.text, secrets=secrets,
            )

"""Slack through ``apache-airflow-providers-slack``: ``SlackWebhookHook`` for ``slackwebhook`` connections,
``SlackHook`` (``chat_postMessage``, and ``chat_update`` for a notification that replaces an earlier message: a
resolve, an incident's later members, a status change made elsewhere) for ``slack`` bot-token connections. A bot
token's send returns where Slack put the message (:class:`~tasklens.alerts.PostedMessage`: channel id and ``ts``);
a message that can no longer be updated (deleted, too old) is posted anew, nothing is lost.

slack_sdk's own retry handlers are turned off (``retry_handlers=[]``): the dispatcher owns retries, backoff and
``Retry-After``, so a channel makes exactly one HTTP request per :meth:`SlackChannel.send`.

Slack takes no idempotency key (neither incoming webhooks nor ``chat.postMessage`` deduplicate a repeated post),
so a dispatcher killed between Slack's 200 and its mark makes the next one post that message again (at most once
more; see :mod:`tasklens.dispatch`).

Errors never carry the webhook URL or a token: slack_sdk's log lines go through a scrubbing logger and every
:class:`DeliveryError` is built with the connection's secrets to remove.
"""

from __future__ import annotations

import email.utils
import logging
import math
import socket
import urllib.error
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tasklens import config, messages
from tasklens.alerts import Notification, PostedMessage
from tasklens.exceptions import DeliveryError
from tasklens.i18n import Localizer, localizer
from tasklens.messages import gettext_noop
from tasklens.redact import redact

__all__ = [
    "ACTION_ACK",
    "ACTION_MUTE",
    "ACTION_RESOLVE",
    "MUTE_MINUTES",
    "SlackApp",
    "SlackChannel",
    "action_buttons",
    "classify_status",
    "parse_retry_after",
    "with_action_buttons",
    "with_status_line",
]

#: ``action_id`` of the interactive buttons a bot-token message carries (the value is the alert id).
ACTION_ACK = "tasklens-ack"
ACTION_MUTE = "tasklens-mute-1h"
ACTION_RESOLVE = "tasklens-resolve"
#: How long the "Mute 1 h" button silences an alert.
MUTE_MINUTES = 60
#: Which buttons an alert in each status gets: what can still be done to it.
_BUTTONS_BY_STATUS = {
    "open": (ACTION_ACK, ACTION_MUTE, ACTION_RESOLVE),
    "acknowledged": (ACTION_MUTE, ACTION_RESOLVE),
    "muted": (ACTION_RESOLVE,),
}
_BUTTON_LABELS = {
    ACTION_ACK: gettext_noop("Acknowledge"),
    ACTION_MUTE: gettext_noop("Mute 1 h"),
    ACTION_RESOLVE: gettext_noop("Resolve"),
}
#: Messages that show an alert someone can act on (not a resolve notice, an acknowledgement or a test).
_ACTIONABLE_KINDS = ("alert", "repeat", "escalation", "digest", "fallback")
#: ``chat.update`` errors that mean the message cannot be changed any more (deleted, too old, not ours, channel
#: gone): nothing is lost, the new content is posted as a new message.
_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found",
                   "is_archived", "not_in_channel"})


class _Gone(Exception):
    """The message to update no longer exists (or can no longer be changed)."""


class _RedactingFilter(logging.Filter):
    """slack_sdk logs the request URL on errors (``Failed to send a request ...: Invalid URL detected: <url>``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


#: The logger slack_sdk's clients get instead of the hook's: same lines, URLs and tokens scrubbed.
_SDK_LOG = logging.getLogger("tasklens.channels.slack_sdk")
_SDK_LOG.addFilter(_RedactingFilter())


def parse_retry_after(value: Any, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date (RFC 9110 10.2.3).

    ``None`` when the value is unusable (garbage, negative, NaN); an HTTP-date in the past is 0. A huge value
    (``1e12``, ``inf``) is returned as is: the dispatcher caps every wait at its ``backoff_max_s``.
    """
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            return parse_retry_after(value)
    return None


def classify_status(status: int, body: Any, headers: Mapping[str, Any] | None) -> DeliveryError:
    """The DeliveryError for a non-200 Slack answer: 429 and 5xx are retryable, other 4xx are not."""
    text = str(body)[:300] if body is not None else ""
    if status == 429:
        retry_after = _retry_after(headers)
        return DeliveryError(
            f"Slack rate-limited the message (HTTP 429, Retry-After {retry_after}): {text}",
            retryable=True,
            retry_after_s=retry_after,
        )
    if status >= 500:
        return DeliveryError(f"Slack answered HTTP {status}: {text}", retryable=True)
    return DeliveryError(
        f"Slack rejected the message (HTTP {status}: {text}); check the connection's webhook token or channel",
        retryable=False,
    )


def _network_error(exc: BaseException, target: str, secrets: tuple[str | None, ...]) -> DeliveryError:
    if isinstance(exc, (TimeoutError, socket.timeout)) or "timed out" in str(exc):
        return DeliveryError(
            f"Slack did not answer within the timeout ({target}): {exc}", retryable=True, secrets=secrets
        )
    reason = getattr(exc, "reason", exc)
    return DeliveryError(f"could not reach Slack at {target}: {reason}", retryable=True, secrets=secrets)


def _secrets_of(conn: Any) -> tuple[str | None, ...]:
    """What of a connection may never appear in an error: its password (webhook token), login and host."""
    return (getattr(conn, "password", None), getattr(conn, "login", None), getattr(conn, "host", None))


def action_buttons(alert_id: int, status: str, tr: Localizer | None = None) -> list[dict[str, Any]]:
    """The Block Kit buttons for what can still be done to alert ``alert_id`` in ``status`` (none once resolved),
    labelled in ``tr``'s language (English by default)."""
    tr = tr or localizer()
    buttons: list[dict[str, Any]] = []
    for action in _BUTTONS_BY_STATUS.get(status, ()):
        button: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": tr.gettext(_BUTTON_LABELS[action])},
            "action_id": action,
            "value": str(alert_id),
        }
        if action == ACTION_ACK:
            button["style"] = "primary"
        elif action == ACTION_RESOLVE:
            button["confirm"] = {
                "title": {"type": "plain_text", "text": tr.gettext("Resolve this alert?")},
                "text": {"type": "plain_text",
                         "text": tr.gettext("It closes in tasklens and in the incident tools it reached.")},
                "confirm": {"type": "plain_text", "text": tr.gettext("Resolve")},
                "deny": {"type": "plain_text", "text": tr.gettext("Cancel")},
            }
        buttons.append(button)
    return buttons


def with_action_buttons(body: Mapping[str, Any], notification: Notification) -> dict[str, Any]:
    """``body`` with Acknowledge / Mute 1 h / Resolve buttons, when ``notification`` shows one alert someone can act
    on. They join the message's actions block (the link buttons), or get their own before the closing context."""
    body = dict(body)
    if notification.kind not in _ACTIONABLE_KINDS or len(notification.items) != 1:
        return body
    item = notification.items[0]
    language = localizer(notification.locale, notification.timezone)
    buttons = action_buttons(item.id, getattr(item.status, "value", str(item.status)), language)
    if not buttons:
        return body
    blocks = [dict(block) for block in body.get("blocks") or ()]
    for index, block in enumerate(blocks):
        if block.get("type") == "actions":
            blocks[index] = {**block, "elements": [*buttons, *block.get("elements", ())]}
            break
    else:
        at = len(blocks) - 1 if blocks and blocks[-1].get("type") == "context" else len(blocks)
        blocks.insert(at, {"type": "actions", "elements": buttons})
    body["blocks"] = blocks
    return body


def with_status_line(body: Mapping[str, Any], line: str) -> dict[str, Any]:
    """``body`` with a context line (who did what, when) before its closing context block."""
    blocks = [dict(block) for block in body.get("blocks") or ()]
    note = {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}
    blocks.insert(len(blocks) - 1 if blocks and blocks[-1].get("type") == "context" else len(blocks), note)
    return {**body, "blocks": blocks}


class SlackChannel:
    """One Slack target. Options: ``conn_id`` (default ``[tasklens] slack_conn_id``), ``channel`` (bot tokens)."""

    channel_type = "slack"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or config.slack_conn_id())
        self.slack_channel = options.get("channel") or options.get("slack_channel")

    def render(self, notification: Notification) -> dict[str, Any]:
        return dict(messages.render_slack(notification, base_url=config.base_url()))

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> PostedMessage | None:
        """Post ``notification`` (or, with a bot-token connection and ``notification.replace``, update that earlier
        message in place); raises :class:`DeliveryError` saying what went wrong. Returns where the message is with
        a bot-token connection (so later notices can update it), else None."""
        body = self.render(notification)
        if notification.thread and not notification.replace:
            body["thread_ts"] = notification.thread  # bot tokens only: incoming webhooks ignore it
        return self.post(body, timeout_s=timeout_s, notification=notification)

    def post(
        self, body: Mapping[str, Any], *, timeout_s: float | None = None, notification: Notification | None = None
    ) -> PostedMessage | None:
        """Post a rendered ``body``. With a bot-token connection, a ``notification`` of one alert gets its action
        buttons (clicks reach ``/tasklens/integrations/slack/actions``; webhooks cannot take clicks), and one with
        ``replace`` updates that message (a new post when it is gone). Incoming webhooks cannot update: they post."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        conn = self._connection()
        secrets = _secrets_of(conn)
        if str(conn.conn_type or "slackwebhook") == "slack":
            if notification is not None:
                body = with_action_buttons(body, notification)
            replace = notification.replace if notification is not None else None
            return self._post_api(body, timeout, secrets, replace=replace)
        else:
            if not (conn.password or "").strip():
                raise DeliveryError(
                    f"Slack connection {self.conn_id!r} has no webhook token; put the token (T.../B.../...) in its "
                    "password",
                    retryable=False,
                    secrets=secrets,
                )
            self._post_webhook(body, timeout, secrets)
            return None

    def update(self, notification: Notification, message: PostedMessage, *, status_line: str | None = None,
               timeout_s: float | None = None) -> bool:
        """Redraw the earlier ``message`` as ``notification`` (its buttons those of the alert's current status, plus
        ``status_line``). Only a bot-token connection can: False for a webhook, or when Slack says the message is
        gone (nothing is posted instead). Raises :class:`DeliveryError` when Slack refuses or cannot be reached."""
        conn = self._connection()
        if str(conn.conn_type or "slackwebhook") != "slack":
            return False
        body = with_action_buttons(self.render(notification), notification)
        if status_line:
            body = with_status_line(body, status_line)
        try:
            self._post_api(body, timeout_s if timeout_s is not None else config.http_timeout_s(),
                           _secrets_of(conn), replace=message, post_if_gone=False)
        except _Gone:
            return False
        return True

    def _connection(self) -> Any:
        """The channel's connection. Any failure to read it is retryable: Airflow reports a secrets backend or
        metadata database outage as "isn't defined", exactly as it reports a missing connection, so tasklens
        retries until ``delivery_max_age_s`` and then falls back."""
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        try:
            return SlackWebhookHook.get_connection(self.conn_id)
        except Exception as exc:
            raise DeliveryError(
                f"could not read Slack connection {self.conn_id!r} ({type(exc).__name__}: {exc}); retrying. If it "
                f"does not exist, create it (type slackwebhook, password = webhook token) or set "
                f"AIRFLOW_CONN_{self.conn_id.upper()}",
                retryable=True,
            ) from None

    def _client_error(self, exc: Exception, secrets: tuple[str | None, ...]) -> DeliveryError:
        from airflow.exceptions import AirflowNotFoundException  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        # The hook reads the connection again: a failed lookup there is as retryable as in _connection.
        return DeliveryError(
            f"Slack connection {self.conn_id!r} is unusable: {type(exc).__name__}: {exc}",
            retryable=isinstance(exc, AirflowNotFoundException),
            secrets=secrets,
        )

    def _post_webhook(self, body: Mapping[str, Any], timeout: float, secrets: tuple[str | None, ...]) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        try:
            hook = SlackWebhookHook(
                slack_webhook_conn_id=self.conn_id, timeout=timeout, retry_handlers=[], logger=_SDK_LOG,  # type: ignore[arg-type]
            )
            client = hook.client
        except Exception as exc:
            raise self._client_error(exc, secrets) from None
        target = _redacted(client.url)
        try:
            response = client.send_dict(dict(body))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _network_error(exc, target, secrets) from None
        except Exception as exc:  # InvalidURL, SlackRequestError, ValueError: a malformed URL in the connection
            raise DeliveryError(
                f"Slack connection {self.conn_id!r} gives an unusable webhook URL ({type(exc).__name__}: {exc}); "
                "check its host and password",
                retryable=False,
                secrets=secrets,
            ) from None
        if response.status_code != 200:
            raise classify_status(response.status_code, response.body, response.headers)

    def _post_api(self, body: Mapping[str, Any], timeout: float, secrets: tuple[str | None, ...],
                  replace: PostedMessage | None = None, *, post_if_gone: bool = True) -> PostedMessage | None:
        from airflow.providers.slack.hooks.slack import SlackHook  # noqa: PLC0415 - the provider SDK loads only when this channel type sends
        from slack_sdk.errors import SlackApiError  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        if not self.slack_channel:
            raise DeliveryError(
                f"Slack channel {self.name!r} uses bot-token connection {self.conn_id!r} but has no `channel` "
                "option; add `channel: \"#alerts\"` to it in the rules file",
                retryable=False,
            )
        try:
            hook = SlackHook(slack_conn_id=self.conn_id, timeout=timeout, retry_handlers=[], logger=_SDK_LOG)  # type: ignore[arg-type]
            client = hook.client
        except Exception as exc:
            raise self._client_error(exc, secrets) from None
        try:
            response = None
            if replace is not None:
                try:
                    response = client.chat_update(channel=replace.channel, ts=replace.ts, **dict(body))
                except SlackApiError as exc:
                    data = exc.response.data if isinstance(exc.response.data, Mapping) else {}
                    if data.get("error") not in _GONE:
                        raise
                    if not post_if_gone:
                        raise _Gone(str(data.get("error"))) from None
                    _SDK_LOG.info("tasklens: Slack message %s could not be updated (%s); posting a new one",
                                  replace.ts, data.get("error"))
            if response is None:
                response = client.chat_postMessage(channel=self.slack_channel, **dict(body))
        except _Gone:
            raise
        except SlackApiError as exc:
            response = exc.response
            raise classify_status(response.status_code, response.data, response.headers) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _network_error(exc, _redacted(client.base_url), secrets) from None
        except Exception as exc:  # SlackRequestError, InvalidURL: a malformed base_url in the connection
            raise DeliveryError(
                f"Slack connection {self.conn_id!r} gives an unusable API URL ({type(exc).__name__}: {exc})",
                retryable=False,
                secrets=secrets,
            ) from None
        ts = response.get("ts") if hasattr(response, "get") else None
        channel_id = response.get("channel") if hasattr(response, "get") else None
        return PostedMessage(str(channel_id or self.slack_channel), str(ts)) if ts else None


class SlackApp:
    """The Slack app behind a bot-token connection, for the way back: its signing secret (the connection's extra
    ``signing_secret``), who clicked (``users.info``), and updates of a message tasklens sent.

    Each call makes one request with the ``[tasklens] http_timeout_s`` timeout and raises :class:`DeliveryError`
    (never carrying the token) when Slack refuses or cannot be reached.
    """

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def extra(self) -> dict[str, Any]:
        """The connection's extra (``signing_secret``, ``airflow_users``); ``{}`` when it cannot be read."""
        from airflow.providers.slack.hooks.slack import SlackHook  # noqa: PLC0415 - the provider SDK loads only when Slack is used

        try:
            conn = SlackHook.get_connection(self.conn_id)
        except Exception:
            return {}
        return dict(conn.extra_dejson or {})

    def signing_secret(self) -> str | None:
        """The app's signing secret (Slack app settings, Basic Information), from the connection's extra."""
        secret = self.extra().get("signing_secret")
        return str(secret) if secret else None

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        from airflow.providers.slack.hooks.slack import SlackHook  # noqa: PLC0415 - the provider SDK loads only when Slack is used

        conn = SlackHook.get_connection(self.conn_id)
        secrets = _secrets_of(conn)
        hook = SlackHook(
            slack_conn_id=self.conn_id, timeout=config.http_timeout_s(), retry_handlers=[], logger=_SDK_LOG,  # type: ignore[arg-type]
        )
        try:
            response = getattr(hook.client, method)(**kwargs)
        except Exception as exc:
            data = getattr(getattr(exc, "response", None), "data", None)
            detail = data.get("error") if isinstance(data, Mapping) else type(exc).__name__
            raise DeliveryError(f"Slack {method} failed: {detail}", retryable=False, secrets=secrets) from None
        return dict(response.data) if isinstance(response.data, Mapping) else {}

    def user_email(self, user_id: str) -> str | None:
        """The email of Slack user ``user_id`` (needs the ``users:read.email`` scope), or None when it has none."""
        profile = (self._call("users_info", user=user_id).get("user") or {}).get("profile") or {}
        email_address = profile.get("email")
        return str(email_address) if email_address else None

    def update_message(self, channel_id: str, ts: str, body: Mapping[str, Any]) -> None:
        """Replace the message ``ts`` in ``channel_id`` with ``body`` (``text`` and ``blocks``)."""
        self._call("chat_update", channel=channel_id, ts=ts, **dict(body))

    def post_ephemeral(self, channel_id: str, user_id: str, text: str) -> None:
        """A message only ``user_id`` sees, in ``channel_id``."""
        self._call("chat_postEphemeral", channel=channel_id, user=user_id, text=text)


def _redacted(url: str) -> str:
    """A webhook URL without its secret token path, for error messages."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/…"

"""Slack through ``apache-airflow-providers-slack``: ``SlackWebhookHook`` for ``slackwebhook`` connections,
``SlackHook`` (``chat_postMessage``) for ``slack`` bot-token connections.

slack_sdk's own retry handlers are turned off (``retry_handlers=[]``): the dispatcher owns retries, backoff and
``Retry-After``, so a channel makes exactly one HTTP request per :meth:`SlackChannel.send`.
"""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Mapping
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.exceptions import DeliveryError

__all__ = ["SlackChannel", "classify_status"]


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == "retry-after":
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def classify_status(status: int, body: Any, headers: Mapping[str, Any] | None) -> DeliveryError:
    """The DeliveryError for a non-200 Slack answer: 429 and 5xx are retryable, other 4xx are not."""
    text = str(body)[:300] if body is not None else ""
    if status == 429:
        return DeliveryError(
            f"Slack rate-limited the message (HTTP 429, Retry-After {_retry_after(headers)}): {text}",
            retryable=True,
            retry_after_s=_retry_after(headers),
        )
    if status >= 500:
        return DeliveryError(f"Slack answered HTTP {status}: {text}", retryable=True)
    return DeliveryError(
        f"Slack rejected the message (HTTP {status}: {text}); check the connection's webhook token or channel",
        retryable=False,
    )


def _network_error(exc: BaseException, target: str) -> DeliveryError:
    if isinstance(exc, (TimeoutError, socket.timeout)) or "timed out" in str(exc):
        return DeliveryError(f"Slack did not answer within the timeout ({target}): {exc}", retryable=True)
    reason = getattr(exc, "reason", exc)
    return DeliveryError(f"could not reach Slack at {target}: {reason}", retryable=True)


class SlackChannel:
    """One Slack target. Options: ``conn_id`` (default ``[tasklens] slack_conn_id``), ``channel`` (bot tokens)."""

    channel_type = "slack"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or config.slack_conn_id())
        self.slack_channel = options.get("channel") or options.get("slack_channel")

    def render(self, notification: Notification) -> dict[str, Any]:
        from tasklens import messages

        return dict(messages.render_slack(notification, base_url=config.base_url()))

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Post ``notification``; raises :class:`DeliveryError` saying what went wrong."""
        self.post(self.render(notification), timeout_s=timeout_s)

    def post(self, body: Mapping[str, Any], *, timeout_s: float | None = None) -> None:
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        conn_type = self._conn_type()
        if conn_type == "slack":
            self._post_api(body, timeout)
        else:
            self._post_webhook(body, timeout)

    def _conn_type(self) -> str:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        try:
            conn = SlackWebhookHook.get_connection(self.conn_id)
        except Exception as exc:
            raise DeliveryError(
                f"Slack connection {self.conn_id!r} is not defined ({exc}); create it (type slackwebhook, "
                f"password = webhook token) or set AIRFLOW_CONN_{self.conn_id.upper()}",
                retryable=False,
            ) from exc
        return str(conn.conn_type or "slackwebhook")

    def _post_webhook(self, body: Mapping[str, Any], timeout: float) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        try:
            hook = SlackWebhookHook(slack_webhook_conn_id=self.conn_id, timeout=timeout, retry_handlers=[])  # type: ignore[arg-type]
            client = hook.client
        except Exception as exc:
            raise DeliveryError(f"Slack connection {self.conn_id!r} is unusable: {exc}", retryable=False) from exc
        target = _redacted(client.url)
        try:
            response = client.send_dict(dict(body))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _network_error(exc, target) from exc
        if response.status_code != 200:
            raise classify_status(response.status_code, response.body, response.headers)

    def _post_api(self, body: Mapping[str, Any], timeout: float) -> None:
        from airflow.providers.slack.hooks.slack import SlackHook
        from slack_sdk.errors import SlackApiError

        if not self.slack_channel:
            raise DeliveryError(
                f"Slack channel {self.name!r} uses bot-token connection {self.conn_id!r} but has no `channel` "
                "option; add `channel: \"#alerts\"` to it in the rules file",
                retryable=False,
            )
        try:
            hook = SlackHook(slack_conn_id=self.conn_id, timeout=timeout, retry_handlers=[])  # type: ignore[arg-type]
            client = hook.client
        except Exception as exc:
            raise DeliveryError(f"Slack connection {self.conn_id!r} is unusable: {exc}", retryable=False) from exc
        try:
            client.chat_postMessage(channel=self.slack_channel, **dict(body))
        except SlackApiError as exc:
            response = exc.response
            raise classify_status(response.status_code, response.data, response.headers) from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise _network_error(exc, client.base_url) from exc


def _redacted(url: str) -> str:
    """A webhook URL without its secret token path, for error messages."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/…"

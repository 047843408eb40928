"""Email through ``apache-airflow-providers-smtp`` (``SmtpHook``): multipart/alternative, plain text + HTML.

A plain local SMTP server works with connection extras ``{"disable_ssl": true, "disable_tls": true}``. The hook's
own retry loop is turned off (the dispatcher retries) and its timeout is ``[tasklens] http_timeout_s``.

Each message carries a ``Message-ID`` derived from the deliveries it holds (:attr:`Notification.idempotency_key`),
so a message sent again after a dispatcher crash has the same id, and mail clients and archives that deduplicate
on it show it once.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterable, Mapping
from email.mime.text import MIMEText
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.providers.smtp.hooks.smtp import SmtpHook

from tasklens import config, messages
from tasklens.alerts import Notification
from tasklens.exceptions import DeliveryError

__all__ = ["EmailChannel", "TasklensSmtpHook", "message_id"]


class TasklensSmtpHook(SmtpHook):
    """SmtpHook that sends a plain-text part next to the HTML one, with tasklens's timeout and no retries."""

    def __init__(self, smtp_conn_id: str, *, timeout_s: float, plain_text: str | None = None) -> None:
        super().__init__(smtp_conn_id=smtp_conn_id)
        self._timeout_s = timeout_s
        self.plain_text = plain_text

    @property
    def timeout(self) -> int:
        return self._timeout_s  # type: ignore[return-value]  # smtplib takes float seconds

    @property
    def smtp_retry_limit(self) -> int:
        return 0

    def _build_mime_message(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["mime_subtype"] = "alternative"
        msg, recipients = super()._build_mime_message(*args, **kwargs)
        if self.plain_text is not None:
            # RFC 2046: in multipart/alternative the preferred (HTML) part comes last.
            parts: list[Any] = msg.get_payload()  # type: ignore[assignment]  # multipart: a list
            parts.insert(0, MIMEText(self.plain_text, "plain", "utf-8"))
        return msg, recipients


def _addresses(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [a.strip() for a in value.replace(";", ",").split(",") if a.strip()]
    if isinstance(value, Iterable):
        return [str(a).strip() for a in value if str(a).strip()]
    return [str(value)]


class EmailChannel:
    """One email target. Options: ``to`` (else the connection's ``to`` extra), ``cc``, ``from_email``,
    ``conn_id`` (default ``[tasklens] smtp_conn_id``)."""

    channel_type = "email"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or config.smtp_conn_id())
        self.to = _addresses(options.get("to"))
        self.cc = _addresses(options.get("cc"))
        self.from_email = options.get("from_email")

    def render(self, notification: Notification) -> tuple[str, str, str]:
        subject, html, text = messages.render_email(notification, base_url=config.base_url())
        return str(subject), str(html), str(text)

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Mail ``notification``; raises :class:`DeliveryError` saying what went wrong."""
        subject, html, text = self.render(notification)
        self.post(subject, html, text, timeout_s=timeout_s, message_id=message_id(notification.idempotency_key))

    def _connection(self) -> Any:
        """The SMTP connection. Any failure to read it is retryable: Airflow reports a secrets backend or metadata
        database outage as "isn't defined", exactly as it reports a missing connection."""
        try:
            return SmtpHook.get_connection(self.conn_id)
        except Exception as exc:
            raise DeliveryError(
                f"could not read SMTP connection {self.conn_id!r} ({type(exc).__name__}: {exc}); retrying. If it "
                f"does not exist, create it (type smtp) or set AIRFLOW_CONN_{self.conn_id.upper()}",
                retryable=True,
            ) from None

    def post(
        self, subject: str, html: str, text: str, *, timeout_s: float | None = None, message_id: str | None = None
    ) -> None:
        conn = self._connection()
        secrets = (conn.password, conn.login)
        recipients = self.to or _addresses(conn.extra_dejson.get("to"))
        if not recipients:
            raise DeliveryError(
                f"email channel {self.name!r} has no recipients; add `to: [oncall@example.com]` to it in the "
                f"rules file or a `to` extra to connection {self.conn_id!r}",
                retryable=False,
            )
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        hook = TasklensSmtpHook(self.conn_id, timeout_s=timeout, plain_text=text)
        try:
            with hook as smtp:
                smtp.send_email_smtp(
                    to=recipients,
                    cc=self.cc or None,
                    subject=subject,
                    html_content=html,
                    from_email=self.from_email or smtp.from_email or f"tasklens@{socket.getfqdn()}",
                    custom_headers={"Message-ID": message_id} if message_id else None,
                )
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"SMTP server refused every recipient {recipients}: {exc}", retryable=False, secrets=secrets
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login failed for connection {self.conn_id!r}: {exc}", retryable=False, secrets=secrets
            ) from None
        except smtplib.SMTPResponseException as exc:
            retryable = 400 <= exc.smtp_code < 500
            raise DeliveryError(
                f"SMTP server answered {exc.smtp_code}: {exc.smtp_error!r}", retryable=retryable, secrets=secrets
            ) from None
        except (OSError, smtplib.SMTPException, TimeoutError) as exc:
            raise DeliveryError(
                f"could not send mail through connection {self.conn_id!r}: {exc}", secrets=secrets
            ) from None
        except AirflowNotFoundException as exc:  # the hook reads the connection again: as retryable as above
            raise DeliveryError(
                f"could not read SMTP connection {self.conn_id!r} ({exc}); retrying", secrets=secrets
            ) from None
        except Exception as exc:  # the hook raises AirflowException for a connection without a sender, say
            raise DeliveryError(
                f"SMTP connection {self.conn_id!r} is unusable: {exc}", retryable=False, secrets=secrets
            ) from None


def message_id(key: str | None) -> str | None:
    """The ``Message-ID`` of the message with idempotency key ``key`` (the same on every send of it)."""
    return f"<tasklens.{key}@tasklens.invalid>" if key else None

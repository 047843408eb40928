"""One HTTP POST for the channels that speak plain HTTP (PagerDuty Events, Teams, webhooks), with the dispatcher's
timeout, no retries of its own (the dispatcher owns them) and every answer mapped to a :class:`DeliveryError`:
429 (``Retry-After`` kept) and 5xx and network errors are retryable, other 4xx are not.

Errors never carry the URL's path or query (webhook URLs hold their secret there) nor the connection's secrets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

import requests

from tasklens.channels.slack import parse_retry_after
from tasklens.exceptions import DeliveryError
from tasklens.redact import redact

__all__ = ["HttpAnswer", "answer_or_raise", "post", "read_connection", "secrets_of", "target_of"]

_BODY_IN_ERRORS = 300  # characters of an error answer quoted in the DeliveryError


@dataclasses.dataclass(frozen=True)
class HttpAnswer:
    """A 2xx answer: status, headers and body text."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def target_of(url: str) -> str:
    """``scheme://host/…``: where a request went, for messages, without the secret path or query."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}/…"


def post(
    service: str,
    url: str,
    body: bytes,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    session: requests.Session | None = None,
) -> HttpAnswer:
    """POST ``body`` (JSON) to ``url`` once; returns a 2xx answer or raises ``DeliveryError`` naming ``service``."""
    secrets = (*secrets, url)
    all_headers = {"Content-Type": "application/json", "User-Agent": "tasklens"}
    all_headers.update(headers or {})
    try:
        response = (session or requests).post(
            url, data=body, headers=all_headers, timeout=timeout_s, allow_redirects=False
        )
    except requests.Timeout as exc:
        raise DeliveryError(
            f"{service} did not answer within {timeout_s:g}s ({target_of(url)}): {type(exc).__name__}",
            retryable=True, secrets=secrets,
        ) from None
    except requests.exceptions.InvalidURL as exc:
        raise DeliveryError(
            f"{service}: unusable URL ({type(exc).__name__}); check the connection", retryable=False, secrets=secrets
        ) from None
    except (requests.RequestException, OSError) as exc:
        reason = redact(str(exc), secrets)
        raise DeliveryError(
            f"could not reach {service} at {target_of(url)}: {type(exc).__name__}: {reason}",
            retryable=True, secrets=secrets,
        ) from None
    return answer_or_raise(service, response.status_code, response.headers, response.text, secrets=secrets)


def answer_or_raise(
    service: str, status: int, headers: Mapping[str, str], text: str, *, secrets: Iterable[str | None] = ()
) -> HttpAnswer:
    """``HttpAnswer`` for a 2xx status, else the ``DeliveryError`` it stands for."""
    if 200 <= status < 300:
        return HttpAnswer(status, dict(headers), text)
    quoted = (text or "")[:_BODY_IN_ERRORS]
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        raise DeliveryError(
            f"{service} rate-limited the message (HTTP 429, Retry-After {retry_after}): {quoted}",
            retryable=True, retry_after_s=retry_after, secrets=secrets,
        )
    if status >= 500 or status == 408:
        raise DeliveryError(
            f"{service} answered HTTP {status}: {quoted}", retryable=True,
            retry_after_s=parse_retry_after(_header(headers, "Retry-After")), secrets=secrets,
        )
    raise DeliveryError(
        f"{service} rejected the message (HTTP {status}: {quoted}); check the connection and the channel's options",
        retryable=False, secrets=secrets,
    )


def _header(headers: Mapping[str, Any], name: str) -> Any:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def read_connection(conn_id: str, service: str, how: str) -> Any:
    """Airflow connection ``conn_id``. Any failure to read it is retryable: Airflow reports a secrets backend or
    metadata database outage as "isn't defined", exactly as it reports a missing connection, so tasklens retries
    until ``delivery_max_age_s`` and then falls back. ``how`` says how to create it."""
    from airflow.sdk import BaseHook  # noqa: PLC0415 - Airflow's SDK stays out of processes that only read the rules file

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise DeliveryError(
            f"could not read {service} connection {conn_id!r} ({type(exc).__name__}: {exc}); retrying. If it does "
            f"not exist, create it ({how}) or set AIRFLOW_CONN_{conn_id.upper()}",
            retryable=True,
        ) from None


def secrets_of(conn: Any) -> tuple[str | None, ...]:
    """What of a connection may never appear in an error: its password, login and host."""
    return (getattr(conn, "password", None), getattr(conn, "login", None), getattr(conn, "host", None))

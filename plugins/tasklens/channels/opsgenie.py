"""Opsgenie through ``apache-airflow-providers-opsgenie`` (``OpsgenieAlertHook`` and its ``opsgenie_sdk`` client),
one Opsgenie alert per tasklens alert.

Connection: type ``opsgenie`` with the API key (of an API integration) in its password and, optionally, the API
base URL in its host (the hook's default is ``https://api.opsgenie.com``; ``https://api.eu.opsgenie.com`` for EU
accounts; a local server in tests). Rules-file options: ``conn_id`` (default ``tasklens_opsgenie``), ``source``
(default ``tasklens``), ``tags`` (added to ``tasklens`` and the rule's name).

What is mirrored: the alert's fingerprint is the Opsgenie ``alias``, so Opsgenie folds repeats and escalations
into one alert (its count goes up). ``alert``/``repeat``/``escalation``/``digest`` messages create (one request
per alert), ``resolve`` closes and ``ack`` acknowledges by alias (``identifierType=alias``). Priority follows
severity: critical P1, warning P3, info P5. ``tasklens test-alert`` creates and at once closes a test alert.

The SDK's own retry loop (tenacity, up to 5 tries over 60 s) is turned off and every 4xx/5xx raises, so one send is
one request per alert with the dispatcher's timeout; the dispatcher owns retries and ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels import _http
from tasklens.channels._render import alert_fields, plain_parts
from tasklens.exceptions import DeliveryError
from tasklens.text import bounded

__all__ = ["OpsgenieChannel"]

_PRIORITY = {"critical": "P1", "warning": "P3", "info": "P5"}
_MESSAGE_LIMIT = 130  # Opsgenie's limits on a created alert's fields
_DESCRIPTION_LIMIT = 15000
_DETAIL_LIMIT = 8000
_TAG_LIMIT = 50


def _tag(value: str) -> str:
    return bounded(value.replace(",", " "), _TAG_LIMIT, "…")


class OpsgenieChannel:
    """One Opsgenie API integration."""

    channel_type = "opsgenie"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or "tasklens_opsgenie")
        self.source = str(options.get("source") or "tasklens")
        tags = options.get("tags") or ()
        self.tags = (tags,) if isinstance(tags, str) else tuple(str(t) for t in tags)

    def requests(self, notification: Notification) -> list[tuple[str, str, dict[str, Any]]]:
        """``(action, alias, payload)`` per alert: action ``create``, ``close`` or ``acknowledge``."""
        parts = plain_parts(notification)
        action = {"resolve": "close", "ack": "acknowledge"}.get(notification.kind, "create")
        found: list[tuple[str, str, dict[str, Any]]] = []
        for snapshot, item in zip(notification.items, parts["items"], strict=True):
            fields = alert_fields(snapshot, item)
            alias = snapshot.alert.fingerprint
            if notification.kind == "test":
                alias = f"tasklens-test-{notification.channel}"
            if action != "create":
                note = "resolved in tasklens" if action == "close" else "acknowledged in tasklens"
                found.append((action, alias, {"source": self.source, "note": note}))
                continue
            description = "\n".join(
                line for line in (fields["summary"], fields["exception_message"] or "", fields["urls"]["alert"] or "",
                                  fields["urls"]["log"] or "") if line
            )
            details = {
                key: bounded(str(value), _DETAIL_LIMIT, "…")
                for key, value in (
                    ("dag_id", fields["dag_id"]), ("task_id", fields["task_id"]), ("run_id", fields["run_id"]),
                    ("try_number", fields["try_number"]), ("rule", fields["rule"]), ("kind", fields["kind"]),
                    ("exception_type", fields["exception_type"]), ("occurrences", fields["occurrences"]),
                    ("first_seen", fields["first_seen"]), ("alert_url", fields["urls"]["alert"]),
                    ("log_url", fields["urls"]["log"]),
                )
                if value not in (None, "")
            }
            payload = {
                "message": bounded(fields["title"] or "tasklens alert", _MESSAGE_LIMIT, "…"),
                "alias": alias,
                "description": bounded(description, _DESCRIPTION_LIMIT, "…"),
                "priority": _PRIORITY.get(fields["severity"], "P3"),
                "source": self.source,
                "entity": bounded(fields["dag_id"], 512, "…") or None,
                "tags": [_tag(t) for t in ("tasklens", fields["rule"], *self.tags) if t][:20],
                "details": details,
            }
            found.append(("create", alias, payload))
        if notification.kind == "test":  # nobody stays paged by a test
            found += [("close", alias, {"source": self.source, "note": "tasklens test"}) for _, alias, _ in list(found)]
        return found

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Create, close or acknowledge the alerts of ``notification``; raises :class:`DeliveryError`."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        api, secrets = self._api()
        for action, alias, payload in self.requests(notification):
            self._call(api, action, alias, payload, timeout, secrets)

    def _api(self) -> tuple[Any, tuple[str | None, ...]]:
        from airflow.exceptions import AirflowNotFoundException  # noqa: PLC0415 - the provider SDK loads only when this channel type sends
        from airflow.providers.opsgenie.hooks.opsgenie import OpsgenieAlertHook  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        try:
            hook = OpsgenieAlertHook(opsgenie_conn_id=self.conn_id)
            conn = hook.get_connection(self.conn_id)
        except AirflowNotFoundException as exc:  # also how Airflow reports a secrets backend outage: retry
            raise DeliveryError(
                f"could not read Opsgenie connection {self.conn_id!r} ({exc}); retrying. If it does not exist, "
                f"create it (type opsgenie, password = API key) or set AIRFLOW_CONN_{self.conn_id.upper()}",
                retryable=True,
            ) from None
        secrets = _http.secrets_of(conn)
        if not (conn.password or "").strip():
            raise DeliveryError(
                f"Opsgenie connection {self.conn_id!r} has no API key; put it in the connection's password",
                retryable=False,
            )
        api = hook.get_conn()
        configuration = api.api_client.configuration
        # The SDK's Configuration() is a shallow copy of one process-wide default, so every hook shares one api_key
        # dict: give this client its own, or two Opsgenie channels could send with each other's key.
        configuration.api_key = {"Authorization": conn.password}
        # One request per call: no SDK retries (the dispatcher retries), and every 4xx/5xx raises.
        configuration.retry_enabled = False
        api.api_client.rest_client.http_codes = ["4xx", "5xx"]
        return api, secrets

    def _call(
        self, api: Any, action: str, alias: str, payload: dict[str, Any], timeout: float,
        secrets: tuple[str | None, ...],
    ) -> None:
        import tenacity  # noqa: PLC0415 - the provider SDK loads only when this channel type sends
        from opsgenie_sdk import AcknowledgeAlertPayload, CloseAlertPayload, CreateAlertPayload  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        # A float _request_timeout is ignored by the SDK; a (connect, read) pair is honoured.
        options = {"_request_timeout": (timeout, timeout)}
        try:
            try:
                if action == "create":
                    api.create_alert(CreateAlertPayload(**payload), **options)
                elif action == "close":
                    api.close_alert(alias, identifier_type="alias", close_alert_payload=CloseAlertPayload(**payload),
                                    **options)
                else:
                    api.acknowledge_alert(alias, identifier_type="alias",
                                          acknowledge_alert_payload=AcknowledgeAlertPayload(**payload), **options)
            except tenacity.RetryError as wrapped:  # the SDK's retry loop, stopped after one try
                error = wrapped.last_attempt.exception()
                if error is None:
                    raise
                raise error from None
        except DeliveryError:
            raise
        except Exception as exc:
            raise self._error(exc, action, secrets) from None

    def _error(self, exc: BaseException, action: str, secrets: tuple[str | None, ...]) -> DeliveryError:
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status >= 100:
            headers = dict(getattr(exc, "headers", None) or {})
            body = getattr(exc, "body", None) or ""
            try:
                _http.answer_or_raise(f"Opsgenie ({action})", status, headers, str(body), secrets=secrets)
            except DeliveryError as error:
                return error
        import urllib3  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)) or status == 0:
            return DeliveryError(
                f"could not reach Opsgenie ({action}): {type(exc).__name__}: {exc}", retryable=True, secrets=secrets
            )
        return DeliveryError(
            f"Opsgenie client refused the request ({action}): {type(exc).__name__}: {exc}", retryable=False,
            secrets=secrets,
        )

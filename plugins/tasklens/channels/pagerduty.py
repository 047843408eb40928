"""PagerDuty through the Events API v2 (``POST {host}/v2/enqueue``), one event per alert.

Connection: type ``pagerduty_events`` (``apache-airflow-providers-pagerduty``) with the integration (routing) key
in its password, e.g. ``AIRFLOW_CONN_TASKLENS_PAGERDUTY='{"conn_type": "pagerduty_events", "password": "R0..."}'``.
Rules-file options: ``conn_id`` (default ``tasklens_pagerduty``), ``host`` (default
``https://events.pagerduty.com``; ``https://events.eu.pagerduty.com`` for EU accounts), ``source`` (the event's
``payload.source``, default ``airflow``).

What is mirrored: the alert's fingerprint is the ``dedup_key``, so PagerDuty folds repeats and escalations into
the alert they belong to. ``alert``/``repeat``/``escalation``/``digest`` messages are a ``trigger`` per alert,
``resolve`` is ``resolve`` and ``ack`` is ``acknowledge``; ``tasklens test-alert`` triggers and at once resolves a
test event. Severity maps one to one (``info``, ``warning``, ``critical``).

Why not ``PagerdutyEventsHook.send_event``: it posts through ``pagerduty.EventsApiV2Client``, which hardcodes
``https://events.pagerduty.com`` (and refuses any base URL that is not https, so no local server can stand in for
it), sleeps and retries 429 without limit and 5xx several times inside the call, with a 60 s timeout. The
dispatcher owns retries, ``Retry-After`` and timeouts, so here the hook reads the connection (the routing key) and
the provider's ``prepare_event_data`` builds the event; tasklens posts it once to ``host``. Delivery is at least
once; PagerDuty deduplicates a trigger sent twice by its ``dedup_key``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels import _http
from tasklens.channels._render import alert_fields, plain_parts
from tasklens.exceptions import DeliveryError
from tasklens.text import bounded

__all__ = ["DEFAULT_HOST", "PagerDutyChannel"]

DEFAULT_HOST = "https://events.pagerduty.com"
_ACTIONS = {"resolve": "resolve", "ack": "acknowledge"}  # every other kind triggers
_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}
_SUMMARY_LIMIT = 1024  # PagerDuty truncates payload.summary at 1,024 characters


class PagerDutyChannel:
    """One PagerDuty service (its Events API v2 integration key)."""

    channel_type = "pagerduty"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.conn_id = str(options.get("conn_id") or "tasklens_pagerduty")
        self.host = str(options.get("host") or DEFAULT_HOST).rstrip("/")
        self.source = str(options.get("source") or "airflow")

    def events(self, notification: Notification) -> list[dict[str, Any]]:
        """The Events API v2 events of ``notification``, one per alert, without the routing key."""
        from airflow.providers.pagerduty.hooks.pagerduty_events import prepare_event_data  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        action = _ACTIONS.get(notification.kind, "trigger")
        parts = plain_parts(notification)
        events = []
        for snapshot, item in zip(notification.items, parts["items"], strict=True):
            fields = alert_fields(snapshot, item)
            dedup_key = snapshot.alert.fingerprint
            if notification.kind == "test":
                dedup_key = f"tasklens-test-{notification.channel}"
            summary = fields["title"] + (f": {fields['summary']}" if fields["summary"] else "")
            links = [
                {"href": url, "text": text}
                for url, text in ((fields["urls"]["alert"], "Open in tasklens"), (fields["urls"]["log"], "Task log"))
                if url
            ]
            event = prepare_event_data(
                summary=bounded(summary, _SUMMARY_LIMIT, "…"),
                severity=_SEVERITY.get(fields["severity"], "warning"),
                source=self.source,
                custom_details={k: v for k, v in fields.items() if k not in ("urls", "title")},
                component=fields["task_id"] or None,
                group=fields["dag_id"] or None,
                class_type=fields["rule"] or None,
                action=action,
                dedup_key=dedup_key,
                links=links or None,
                action_key_name="event_action",
            )
            if action == "trigger":
                event["payload"]["timestamp"] = snapshot.alert.occurred_at
                event["client"] = "tasklens"
                if fields["urls"]["alert"]:
                    event["client_url"] = fields["urls"]["alert"]
            else:  # acknowledge and resolve carry only the key
                event = {"event_action": action, "dedup_key": dedup_key}
            events.append(event)
        if notification.kind == "test":  # nobody stays paged by a test
            events += [{"event_action": "resolve", "dedup_key": e["dedup_key"]} for e in list(events)]
        return events

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Post every event of ``notification``; raises :class:`DeliveryError` saying what went wrong."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        routing_key = self._routing_key()
        url = f"{self.host}/v2/enqueue"
        for event in self.events(notification):
            body = json.dumps({"routing_key": routing_key, **event}, ensure_ascii=False).encode("utf-8")
            _http.post("PagerDuty", url, body, timeout_s=timeout, secrets=(routing_key,))

    def _routing_key(self) -> str:
        from airflow.exceptions import AirflowNotFoundException  # noqa: PLC0415 - the provider SDK loads only when this channel type sends
        from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook  # noqa: PLC0415 - the provider SDK loads only when this channel type sends

        try:
            return PagerdutyEventsHook(pagerduty_events_conn_id=self.conn_id).integration_key
        except AirflowNotFoundException as exc:  # also how Airflow reports a secrets backend outage: retry
            raise DeliveryError(
                f"could not read PagerDuty connection {self.conn_id!r} ({exc}); retrying. If it does not exist, "
                f"create it (type pagerduty_events, password = integration key) or set "
                f"AIRFLOW_CONN_{self.conn_id.upper()}",
                retryable=True,
            ) from None
        except Exception as exc:
            raise DeliveryError(
                f"PagerDuty connection {self.conn_id!r} is unusable ({type(exc).__name__}: {exc}); put the "
                "service's Events API v2 integration key in its password",
                retryable=False,
            ) from None

"""Any Airflow notifier (a ``BaseNotifier`` subclass from any provider) as a tasklens channel.

Rules file::

    channels:
      chat:
        type: notifier
        class: airflow.providers.apprise.notifications.apprise.AppriseNotifier
        kwargs: {body: "{{ tasklens.text }}", title: "{{ tasklens.title }}", apprise_conn_id: apprise_ops}

The dispatcher, never the task, calls it: for each message it builds a **new** instance from ``class`` and
``kwargs`` (rendering templates is in place, so an instance is never reused), renders its ``template_fields``
against the context below, and calls ``notify(context)`` directly, in a worker thread bounded by the dispatcher's
timeout. Anything it raises (or a timeout) is a failed delivery, retried with backoff and then handed to the
route's fallback channels; a template that does not render is not retried. A notifier that swallows its own errors
cannot be seen failing: the Apprise provider's hook, for one, ignores Apprise's "not sent" result.

The context (a plain dict; ``ti`` also allows attribute access, ``{{ ti.task_id }}``)::

    tasklens:     {kind, channel, title, text, lines, severity, idempotency_key,
                   alerts: [one dict per alert: the webhook schema's items[] fields (tasklens.channels.webhook)]}
    title, text:  the rendered headline and body, plain text (digest lines in tasklens.lines)
    dag_id, task_id, run_id, map_index, try_number, exception:   of the first alert (exception: its message)
    ti:           {dag_id, task_id, run_id, map_index, try_number, max_tries, state, log_url}
    ts:           when the message is sent (ISO 8601, UTC)
    params:       {}

There is no Airflow ``dag``, ``task_instance`` ORM object, Variable or connection in it: tasklens sends after the
task has finished, from the api-server or ``tasklens dispatch``.
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tasklens import config
from tasklens.alerts import Notification
from tasklens.channels._render import alert_fields, plain_parts
from tasklens.exceptions import DeliveryError

__all__ = ["NotifierChannel", "notifier_context"]

_STATE = {"failure": "failed", "killed": "failed", "retry": "up_for_retry", "duration": "running"}


class _Record(dict[str, Any]):
    """A dict whose keys also read as attributes (``ti.task_id``), as task-instance objects do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def notifier_context(notification: Notification, *, now: datetime | None = None) -> dict[str, Any]:
    """The context a notifier gets for ``notification`` (see the module docstring)."""
    parts = plain_parts(notification)
    alerts = [alert_fields(s, item) for s, item in zip(notification.items, parts["items"], strict=True)]
    first = alerts[0] if alerts else {}
    severities = [a["severity"] for a in alerts]
    severity = next((s for s in ("critical", "warning", "info") if s in severities), "info")
    ti = _Record(
        dag_id=first.get("dag_id"), task_id=first.get("task_id"), run_id=first.get("run_id"),
        map_index=first.get("map_index", -1), try_number=first.get("try_number"), max_tries=first.get("max_tries"),
        state=_STATE.get(str(first.get("kind")), None), log_url=(first.get("urls") or {}).get("log"),
    )
    return {
        "tasklens": {
            "kind": notification.kind,
            "channel": notification.channel,
            "title": parts["headline"],
            "text": parts["body"],
            "lines": list(parts["lines"]),
            "severity": severity,
            "idempotency_key": notification.idempotency_key,
            "alerts": alerts,
        },
        "title": parts["headline"],
        "text": parts["body"],
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "exception": first.get("exception_message"),
        "ti": ti,
        "ts": (now or datetime.now(timezone.utc)).isoformat(),
        "params": {},
    }


class NotifierChannel:
    """Sends through the Airflow notifier ``options["class"]`` built with ``options["kwargs"]``."""

    channel_type = "notifier"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.name = name
        self.class_path = str(options.get("class") or "")
        kwargs = options.get("kwargs") or {}
        self.kwargs: dict[str, Any] = dict(kwargs) if isinstance(kwargs, Mapping) else {}
        self.conn_id = self.class_path  # what test-alert prints as "connection"

    def notifier_class(self) -> type:
        module_name, _, class_name = self.class_path.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), class_name)
        except Exception as exc:
            raise DeliveryError(
                f"notifier channel {self.name!r}: cannot import class {self.class_path!r} ({type(exc).__name__}: "
                f"{exc}); write its full dotted path, e.g. "
                "airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier",
                retryable=False,
            ) from None
        if not isinstance(found, type) or not callable(getattr(found, "notify", None)):
            raise DeliveryError(
                f"notifier channel {self.name!r}: {self.class_path!r} is not a notifier class (no notify method)",
                retryable=False,
            )
        return found

    def send(self, notification: Notification, *, timeout_s: float | None = None) -> None:
        """Build a fresh notifier, render it against the context, call ``notify``; raises ``DeliveryError``."""
        timeout = timeout_s if timeout_s is not None else config.http_timeout_s()
        notifier_class = self.notifier_class()
        context = notifier_context(notification)
        try:
            notifier = notifier_class(**copy.deepcopy(self.kwargs))
            # BaseNotifier.__call__ merges its template fields into the context first; here they never replace
            # tasklens's keys (an AppriseNotifier's raw ``title`` template would hide the rendered title).
            for field in getattr(notifier, "template_fields", ()):
                context.setdefault(field, getattr(notifier, field, None))
            if hasattr(notifier, "render_template_fields"):
                notifier.render_template_fields(context)
        except Exception as exc:
            raise DeliveryError(
                f"notifier channel {self.name!r}: {self.class_path} could not be built or rendered with its kwargs "
                f"({type(exc).__name__}: {exc}); check kwargs in the rules file",
                retryable=False,
            ) from None
        self._notify(notifier, context, timeout)

    def _notify(self, notifier: Any, context: dict[str, Any], timeout: float) -> None:
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                notifier.notify(context)
                outcome.append(None)
            except BaseException as exc:  # handed to the dispatcher's thread
                outcome.append(exc)

        worker = threading.Thread(target=run, name=f"tasklens-notifier-{self.name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if not outcome:
            raise DeliveryError(
                f"notifier channel {self.name!r}: {self.class_path}.notify did not finish within {timeout:g}s "
                "(it may still deliver)",
                retryable=True,
            )
        error = outcome[0]
        if error is not None:
            raise DeliveryError(
                f"notifier channel {self.name!r}: {self.class_path}.notify raised {type(error).__name__}: {error}",
                retryable=True,
            )

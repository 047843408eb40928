"""TaskEvent: the one typed record every tasklens stage consumes.

This is the only module that reads Airflow task-instance objects. It accepts the worker's
``RuntimeTaskInstance``, the scheduler's / api-server's ORM ``TaskInstance`` and a callback
``context`` and turns each into the same frozen :class:`TaskEvent`.
"""

from __future__ import annotations

import dataclasses
import socket
import traceback as tb
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

from tasklens.schedule import retry_schedule
from tasklens.text import bounded, bounded_tail

__all__ = [
    "EVENT_KINDS",
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "SCHEMA_VERSION",
    "TaskEvent",
    "from_context",
    "from_task_instance",
    "redact",
    "state_name",
]

SCHEMA_VERSION = 1
EventKind = Literal["running", "success", "failed", "up_for_retry", "skipped", "killed"]
EVENT_KINDS: tuple[str, ...] = ("running", "success", "failed", "up_for_retry", "skipped", "killed")
Source = Literal["worker", "scheduler", "api", "callback", "reconciler", "test"]

MAX_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 8_000
#: Any one piece of a traceback (the exception's own line, a note, a source line): a 1 MB message must not push
#: the frames out of ``MAX_TRACEBACK_CHARS``. The message itself is in ``exception_message``.
MAX_TRACEBACK_PART_CHARS = 1_000


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """One task lifecycle transition. ``to_dict()`` is the JSON Lines schema (``schema_version`` 1)."""

    event: str
    dag_id: str
    task_id: str
    run_id: str
    ts: str = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    map_index: int = -1
    try_number: int = 1
    max_tries: int | None = None
    state: str | None = None
    previous_state: str | None = None
    operator: str | None = None
    owner: str | None = None
    queue: str | None = None
    pool: str | None = None
    hostname: str | None = None
    duration_s: float | None = None
    start_date: str | None = None
    end_date: str | None = None
    log_url: str | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    reason: str | None = None
    next_retry_at: str | None = None
    dag_tags: tuple[str, ...] = ()
    source: str = "worker"
    #: Set by the pipeline on failures only (:mod:`tasklens.failures`); None on every other event.
    failure_class: str | None = None

    @property
    def attempt_key(self) -> tuple[str, str, str, int, int]:
        """Identity of one task attempt: the unit tasklens reports at most once per event kind."""
        return (self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number)

    @property
    def is_failure(self) -> bool:
        return self.event in ("failed", "killed")

    @property
    def retries_left(self) -> bool:
        return self.event == "up_for_retry"

    def to_dict(self) -> dict[str, Any]:
        # Every field is a str, number, None or a tuple of str: a shallow copy is enough (asdict deep-copies).
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for name in _FIELD_NAMES:
            data[name] = getattr(self, name)
        data["dag_tags"] = list(self.dag_tags)
        if self.failure_class is not None:  # failures only: other events' lines stay as they were
            data["failure_class"] = self.failure_class
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskEvent:
        kwargs = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        kwargs["dag_tags"] = tuple(kwargs.get("dag_tags") or ())
        return cls(**kwargs, failure_class=data.get("failure_class"))


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(TaskEvent) if field.name != "failure_class")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def redact(value: Any) -> Any:
    """Apply Airflow's secrets maskers (task SDK and core) to ``value``."""
    for module in ("airflow.sdk._shared.secrets_masker", "airflow._shared.secrets_masker"):
        try:
            masker = __import__(module, fromlist=["redact"])
            value = masker.redact(value)
        except Exception:  # noqa: S112 - an unavailable masker must not stop the event
            continue
    return value


def redact_strings(values: list[str]) -> list[str]:
    """:func:`redact` for plain strings, cheaply when nothing needs masking.

    On a plain string Airflow's maskers only replace the registered secrets (their pattern); key-name masking needs
    a mapping. So one search of that pattern over all the strings at once finds whether any string holds a secret;
    only then are they masked one by one. A masker with no secret registered leaves strings as they are and is
    skipped (the task process registers its secrets with the SDK's masker, servers with the core one).
    """
    for module in ("airflow.sdk._shared.secrets_masker", "airflow._shared.secrets_masker"):
        try:
            masker = __import__(module, fromlist=["redact"])
        except Exception:  # noqa: S112 - an unavailable masker must not stop the event
            continue
        try:
            pattern = masker._secrets_masker().replacer
            # A match across the separator only costs the slow path below; a secret inside one string always matches.
            clean = pattern is None or pattern.search("\n".join(values)) is None
        except Exception:  # its internals changed: mask the slow way rather than not at all
            clean = False
        if not clean:
            try:
                values = masker.redact(values)
            except Exception:  # noqa: S112
                continue
    return values


def _masked_message(error: BaseException | str) -> str:
    # Cut generously first (1 MB stays cheap), mask secrets, then cut to the limit: a secret split by the first
    # cut lies past the second.
    return bounded(redact(bounded(error, 4 * MAX_MESSAGE_CHARS)), MAX_MESSAGE_CHARS)


def _traceback_text(error: BaseException) -> str | None:
    """The formatted traceback (chained exceptions included) with every piece bounded, so the frames survive a
    huge message; its end (the raising frames) is kept when it is still too long."""
    limit = MAX_TRACEBACK_PART_CHARS
    parts = [
        _bounded_part(part, 4 * limit)
        for part in tb.TracebackException(type(error), error, error.__traceback__, compact=True).format()
    ]
    parts = [_bounded_part(part, limit) for part in redact_strings(parts)]
    return bounded_tail("".join(parts), MAX_TRACEBACK_CHARS)


def _bounded_part(part: str, limit: int) -> str:
    """``part`` bounded, keeping its final line break so the next part starts on its own line."""
    if len(part) <= limit:
        return bounded(part, limit)
    return bounded(part, limit - 1) + "\n" if part.endswith("\n") else bounded(part, limit)


def _exception_fields(error: BaseException | str | None) -> dict[str, Any]:
    """Type, message and traceback of ``error``; never raises, whatever ``error``'s ``__str__`` does."""
    fields: dict[str, Any] = {"exception_type": None, "exception_message": None, "traceback": None}
    if error is None:
        return fields
    if isinstance(error, BaseException):
        fields["exception_type"] = type(error).__name__
    try:
        fields["exception_message"] = _masked_message(error)
    except Exception:  # a masker failing on odd text must not lose the failure
        fields["exception_message"] = "<exception message unavailable>"
    if isinstance(error, BaseException):
        try:
            fields["traceback"] = _traceback_text(error)
        except Exception:
            fields["traceback"] = None
    # The scheduler passes the failure reason as a string ("killed externally", ...): no type, no traceback.
    return fields


def state_name(value: Any) -> str | None:
    """``TaskInstanceState.FAILED`` or ``"failed"`` -> ``"failed"``."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _task_fields(task: Any) -> dict[str, Any]:
    if task is None:
        return {}
    dag = getattr(task, "dag", None)
    tags = getattr(dag, "tags", None) or ()
    return {
        "operator": getattr(task, "task_type", None) or type(task).__name__,
        "owner": getattr(task, "owner", None),
        "pool": getattr(task, "pool", None),
        "dag_tags": tuple(sorted(str(t) for t in tags)),
    }


def _duration(start: datetime | None, end: datetime | None, fallback: Any = None) -> float | None:
    if start is not None and end is not None:
        return round((end - start).total_seconds(), 6)
    return float(fallback) if isinstance(fallback, (int, float)) else None


# Airflow builds ``log_url`` from its config on every read (~0.1 ms); a task's running and final events share it.
_log_urls: dict[tuple[Any, ...], str | None] = {}
#: The worker's log URLs are Airflow's base URL plus a path of the attempt's ids. The base is learnt from the first
#: URL Airflow builds in this process, so later attempts (``dags test`` runs every task in one process) skip its config
#: read; None until then, "" when that URL did not end with the path below (another Airflow: always ask Airflow).
_worker_log_base: str | None = None


def _worker_log_path(ti: Any) -> str:
    """The part of ``RuntimeTaskInstance.log_url`` after the base URL, as Airflow 3.3 builds it."""
    map_index, try_number = ti.map_index, ti.try_number
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    try_part = f"?try_number={try_number}" if try_number is not None and try_number > 0 else ""
    return f"/dags/{ti.dag_id}/runs/{quote(ti.run_id)}/tasks/{ti.task_id}{mapped}{try_part}"


def _airflow_log_url(ti: Any) -> str | None:
    global _worker_log_base
    if type(ti).__name__ != "RuntimeTaskInstance":
        raw = ti.log_url
        return str(raw) if raw else None
    if _worker_log_base:
        return _worker_log_base + _worker_log_path(ti)
    raw = ti.log_url
    url = str(raw) if raw else None
    if _worker_log_base is None and url:
        path = _worker_log_path(ti)
        _worker_log_base = url[: -len(path)] if url.endswith(path) and len(url) > len(path) else ""
    return url


def _log_url(ti: Any, attempt: tuple[Any, ...]) -> str | None:
    key = (type(ti).__name__, *attempt)
    if key in _log_urls:
        return _log_urls[key]
    try:
        url = _airflow_log_url(ti)
    except Exception:
        return None
    if len(_log_urls) >= 256:  # a bounded memo: long-lived schedulers see every task instance
        _log_urls.clear()
    _log_urls[key] = url
    return url


def from_task_instance(
    event: str,
    task_instance: Any,
    *,
    previous_state: Any = None,
    error: BaseException | str | None = None,
    source: str = "worker",
    reason: str | None = None,
) -> TaskEvent:
    """Build an event from a worker ``RuntimeTaskInstance`` or an ORM ``TaskInstance``.

    Fields a task instance lacks (a mapped task, a manual state change) stay ``None``.
    """
    ti = task_instance
    task = getattr(ti, "task", None)
    start = getattr(ti, "start_date", None)
    end = getattr(ti, "end_date", None)
    if end is None and event != "running":
        end = datetime.now(timezone.utc)
    fields = _task_fields(task)
    if not fields.get("operator"):
        fields["operator"] = getattr(ti, "operator", None)
    if not fields.get("pool"):
        fields["pool"] = getattr(ti, "pool", None)
    map_index = getattr(ti, "map_index", -1)
    map_index = -1 if map_index is None else int(map_index)
    try_number = int(getattr(ti, "try_number", None) or 1)
    next_retry_at = None
    if event == "up_for_retry":
        try:  # the retry time and the retry policy's reason; the event matters more than either
            next_retry_at, policy_reason = retry_schedule(ti, error)
            reason = reason or policy_reason
        except Exception:  # noqa: S110
            pass
    return TaskEvent(
        event=event,
        dag_id=str(ti.dag_id),
        task_id=str(ti.task_id),
        run_id=str(ti.run_id),
        map_index=map_index,
        try_number=try_number,
        max_tries=getattr(ti, "max_tries", None),
        state=state_name(getattr(ti, "state", None)) or event,
        previous_state=state_name(previous_state),
        queue=getattr(ti, "queue", None),
        hostname=getattr(ti, "hostname", None) or socket.gethostname(),
        duration_s=_duration(start, end, getattr(ti, "duration", None)) if event != "running" else None,
        start_date=_iso(start),
        end_date=_iso(end) if event != "running" else None,
        log_url=_log_url(ti, (ti.dag_id, ti.task_id, ti.run_id, map_index, try_number)),
        reason=reason,
        next_retry_at=next_retry_at,
        source=source,
        **fields,
        **_exception_fields(error),
    )


def from_context(
    event: str,
    context: Mapping[str, Any],
    *,
    source: str = "callback",
    reason: str | None = None,
) -> TaskEvent:
    """Build an event from a callback ``context`` (``on_failure_callback`` and friends).

    The heartbeat-timeout path runs callbacks without ``exception``; the event then carries
    ``reason`` instead.
    """
    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    if ti is None:
        dag_run = context.get("dag_run")
        task = context.get("task")
        return TaskEvent(
            event=event,
            dag_id=str(getattr(dag_run, "dag_id", None) or getattr(task, "dag_id", "unknown")),
            task_id=str(getattr(task, "task_id", "unknown")),
            run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "unknown")),
            source=source,
            reason=reason,
            **_task_fields(task),
            **_exception_fields(error),
        )
    return from_task_instance(event, ti, error=error, source=source, reason=reason)

"""Structured logs: Airflow's task log, the JSON Lines event stream, and a logger for task code.

Three things live here:

* :func:`bind_task_context` adds the task's identity to every later line of Airflow's own
  structlog task log (``structlog.contextvars``). tasklens never calls ``structlog.configure()``:
  Airflow's processor chain, secrets masker included, stays as it is.
* :func:`write_event` appends one JSON object per line to ``[tasklens] events_path`` (default
  ``$AIRFLOW_HOME/logs/tasklens/events.jsonl``), rotated by size. Many task processes append at
  once: each line is one ``write()`` on an ``O_APPEND`` descriptor, which a local POSIX file system
  applies whole and in order, and rotation happens under an ``fcntl`` lock (see :class:`EventStream`).
* :func:`get_logger` and :func:`timed` for task code.

Event stream lines (``schema_version`` 1)::

    {"schema_version": 1, "event": "failed", "dag_id": ..., "task_id": ..., "run_id": ..., ...}   # TaskEvent.to_dict()
    {"schema_version": 1, "event": "business", "name": "rows_loaded", "ts": ..., "dag_id": ...,
     "task_id": ..., "run_id": ..., "map_index": -1, "try_number": 1, "data": {"rows": 1200}}

Readers tell them apart by ``event``: the task lifecycle kinds are ``events.EVENT_KINDS``.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import structlog

from tasklens import config, events, metrics, otel
from tasklens._once import WarnOnce
from tasklens.events import TaskEvent
from tasklens.text import safe_text

__all__ = [
    "BUSINESS_EVENT",
    "EventStream",
    "TaskLogger",
    "bind_task_context",
    "get_logger",
    "reset",
    "timed",
    "write_business_event",
    "write_event",
]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

#: ``event`` of a business-event line in the JSON Lines stream.
BUSINESS_EVENT = "business"

_warnings = WarnOnce(log)
_warn_once = _warnings.warn


# -- Airflow's task log ----------------------------------------------------------------------------


def bind_task_context(event: TaskEvent) -> None:
    """Add task identity and the tasklens event to every later line of this task's log.

    Only in the task process (``source == "worker"``): binding in the scheduler would stamp one
    task's identity on unrelated scheduler lines.
    """
    if event.source != "worker":
        return
    structlog.contextvars.bind_contextvars(
        dag_id=event.dag_id,
        task_id=event.task_id,
        run_id=event.run_id,
        map_index=event.map_index,
        try_number=event.try_number,
        tasklens_event=event.event,
    )


# -- the JSON Lines event stream -------------------------------------------------------------------


class EventStream:
    """Append-only JSON Lines file shared by many processes, rotated by size.

    Why no line is torn or lost:

    * every line is written by a single ``os.write`` on an ``O_APPEND`` descriptor: the kernel
      moves to the end of file and writes the whole buffer under the inode lock, so lines from
      concurrent processes never interleave (local file systems; not NFS);
    * after a write that reaches ``max_bytes`` the writer takes an exclusive ``fcntl.flock`` on
      ``<path>.lock``, checks the file is still the one it wrote to and still full (another process
      may have rotated it already), renames ``path -> path.1 -> path.2 ...`` and reopens;
    * a process still holding the old descriptor writes at most one more line to ``path.1`` and
      then sees that file is full, finds it rotated under the lock, and reopens ``path``.

    A file may exceed ``max_bytes`` by the last line of each writer. Lines are lost only when
    more than ``backup_count`` rotations happen before a reader catches up; with ``backup_count``
    0 a full file is deleted.
    """

    def __init__(self, path: Path, max_bytes: int, backup_count: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        """Append ``data`` (one or more whole lines) in one write; rotate if the file is full."""
        with self._lock:
            fd = self._open()
            written = os.write(fd, data)
            while written < len(data):  # only on a full disk or a signal; the line may then be torn
                written += os.write(fd, data[written:])
            if os.fstat(fd).st_size >= self.max_bytes:
                self._rotate(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _rotate(self, fd: int) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            ours = os.fstat(fd)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            same_file = current is not None and (current.st_dev, current.st_ino) == (ours.st_dev, ours.st_ino)
            if same_file and current is not None and current.st_size >= self.max_bytes:
                self._shift_backups()
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        os.close(fd)
        self._fd = None  # the next append opens the fresh file

    def _shift_backups(self) -> None:
        if self.backup_count <= 0:
            os.unlink(self.path)
            return
        for index in range(self.backup_count - 1, 0, -1):
            source = self.path.with_name(f"{self.path.name}.{index}")
            if source.exists():
                os.replace(source, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


_streams: dict[tuple[Path, int, int], EventStream] = {}
_streams_lock = threading.Lock()


def _stream() -> EventStream | None:
    path = config.events_path()
    if path is None:
        return None
    key = (path, config.events_max_bytes(), config.events_backup_count())
    stream = _streams.get(key)
    if stream is None:
        with _streams_lock:
            stream = _streams.setdefault(key, EventStream(*key))
    return stream


def _after_fork_in_child() -> None:
    global _streams_lock
    _streams_lock = threading.Lock()
    for stream in _streams.values():
        stream.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def reset() -> None:
    """Close the event stream files and forget warnings (tests, after changing configuration)."""
    with _streams_lock:
        for stream in _streams.values():
            stream.close()
        _streams.clear()
    _warnings.forget()


def _encode(record: Mapping[str, Any]) -> bytes:
    # Any value prints (safe_text never raises); lone surrogates (bytes decoded with surrogateescape) cannot be
    # UTF-8, so the line is cleaned as a whole: U+FFFD, never a failed write.
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=safe_text)
    return (safe_text(line) + "\n").encode("utf-8")


def _append(record: Mapping[str, Any]) -> None:
    stream = _stream()
    if stream is None:
        return
    data = _encode({**record, **otel.trace_ids()})  # trace_id/span_id while a trace is active
    try:
        stream.append(data)
    except OSError as exc:
        _warn_once(
            f"write:{stream.path}",
            "tasklens cannot write the event stream %s (%s); events still reach logs, metrics and alerts. "
            "Fix: make the directory writable or set [tasklens] events_path (empty turns the stream off).",
            stream.path,
            exc,
        )
        metrics.count_error("logs.stream")


def _redacted_event(event: TaskEvent) -> dict[str, Any]:
    # The keys are our fixed schema, so only the text values need masking; masking the value list
    # skips the masker's per-key checks (10x cheaper than redacting the dict).
    record = event.to_dict()
    keys = [key for key, value in record.items() if isinstance(value, str)]
    for key, value in zip(keys, events.redact_strings([record[key] for key in keys]), strict=True):
        record[key] = value
    return record


def write_event(event: TaskEvent) -> None:
    """Append ``event.to_dict()`` as one JSON line to the event stream (if ``events_path`` is set)."""
    if config.events_path() is None:
        return
    _append(_redacted_event(event))


def write_business_event(name: str, data: Mapping[str, Any], task: TaskEvent | None) -> None:
    """Append one ``{"event": "business", "name": ..., "data": {...}}`` line (data secrets masked)."""
    if config.events_path() is None:
        return
    record: dict[str, Any] = {
        "schema_version": events.SCHEMA_VERSION,
        "event": BUSINESS_EVENT,
        "name": safe_text(name),
        "ts": datetime.now(timezone.utc).isoformat(),
        "dag_id": task.dag_id if task else None,
        "task_id": task.task_id if task else None,
        "run_id": task.run_id if task else None,
        "map_index": task.map_index if task else None,
        "try_number": task.try_number if task else None,
        "data": events.redact(dict(data)),
    }
    _append(record)


# -- the logger for task code -----------------------------------------------------------------------

_RESERVED_KEYS = frozenset({"event", "business_event", "operation", "duration_s"})


def _safe_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    return {(f"data_{key}" if key in _RESERVED_KEYS else str(key)): value for key, value in data.items()}


class TaskLogger:
    """A structlog logger bound to the running task, with tasklens helpers.

    Every structlog method (``info``, ``warning``, ``bind``...) works as usual; ``bind`` returns
    a ``TaskLogger`` again.
    """

    def __init__(self, logger: Any, task: TaskEvent | None) -> None:
        self._logger = logger
        self.task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def bind(self, **values: Any) -> TaskLogger:
        return TaskLogger(self._logger.bind(**values), self.task)

    def business_event(self, name: str, **data: Any) -> None:
        """Log a business fact (``rows_loaded``, ``model_promoted``) and append it to the event stream."""
        # Masked here as well: outside a task no Airflow masker sits in the structlog chain.
        masked = events.redact(dict(data))
        self._logger.info("business_event", business_event=name, **_safe_kwargs(masked))
        try:
            write_business_event(name, masked, self.task)
        except Exception:
            _warn_once("business", "tasklens could not write business event %r", name, exc_info=True)

    def performance(self, operation: str, duration_s: float, **figures: Any) -> None:
        """Log how long ``operation`` took (plus any figures) and record it in ``tasklens.operation.duration``."""
        self._logger.info("performance", operation=operation, duration_s=round(duration_s, 6), **_safe_kwargs(figures))
        labels = {key: value for key, value in figures.items() if key in metrics.ALLOWED_LABELS}
        metrics.observe_operation(operation, duration_s, **labels)


def get_logger(name: str = "tasklens.task") -> TaskLogger:
    """A structlog logger bound to the running task (dag_id, task_id, run_id, try_number, map_index).

    Outside a task it is an unbound logger with the same helpers::

        log = tasklens.get_logger()
        log.info("loading", table="flights")
        log.business_event("rows_loaded", rows=1200)
    """
    task = metrics.current_task_event()
    logger = structlog.get_logger(name)
    if task is not None:
        logger = logger.bind(
            dag_id=task.dag_id,
            task_id=task.task_id,
            run_id=task.run_id,
            try_number=task.try_number,
            map_index=task.map_index,
        )
    return TaskLogger(logger, task)


class timed:  # lower case: reads like the function it stands in for
    """Log the duration of a block or function and record it as ``tasklens.operation.duration``.

    ``labels`` are logged; those in the metric label allow-list also label the metric. Exceptions
    from the timed code pass through unchanged (the record then says ``outcome="error"``)::

        with tasklens.timed("load_orders"):
            load()

        @tasklens.timed("score_model")
        def score(): ...
    """

    def __init__(self, operation: str, **labels: Any) -> None:
        self.operation, self.labels = operation, labels
        self._starts: list[float] = []

    def __enter__(self) -> timed:
        self._starts.append(time.perf_counter())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        duration = time.perf_counter() - self._starts.pop()
        outcome = "ok" if exc_type is None else "error"
        try:
            get_logger().performance(self.operation, duration, outcome=outcome, **self.labels)
        except Exception:
            _warn_once("timed", "tasklens could not record the duration of %r", self.operation, exc_info=True)

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with timed(self.operation, **self.labels):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with timed(self.operation, **self.labels):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

"""Failure classes: which kind of problem ended a task attempt. Pure.

Every failure event and the alerts it raises carry one class, so routes can split them
(``match: {failure_class: infra}`` -> the platform team's channel):

========== =============================================================================
infra      killed (SIGKILL, OOM), heartbeat timeout, lost worker, executor or pod errors
timeout    the task's ``execution_timeout``
dependency an external system unreachable: DB ``OperationalError``, connection refused,
           DNS, HTTP 5xx and 429
data       data-quality checks, schema and validation errors
code       anything else
upstream   the task ended ``upstream_failed``
========== =============================================================================

The classifier is a table, tried in order, first match wins (:data:`BUILTIN_TABLE`). The rules
file's ``failure_classes`` entries are tried before the built-in ones; an entry without criteria
matches every failure, so ending the list with ``- class: code`` turns the built-in table off::

    failure_classes:
      - class: dependency
        exception_type: [SnowflakeOperationalError]
      - class: data
        message: '(?i)expectation .* failed'
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tasklens.events import TaskEvent
from tasklens.exceptions import ConfigError

__all__ = [
    "BUILTIN_TABLE",
    "FAILURE_CLASSES",
    "FAILURE_EVENTS",
    "ClassRule",
    "classify",
    "parse_table",
]

FAILURE_CLASSES: tuple[str, ...] = ("infra", "timeout", "dependency", "data", "code", "upstream")
#: Event kinds (and task states) that carry a failure class; a success never does.
FAILURE_EVENTS = frozenset({"failed", "up_for_retry", "killed", "upstream_failed"})
#: The class of a failure no entry matches.
FALLBACK_CLASS = "code"
_ENTRY_KEYS = ("class", "events", "exception_type", "message", "description")
_FIX_REGEX = "fix the regular expression (quote it in single quotes so YAML keeps backslashes)"


@dataclasses.dataclass(frozen=True)
class ClassRule:
    """One row of the classifier table. Every given criterion must hold; no criterion matches every failure.

    ``events`` are event kinds or task states (``killed``, ``failed``, ``up_for_retry``, ``upstream_failed``);
    ``exception_type`` are globs on the exception's class name; ``message`` is searched (``re.search``) in the
    exception message and the failure reason.
    """

    failure_class: str
    events: tuple[str, ...] = ()
    exception_type: tuple[str, ...] = ()
    message: re.Pattern[str] | None = None
    description: str = ""

    def matches(self, event: TaskEvent) -> bool:
        if self.events and event.event not in self.events and (event.state or "") not in self.events:
            return False
        if self.exception_type and not any(
            fnmatch.fnmatchcase(event.exception_type or "", pattern) for pattern in self.exception_type
        ):
            return False
        if self.message is not None:
            text = "\n".join(filter(None, (event.exception_message, event.reason)))
            if not self.message.search(text):
                return False
        return True


def _builtin(failure_class: str, description: str, *, events: Sequence[str] = (),
             exception_type: Sequence[str] = (), message: str | None = None) -> ClassRule:
    return ClassRule(failure_class, tuple(events), tuple(exception_type),
                     re.compile(message) if message else None, description)


#: The built-in classifier, in order. ``docs/failure-classes.md`` documents each row.
BUILTIN_TABLE: tuple[ClassRule, ...] = (
    _builtin("upstream", "the task never ran: an upstream task failed", events=["upstream_failed"]),
    _builtin("infra", "killed outside Python: SIGKILL, OOM killer, lost worker", events=["killed"]),
    _builtin("timeout", "execution_timeout", exception_type=["AirflowTaskTimeout"]),
    _builtin("infra", "out of memory, terminated by the supervisor or the executor",
             exception_type=["MemoryError", "AirflowTaskTerminated", "AirflowZombieTaskException",
                             "PodLaunchFailedException", "PodReconciliationError", "WorkerLostError"]),
    _builtin("infra", "heartbeat timeout, lost worker, executor or pod errors (in the reason or message)",
             message=r"(?i)heartbeat timeout|zombie|worker lost|killed externally|outside its process|"
                     r"executor reports|out of memory|\bOOM\b|oomkilled|evicted|pod .*(failed|pending)|"
                     r"terminated by signal|exited abnormally|SIGKILL|SIGTERM"),
    _builtin("dependency", "an external system unreachable (exception type)",
             exception_type=["OperationalError", "InterfaceError", "ConnectionError", "ConnectionRefusedError",
                             "ConnectionResetError", "ConnectionAbortedError", "gaierror", "herror",
                             "ConnectTimeout", "ReadTimeout", "ConnectTimeoutError", "ReadTimeoutError",
                             "NewConnectionError", "MaxRetryError", "ProtocolError", "RemoteDisconnected",
                             "ServiceUnavailable", "TooManyRequests", "SSHException", "TimeoutError"]),
    _builtin("dependency", "connection refused, DNS, HTTP 5xx and 429 (in the message)",
             message=r"(?i)connection refused|could not connect|connection (reset|timed out|aborted)|"
                     r"name or service not known|temporary failure in name resolution|"
                     r"nodename nor servname|no route to host|network is unreachable|"
                     r"\b(5\d\d|429)\b.{0,40}(error|unavailable|gateway|timeout|too many requests)|"
                     r"(service unavailable|bad gateway|gateway time-?out|too many requests)"),
    _builtin("data", "data-quality checks, schema and validation errors (exception type)",
             exception_type=["*ValidationError", "*SchemaError", "*DataQuality*", "*CheckFailed*",
                             "AnalysisException", "IntegrityError", "DataError"]),
    _builtin("data", "data-quality checks, schema and validation errors (in the message)",
             message=r"(?i)data quality|quality score|schema (mismatch|error|validation)|validation (failed|error)|"
                     r"check(s)? failed|expectation.*failed|null values? in|duplicate (key|rows?)"),
)


def classify(event: TaskEvent, table: Iterable[ClassRule] = ()) -> str | None:
    """The failure class of ``event`` (``table`` first, then :data:`BUILTIN_TABLE`); None for a non-failure."""
    if event.event not in FAILURE_EVENTS and (event.state or "") != "upstream_failed":
        return None
    for entry in (*table, *BUILTIN_TABLE):
        if entry.matches(event):
            return entry.failure_class
    return FALLBACK_CLASS


def parse_table(raw: Any, source: str, key: str = "failure_classes") -> tuple[ClassRule, ...]:
    """Validate the rules file's ``failure_classes`` list. Raises :class:`ConfigError` naming the entry and the fix
    (an unknown class, an unknown key, a regex that does not compile)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, key, f"expected a list, got {type(raw).__name__}",
                          "write each entry as a `- class: ...` item")
    return tuple(_parse_entry(item, source, f"{key}[{i}]") for i, item in enumerate(raw))


def _parse_entry(raw: Any, source: str, key: str) -> ClassRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, f"expected a mapping, got {type(raw).__name__}",
                          "write `class: <class>` and its criteria")
    for name in raw:
        if name not in _ENTRY_KEYS:
            raise ConfigError(source, f"{key}.{name}", f"unknown key {name!r}",
                              f"allowed keys: {', '.join(_ENTRY_KEYS)}")
    failure_class = raw.get("class")
    if failure_class not in FAILURE_CLASSES:
        raise ConfigError(source, f"{key}.class", f"unknown failure class {failure_class!r}",
                          f"use one of: {', '.join(FAILURE_CLASSES)}")
    message = raw.get("message")
    pattern = None
    if message is not None:
        if not isinstance(message, str) or not message:
            raise ConfigError(source, f"{key}.message", f"expected a regex string, got {message!r}", _FIX_REGEX)
        try:
            pattern = re.compile(message)
        except re.error as error:
            raise ConfigError(source, f"{key}.message", f"regex {message!r} does not compile: {error}",
                              _FIX_REGEX) from None
    events = _strings(raw.get("events"), source, f"{key}.events")
    for i, kind in enumerate(events):
        if kind not in FAILURE_EVENTS:
            raise ConfigError(source, f"{key}.events[{i}]", f"unknown failure event {kind!r}",
                              f"use any of: {', '.join(sorted(FAILURE_EVENTS))}")
    return ClassRule(str(failure_class), events, _strings(raw.get("exception_type"), source, f"{key}.exception_type"),
                     pattern, str(raw.get("description") or ""))


def _strings(value: Any, source: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise ConfigError(source, f"{key}[{i}]" if isinstance(value, list) else key,
                              f"expected a non-empty string, got {item!r}", "write a string or a list of strings")
    return tuple(items)

"""Error rules: what a failure looks like (exception classes in its chain, message patterns, HTTP status) and
whether it is worth another attempt. :func:`retry_on` and :func:`fail_on` build them."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Literal

from tasklens.exceptions import ConfigError

__all__ = [
    "Action",
    "ErrorRule",
    "as_timedelta",
    "error_chain",
    "fail_on",
    "import_exception_class",
    "resolve_exceptions",
    "retry_after_s",
    "retry_on",
]

Action = Literal["retry", "fail"]


def _status_code(error: BaseException) -> int | None:
    """HTTP status of an error: requests/httpx ``response.status_code``, aiohttp ``status``, urllib ``code``."""
    response = getattr(error, "response", None)
    for value in (getattr(response, "status_code", None), getattr(error, "status", None), getattr(error, "code", None)):
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def retry_after_s(error: BaseException) -> float | None:
    """Seconds from a numeric ``Retry-After`` header, if the error carries a response with one."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    try:
        raw = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error and its causes: wrappers (AirflowException, Py4JJavaError) hide the real failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def import_exception_class(path: str) -> type[BaseException]:
    from airflow.sdk.module_loading import import_string  # noqa: PLC0415 - Airflow's operator internals load only when a preset is applied

    value = import_string(path)
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise TypeError(f"{path} is not an exception class")
    return value


@dataclasses.dataclass(frozen=True)
class ErrorRule:
    """What to do when a failure matches. Build with :func:`retry_on` / :func:`fail_on`.

    A rule matches when some error in the exception chain is an instance of one of ``exceptions``
    (any error if empty) and, when given, its message matches one of ``messages`` (regular
    expressions) and its HTTP status is in ``http_status``. Exception classes may be dotted
    import paths; an unimportable path is a :class:`ConfigError` unless ``optional`` (built-in
    rules for libraries that may not be installed).
    """

    action: Action
    exceptions: tuple[type[BaseException] | str, ...] = ()
    messages: tuple[str, ...] = ()
    http_status: tuple[int, ...] = ()
    reason: str = ""
    retry_delay: timedelta | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        where = f"retry rule {self.describe()!r}"
        if self.action not in ("retry", "fail"):
            raise ConfigError(where, "action", f"unknown action {self.action!r}", "use retry_on(...) or fail_on(...)")
        if not (self.exceptions or self.messages or self.http_status):
            raise ConfigError(where, "exceptions", "the rule matches nothing",
                              "name exception classes, message patterns or HTTP status codes")
        if self.retry_delay is not None and self.retry_delay.total_seconds() < 0:
            raise ConfigError(where, "retry_delay", f"negative delay {self.retry_delay}",
                              "use a delay of 0 seconds or more, e.g. timedelta(seconds=30)")
        for pattern in self.messages:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(where, "messages", f"bad regular expression {pattern!r}: {error}",
                                  "escape special characters with re.escape()") from None
        if not self.optional:
            self.exception_classes()  # fail now, at DAG parse, not at 3 am in the worker
        # Optional rules (the built-in presets' library errors) resolve on first match: importing requests, botocore
        # and friends in every process that merely loads tasklens would cost every task process ~0.3 s.

    def describe(self) -> str:
        names = [spec if isinstance(spec, str) else f"{spec.__module__}.{spec.__qualname__}"
                 for spec in self.exceptions]
        parts = [*names, *(f"/{m}/" for m in self.messages), *(str(s) for s in self.http_status)]
        return f"{self.action} on {', '.join(parts) or 'nothing'}"

    def exception_classes(self) -> tuple[type[BaseException], ...]:
        """The resolved exception classes (optional ones that are not installed are left out)."""
        return resolve_exceptions(self.exceptions, self.optional, self.describe())

    def matches(self, error: BaseException) -> bool:
        classes = self.exception_classes()
        if self.exceptions and not classes:
            return False
        for candidate in error_chain(error):
            if classes and not isinstance(candidate, classes):
                continue
            if self.messages and not any(re.search(p, str(candidate)) for p in self.messages):
                continue
            if self.http_status and _status_code(candidate) not in self.http_status:
                continue
            return True
        return False


@functools.lru_cache(maxsize=512)
def resolve_exceptions(
    specs: tuple[type[BaseException] | str, ...], optional: bool, rule: str
) -> tuple[type[BaseException], ...]:
    resolved: list[type[BaseException]] = []
    for spec in specs:
        if isinstance(spec, type) and issubclass(spec, BaseException):
            resolved.append(spec)
            continue
        try:
            resolved.append(import_exception_class(str(spec)))
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            if optional:
                continue
            raise ConfigError(f"retry rule {rule!r}", "exceptions", f"cannot import exception class {spec!r} ({error})",
                              "give the full dotted path of an installed exception class, e.g. "
                              "'requests.exceptions.HTTPError', or pass the class itself") from None
    return tuple(resolved)


def as_timedelta(value: timedelta | float | int | None, where: str, key: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise ConfigError(where, key, f"{value!r} is not a duration", f"give {key} as a timedelta or seconds")
    delay = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delay.total_seconds() < 0:
        raise ConfigError(where, key, f"negative delay {delay}",
                          f"use a {key} of 0 seconds or more, e.g. timedelta(seconds=30)")
    return delay


def retry_on(
    *exceptions: type[BaseException] | str,
    messages: Iterable[str] = (),
    http_status: Iterable[int] = (),
    reason: str = "",
    retry_delay: timedelta | float | None = None,
) -> ErrorRule:
    """A rule that retries matching failures (within the task's ``retries``).

    >>> retry_on("requests.exceptions.ConnectionError", reason="API unreachable")
    >>> retry_on(messages=[r"deadlock detected"], retry_delay=timedelta(seconds=5))
    """
    return ErrorRule("retry", tuple(exceptions), tuple(messages), tuple(http_status), reason,
                     as_timedelta(retry_delay, "retry_on", "retry_delay"))


def fail_on(
    *exceptions: type[BaseException] | str,
    messages: Iterable[str] = (),
    http_status: Iterable[int] = (),
    reason: str = "",
) -> ErrorRule:
    """A rule that fails matching failures at once, whatever ``retries`` says.

    >>> fail_on(ValueError, "jsonschema.exceptions.ValidationError", reason="bad input data")
    """
    return ErrorRule("fail", tuple(exceptions), tuple(messages), tuple(http_status), reason)

"""Retry presets on Airflow's own retry settings, in-task retries, and the next-retry time.

A preset is one object that expands to operator keyword arguments: Airflow's ``retries``,
``retry_delay``, ``retry_exponential_backoff`` (a float multiplier in 3.3), ``max_retry_delay``
and a ``retry_policy`` (3.3's :class:`~airflow.sdk.definitions.retry_policy.RetryPolicy`) that
decides per exception whether another attempt can help::

    default_args = {**tasklens.retry.preset("transient_network")}
    tasklens.retry.apply(task, "spark_job")
    tasklens.retry.preset("fail_fast", retries=1, fail_on=["mylib.SchemaError"])

Built-in presets:

``transient_network``
    connection errors, timeouts, HTTP 429/5xx: retried with exponential backoff and Airflow's
    deterministic jitter, capped; a 429's ``Retry-After`` is honoured. HTTP 4xx and data errors fail at once.
``fail_fast``
    validation and data errors (``ValueError``, ``TypeError``, ``KeyError``, schema errors) fail at
    once, no wasted retries; anything else gets one retry.
``spark_job``
    executor loss and a vanished driver connection are retried; ``AnalysisException`` (bad column,
    missing table) fails at once.

Inside a task, :func:`call` retries a single call (an API request) with tenacity, logging each
attempt and re-raising the original exception when it gives up.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog
import tenacity

from tasklens import airflow_compat, metrics
from tasklens.airflow_compat import RetryAction, RetryDecision, RetryPolicy
from tasklens.exceptions import ConfigError
from tasklens.logs import get_logger
from tasklens.schedule import next_retry_at, retry_schedule
from tasklens.text import bounded

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "PRESETS",
    "ErrorRule",
    "Preset",
    "PresetRetryPolicy",
    "apply",
    "call",
    "explicit_fields",
    "fail_on",
    "next_retry_at",
    "preset",
    "preset_names",
    "register_preset",
    "retry_on",
    "retry_schedule",
    "validate_task_retries",
]

log = logging.getLogger(__name__)

Action = Literal["retry", "fail"]
_F = TypeVar("_F", bound=Callable[..., Any])
#: Operator keyword arguments a preset sets (``retry_policy`` only where Airflow has it: 3.3+).
RETRY_FIELDS: tuple[str, ...] = (
    "retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay",
    *(("retry_policy",) if airflow_compat.RETRY_POLICY_SUPPORTED else ()),
)
#: The timing part of :data:`RETRY_FIELDS` (everything but the per-exception policy).
TIMING_FIELDS: tuple[str, ...] = RETRY_FIELDS[:4]


# --------------------------------------------------------------------------- rules


def _status_code(error: BaseException) -> int | None:
    """HTTP status of an error: requests/httpx ``response.status_code``, aiohttp ``status``, urllib ``code``."""
    response = getattr(error, "response", None)
    for value in (getattr(response, "status_code", None), getattr(error, "status", None), getattr(error, "code", None)):
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def _retry_after_s(error: BaseException) -> float | None:
    """Seconds from a numeric ``Retry-After`` header, if the error carries a response with one."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    try:
        raw = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and its causes: wrappers (AirflowException, Py4JJavaError) hide the real failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _import_exception(path: str) -> type[BaseException]:
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
        return _resolve(self.exceptions, self.optional, self.describe())

    def matches(self, error: BaseException) -> bool:
        classes = self.exception_classes()
        if self.exceptions and not classes:
            return False
        for candidate in _chain(error):
            if classes and not isinstance(candidate, classes):
                continue
            if self.messages and not any(re.search(p, str(candidate)) for p in self.messages):
                continue
            if self.http_status and _status_code(candidate) not in self.http_status:
                continue
            return True
        return False


@functools.lru_cache(maxsize=512)
def _resolve(
    specs: tuple[type[BaseException] | str, ...], optional: bool, rule: str
) -> tuple[type[BaseException], ...]:
    resolved: list[type[BaseException]] = []
    for spec in specs:
        if isinstance(spec, type) and issubclass(spec, BaseException):
            resolved.append(spec)
            continue
        try:
            resolved.append(_import_exception(str(spec)))
        except (ImportError, AttributeError, TypeError, ValueError) as error:
            if optional:
                continue
            raise ConfigError(f"retry rule {rule!r}", "exceptions", f"cannot import exception class {spec!r} ({error})",
                              "give the full dotted path of an installed exception class, e.g. "
                              "'requests.exceptions.HTTPError', or pass the class itself") from None
    return tuple(resolved)


def _as_timedelta(value: timedelta | float | int | None, where: str, key: str) -> timedelta | None:
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
                     _as_timedelta(retry_delay, "retry_on", "retry_delay"))


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


# --------------------------------------------------------------------------- the Airflow retry policy


class PresetRetryPolicy(RetryPolicy):
    """Airflow ``retry_policy`` evaluating a preset's rules in order; the first match decides.

    Runs in the worker (Airflow calls :meth:`evaluate` with the task's exception). No match
    returns ``RetryAction.DEFAULT``: the task's ``retries`` decide. A ``Retry-After`` header on a
    retried error becomes the delay, capped at ``max_retry_delay``.
    """

    def __init__(self, preset_name: str, rules: Iterable[ErrorRule], max_retry_delay: timedelta | None = None) -> None:
        self.preset_name = preset_name
        self.rules = tuple(rules)
        self.max_retry_delay = max_retry_delay

    def match(self, exception: BaseException) -> ErrorRule | None:
        """The first rule matching ``exception``, or None."""
        return next((rule for rule in self.rules if rule.matches(exception)), None)

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        rule = self.match(exception)
        if rule is None:
            return RetryDecision.default()
        reason = f"{self.preset_name}: {rule.reason or rule.describe()} ({type(exception).__name__})"
        if rule.action == "fail":
            return RetryDecision.fail(reason=reason)
        delay = rule.retry_delay
        retry_after = next((s for s in map(_retry_after_s, _chain(exception)) if s is not None), None)
        if retry_after is not None:
            delay = timedelta(seconds=retry_after)
        if delay is not None and self.max_retry_delay is not None:
            delay = min(delay, self.max_retry_delay)
        return RetryDecision.retry(delay=delay, reason=reason)

    def serialize(self) -> dict[str, Any]:
        # Airflow stores only ``has_retry_policy``; workers re-parse the DAG and get the live object back.
        return {"__type": "tasklens.PresetRetryPolicy", "preset": self.preset_name,
                "rules": [rule.describe() for rule in self.rules]}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PresetRetryPolicy) and other.preset_name == self.preset_name
                and other.rules == self.rules and other.max_retry_delay == self.max_retry_delay)

    def __hash__(self) -> int:
        return hash((self.preset_name, self.rules))

    def __repr__(self) -> str:
        return f"tasklens.PresetRetryPolicy({self.preset_name!r}, {len(self.rules)} rules)"


# --------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True, eq=True)
class Preset(Mapping[str, Any]):
    """Named retry settings; a mapping of operator keyword arguments (``{**preset}``).

    Every value is checked at construction: a negative delay, a backoff below 1 or an
    unimportable exception class raises :class:`ConfigError` naming the preset and the fix.
    """

    name: str
    retries: int
    retry_delay: timedelta
    retry_exponential_backoff: float = 0.0
    max_retry_delay: timedelta | None = None
    rules: tuple[ErrorRule, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        where = f"retry preset {self.name!r}"
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(where, "retries", f"{self.retries!r} is not a count of retries", "use an integer >= 0")
        object.__setattr__(self, "retry_delay", _as_timedelta(self.retry_delay, where, "retry_delay"))
        object.__setattr__(self, "max_retry_delay", _as_timedelta(self.max_retry_delay, where, "max_retry_delay"))
        backoff = self.retry_exponential_backoff
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not (backoff == 0 or backoff >= 1):
            raise ConfigError(where, "retry_exponential_backoff", f"{backoff!r} is not a backoff multiplier",
                              "use 0 (fixed delay) or a multiplier >= 1, e.g. 2.0")
        object.__setattr__(self, "retry_exponential_backoff", float(backoff))
        for rule in self.rules:
            if not isinstance(rule, ErrorRule):
                raise ConfigError(where, "rules", f"{rule!r} is not a retry rule",
                                  "build rules with retry_on() / fail_on()")

    @property
    def retry_policy(self) -> PresetRetryPolicy:
        return PresetRetryPolicy(self.name, self.rules, self.max_retry_delay)

    def kwargs(self) -> dict[str, Any]:
        """Operator keyword arguments: ``BashOperator(task_id=..., **preset.kwargs())``."""
        airflow_compat.note_retry_policy_off()
        return {name: self[name] for name in RETRY_FIELDS}

    def replace(self, **changes: Any) -> Preset:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # Mapping protocol, so that ``{**preset("transient_network")}`` expands to kwargs.
    def __getitem__(self, key: str) -> Any:
        if key not in RETRY_FIELDS:
            raise KeyError(key)
        if key == "retry_exponential_backoff":
            return airflow_compat.operator_backoff(self.retry_exponential_backoff)
        return self.retry_policy if key == "retry_policy" else getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(RETRY_FIELDS)

    def __len__(self) -> int:
        return len(RETRY_FIELDS)

    def __repr__(self) -> str:
        return (f"tasklens.retry.Preset({self.name!r}, retries={self.retries}, retry_delay={self.retry_delay}, "
                f"backoff={self.retry_exponential_backoff}, max_retry_delay={self.max_retry_delay}, "
                f"{len(self.rules)} rules)")



_NETWORK_ERRORS: tuple[type[BaseException] | str, ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # socket.timeout is an alias since 3.10
    "requests.exceptions.ConnectionError",
    "requests.exceptions.Timeout",
    "urllib3.exceptions.ProtocolError",
    "urllib3.exceptions.TimeoutError",
    "httpx.TransportError",
    "aiohttp.ClientConnectionError",
    "botocore.exceptions.EndpointConnectionError",
    "py4j.protocol.Py4JNetworkError",
    "airflow.sdk.exceptions.AirflowTaskTimeout",
)
_DATA_ERRORS: tuple[type[BaseException] | str, ...] = (
    ValueError,
    TypeError,
    KeyError,
    "jsonschema.exceptions.ValidationError",
    "pydantic.ValidationError",
    "pandera.errors.SchemaError",
    "great_expectations.exceptions.ValidationError",
)
_RETRYABLE_HTTP = (408, 425, 429, 500, 502, 503, 504)
_CLIENT_HTTP = tuple(code for code in range(400, 500) if code not in _RETRYABLE_HTTP)
# HttpHook raises AirflowException("503:Service Unavailable"): only the message carries the status.
_HTTP_HOOK_RETRYABLE = r"^(408|425|429|5\d\d):"
_SPARK_TRANSIENT = (
    r"ExecutorLostFailure", r"Executor lost", r"Lost executor", r"executor heartbeat timed out", r"FetchFailed",
    r"SparkContext was shut down", r"SparkContext has been shutdown", r"Cannot call methods on a stopped SparkContext",
    r"Answer from Java side is empty", r"Error while receiving", r"Connection reset", r"Connection refused",
)


def _transient_rules() -> tuple[ErrorRule, ...]:
    return (
        ErrorRule("retry", http_status=(429,), reason="rate limited (HTTP 429)"),
        ErrorRule("retry", http_status=_RETRYABLE_HTTP, reason="server error (HTTP 5xx) or request timeout"),
        ErrorRule("fail", http_status=_CLIENT_HTTP, reason="client error (HTTP 4xx): a retry sends the same request"),
        ErrorRule("retry", messages=(_HTTP_HOOK_RETRYABLE,), exceptions=("airflow.sdk.exceptions.AirflowException",),
                  reason="HTTP 429/5xx from an HTTP hook", optional=True),
        ErrorRule("retry", _NETWORK_ERRORS, reason="connection error or timeout", optional=True),
    )


def _data_error_rules() -> tuple[ErrorRule, ...]:
    return (ErrorRule("fail", _DATA_ERRORS, reason="validation or data error: a retry sees the same data",
                      optional=True),)


def _builtin_presets() -> dict[str, Preset]:
    presets = [
        Preset(
            "transient_network",
            retries=4,
            retry_delay=timedelta(seconds=30),
            retry_exponential_backoff=2.0,
            max_retry_delay=timedelta(minutes=10),
            rules=(*_transient_rules(), *_data_error_rules()),
            description="connection errors, timeouts, HTTP 429/5xx retried with exponential backoff and jitter "
                        "(30 s, 1 min, 2 min, 4 min; each up to twice that; at most 10 min); HTTP 4xx and data "
                        "errors fail at once",
        ),
        Preset(
            "fail_fast",
            retries=1,
            retry_delay=timedelta(minutes=1),
            rules=(*_data_error_rules(),),
            description="validation and data errors fail at once; any other error gets one retry after 1 min",
        ),
        Preset(
            "spark_job",
            retries=2,
            retry_delay=timedelta(minutes=1),
            retry_exponential_backoff=2.0,
            max_retry_delay=timedelta(minutes=10),
            rules=(
                ErrorRule("fail", ("pyspark.errors.AnalysisException",), optional=True,
                          reason="Spark AnalysisException (bad column or missing table): a retry cannot fix the query"),
                ErrorRule("retry", ("tasklens.spark.SparkTransientError", "py4j.protocol.Py4JNetworkError",
                                    ConnectionError), optional=True,
                          reason="Spark executor or driver connection lost"),
                ErrorRule("retry", messages=_SPARK_TRANSIENT, reason="Spark executor or driver connection lost"),
                *_data_error_rules(),
            ),
            description="executor loss and lost driver connections retried with backoff (1 min, 2 min); "
                        "AnalysisException and data errors fail at once",
        ),
    ]
    return {p.name: p for p in presets}


#: Registered presets by name (the built-in ones and any added with :func:`register_preset`).
PRESETS: dict[str, Preset] = _builtin_presets()


def register_preset(new: Preset) -> Preset:
    """Make ``new`` available by name to :func:`preset` and the rules file's ``retry_policies``."""
    PRESETS[new.name] = new
    return new


def preset_names() -> list[str]:
    return sorted(PRESETS)


def check_preset_name(name: Any, where: str = "tasklens.retry.preset", key: str = "name", *, also: str = "") -> None:
    """Raise :class:`ConfigError` naming ``where``/``key``, the closest preset and the fix when ``name`` is unknown."""
    if isinstance(name, str) and name in PRESETS:
        return
    close = difflib.get_close_matches(str(name), PRESETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(where, key, f"unknown retry preset {name!r}",
                      f"{hint}use one of: {', '.join(preset_names())}{also} (or register_preset() your own)")


def preset(
    name: str | Preset,
    *,
    retry_on: Iterable[ErrorRule | type[BaseException] | str] = (),
    fail_on: Iterable[ErrorRule | type[BaseException] | str] = (),
    **overrides: Any,
) -> Preset:
    """The preset called ``name``, optionally adjusted; a mapping of operator kwargs.

    ``retry_on`` / ``fail_on`` add rules (exception classes, dotted paths or :class:`ErrorRule`)
    checked before the preset's own; other keywords (``retries``, ``retry_delay``,
    ``retry_exponential_backoff``, ``max_retry_delay``) replace settings::

        default_args = {**tasklens.retry.preset("transient_network", retries=6)}

    Raises :class:`ConfigError` for an unknown name, an unimportable class or a negative delay.
    """
    if not isinstance(name, Preset):
        check_preset_name(name)
    base = name if isinstance(name, Preset) else PRESETS[name]
    unknown = set(overrides) - set(TIMING_FIELDS) - {"description"}
    if unknown:
        raise ConfigError(f"retry preset {base.name!r}", ", ".join(sorted(unknown)), "unknown setting",
                          f"use {', '.join(TIMING_FIELDS)}, retry_on or fail_on")

    def rules(items: Iterable[ErrorRule | type[BaseException] | str], action: Action) -> list[ErrorRule]:
        return [item if isinstance(item, ErrorRule) else ErrorRule(action, (item,)) for item in items]

    extra = [*rules(fail_on, "fail"), *rules(retry_on, "retry")]
    if not extra and not overrides:
        return base
    return dataclasses.replace(base, rules=(*extra, *base.rules), **overrides)


# --------------------------------------------------------------------------- tasks


def explicit_fields(task: Any) -> set[str]:
    """Retry settings ``task`` set itself (its own kwargs or the DAG's ``default_args``).

    A plain operator records the keyword arguments it was built with (``default_args``
    included) in ``_BaseOperator__init_kwargs``; Airflow's defaults (``[core]
    default_task_retries``, 5 min delay, no backoff) are not in it. A mapped operator keeps
    ``partial_kwargs`` already merged with those defaults, so there a value differing from
    the operator default counts as set.
    """
    init_kwargs = getattr(task, "_BaseOperator__init_kwargs", None)
    if isinstance(init_kwargs, Mapping):
        found = {name for name in RETRY_FIELDS if name in init_kwargs}
        if getattr(task, "retry_policy", None) is not None:
            found.add("retry_policy")
        return found
    partial_kwargs = getattr(task, "partial_kwargs", None)
    if isinstance(partial_kwargs, Mapping):
        from airflow.sdk.bases.operator import OPERATOR_DEFAULTS  # noqa: PLC0415 - Airflow's operator internals load only when a preset is applied

        return {name for name in RETRY_FIELDS
                if partial_kwargs.get(name, OPERATOR_DEFAULTS.get(name)) != OPERATOR_DEFAULTS.get(name)}
    return {"retry_policy"} if getattr(task, "retry_policy", None) is not None else set()


def apply(task: Any, name: str | Preset, *, keep_explicit: bool = False) -> Any:
    """Give ``task`` (an operator, mapped or not) the settings of preset ``name``; returns ``task``.

    With ``keep_explicit`` (how the cluster policy calls it) a task that set any timing field
    (``retries``, ``retry_delay``, backoff, ``max_retry_delay``) keeps its timing and only gains
    the preset's ``retry_policy``, and a task with its own ``retry_policy`` keeps that.
    """
    chosen = preset(name)
    airflow_compat.note_retry_policy_off()
    fields: Iterable[str] = RETRY_FIELDS
    if keep_explicit:
        explicit = explicit_fields(task)
        fields = [f for f in RETRY_FIELDS if f not in explicit]
        if explicit & set(TIMING_FIELDS):
            fields = [f for f in fields if f == "retry_policy"]
    for field in fields:
        setattr(task, field, chosen[field])
    return task


def validate_task_retries(task: Any) -> None:
    """Raise :class:`ConfigError` when ``task``'s final retry settings are unusable.

    Airflow accepts negative retries and delays silently; tasklens turns them into DAG import
    errors. tasklens's own rules were checked when built (an unimportable class raised
    there). An Airflow ``RetryRule`` naming a class this process cannot import keeps
    Airflow's meaning (a warning: the class may exist only on workers, as in Airflow's own
    ``example_retry_policy``); tasklens logs it with the task so it is not missed.
    """
    where = f"task {getattr(task, 'dag_id', '?')}.{getattr(task, 'task_id', '?')}"
    retries = getattr(task, "retries", 0)
    if isinstance(retries, int) and retries < 0:
        raise ConfigError(where, "retries", f"negative retries {retries}", "use retries >= 0")
    for key in ("retry_delay", "max_retry_delay"):
        value = getattr(task, key, None)
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds < 0:
            raise ConfigError(where, key, f"negative delay {value}", f"use a {key} of 0 seconds or more")
    policy = getattr(task, "retry_policy", None)
    for rule in getattr(policy, "rules", None) or ():
        if isinstance(rule, ErrorRule):
            rule.exception_classes()
            continue
        delay = getattr(rule, "retry_delay", None)
        if isinstance(delay, timedelta) and delay.total_seconds() < 0:
            raise ConfigError(where, "retry_policy", f"RetryRule for {getattr(rule, 'exception_path', '?')} has "
                              f"negative retry_delay {delay}", "use a retry_delay of 0 seconds or more")
        for spec in getattr(rule, "_specs", None) or ():
            if isinstance(spec, str):
                try:
                    _import_exception(spec)
                except (ImportError, AttributeError, TypeError, ValueError) as error:
                    log.warning("%s: retry_policy RetryRule names exception class %r that cannot be imported here "
                                "(%s); it never matches in a process without it", where, spec, error)


# --------------------------------------------------------------------------- in-task retries


def _emit_attempt(event: str, name: str, **fields: Any) -> None:
    """One structured log line and one ``retry_attempts`` count per attempt. Never raises."""
    try:
        try:
            logger: Any = get_logger("tasklens.retry")
        except Exception:
            logger = structlog.get_logger("tasklens.retry")
        level = "error" if event == "retry_gave_up" else "warning"
        getattr(logger, level)(event, operation=name, **fields)
    except Exception:
        log.warning("tasklens could not log a retry attempt of %s", name, exc_info=True)
    if event != "retry_attempt":
        return
    try:
        metrics.incr("retry_attempts", operation=name)
    except Exception:
        log.debug("tasklens could not count a retry attempt of %s", name, exc_info=True)


class _ExponentialJitterWait:
    """``min(cap, initial * base ** (n - 1)) + uniform(0, jitter)``; a longer ``Retry-After`` wins."""

    def __init__(self, initial: float, cap: float, base: float, jitter: float, rng: random.Random) -> None:
        self.initial, self.cap, self.base, self.jitter, self.rng = initial, cap, base, jitter, rng

    def __call__(self, state: tenacity.RetryCallState) -> float:
        try:
            backoff = self.initial * self.base ** (state.attempt_number - 1)
        except OverflowError:
            backoff = self.cap
        wait = min(self.cap, backoff) + self.rng.uniform(0, self.jitter)
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = _retry_after_s(error) if error is not None else None
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return min(wait, self.cap + self.jitter)


def call(
    func: _F | None = None,
    *,
    attempts: int = 5,
    retry_if: Iterable[type[BaseException] | str] | str | Preset = "transient_network",
    initial_s: float = 1.0,
    max_wait_s: float = 60.0,
    backoff: float = 2.0,
    jitter_s: float = 1.0,
    deadline_s: float | None = None,
    name: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Any:
    """Retry a call inside a task with exponential backoff and jitter (tenacity).

    ``retry_if`` is a preset (name or object: what the preset would retry is retried here,
    everything else fails at once) or exception classes / dotted paths. Each failed attempt
    is logged as a ``retry_attempt`` event and counted (``tasklens.custom.retry_attempts``);
    giving up logs ``retry_gave_up`` and raises the ORIGINAL exception. ``deadline_s`` stops
    retrying once that much time has passed since the first attempt. ``sleep``, ``clock`` and
    ``rng`` are injectable so tests never sleep::

        @tasklens.retry.call(attempts=4)
        def fetch(url):
            return requests.get(url, timeout=10).json()
    """

    where = "tasklens.retry.call"
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigError(where, "attempts", f"{attempts!r} attempts", "use an integer >= 1")
    for key, value in (("initial_s", initial_s), ("max_wait_s", max_wait_s), ("jitter_s", jitter_s),
                       ("deadline_s", deadline_s or 0)):
        if value < 0:
            raise ConfigError(where, key, f"negative delay {value}", f"use {key} >= 0")
    if backoff < 1:
        raise ConfigError(where, "backoff", f"multiplier {backoff} below 1", "use backoff >= 1, e.g. 2.0")
    retryable = _retry_predicate(retry_if)
    wait = _ExponentialJitterWait(initial_s, max_wait_s, backoff, jitter_s, rng or random.Random())

    def decorate(target: _F) -> _F:
        label = name or getattr(target, "__qualname__", None) or repr(target)

        def error_fields(state: tenacity.RetryCallState) -> dict[str, Any]:
            error = state.outcome.exception() if state.outcome is not None else None
            return {"attempt": state.attempt_number, "max_attempts": attempts,
                    "exception_type": type(error).__name__, "exception_message": bounded(error, 500)}

        def before_sleep(state: tenacity.RetryCallState) -> None:
            upcoming = getattr(state, "upcoming_sleep", None)
            if upcoming is None and state.next_action is not None:
                upcoming = state.next_action.sleep
            _emit_attempt("retry_attempt", label, wait_s=round(float(upcoming or 0), 3), **error_fields(state))

        def gave_up(state: tenacity.RetryCallState) -> Any:
            _emit_attempt("retry_gave_up", label, **error_fields(state))
            assert state.outcome is not None  # tenacity calls this only after an attempt
            return state.outcome.result()  # re-raises the original exception

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = clock()

            def stop(state: tenacity.RetryCallState) -> bool:
                if state.attempt_number >= attempts:
                    return True
                return deadline_s is not None and clock() - started >= deadline_s

            retrying = tenacity.Retrying(
                stop=stop,
                wait=wait,
                retry=tenacity.retry_if_exception(retryable),
                sleep=sleep,
                before_sleep=before_sleep,
                retry_error_callback=gave_up,
                reraise=True,
            )
            return retrying(target, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _retry_predicate(retry_if: Iterable[type[BaseException] | str] | str | Preset) -> Callable[[BaseException], bool]:
    """A preset name or object (retry what it retries) or exception classes / dotted paths."""
    if isinstance(retry_if, Preset) or (isinstance(retry_if, str) and "." not in retry_if):
        policy = preset(retry_if).retry_policy
        return lambda error: policy.evaluate(error, 0, 0).action == RetryAction.RETRY
    specs = (retry_if,) if isinstance(retry_if, (str, type)) else tuple(retry_if)
    classes = _resolve(specs, False, f"call(retry_if={specs!r})")
    return lambda error: isinstance(error, classes)

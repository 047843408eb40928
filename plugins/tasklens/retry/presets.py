"""Retry presets: named retry settings (Airflow's ``retries``, ``retry_delay``, backoff, ``max_retry_delay`` and a
``retry_policy``), the built-in ones, and :func:`preset` to pick and adjust one."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from tasklens.exceptions import ConfigError
from tasklens.retry.policy import PresetRetryPolicy
from tasklens.retry.rules import Action, ErrorRule, as_timedelta

__all__ = [
    "PRESETS",
    "RETRY_FIELDS",
    "TIMING_FIELDS",
    "Preset",
    "check_preset_name",
    "preset",
    "preset_names",
    "register_preset",
]

#: Operator keyword arguments a preset sets.
RETRY_FIELDS: tuple[str, ...] = (
    "retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay", "retry_policy",
)
#: The timing part of :data:`RETRY_FIELDS` (everything but the per-exception policy).
TIMING_FIELDS: tuple[str, ...] = RETRY_FIELDS[:4]


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
        object.__setattr__(self, "retry_delay", as_timedelta(self.retry_delay, where, "retry_delay"))
        object.__setattr__(self, "max_retry_delay", as_timedelta(self.max_retry_delay, where, "max_retry_delay"))
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
        values: dict[str, Any] = {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_exponential_backoff": self.retry_exponential_backoff,
            "max_retry_delay": self.max_retry_delay,
            "retry_policy": self.retry_policy,
        }
        return values

    def replace(self, **changes: Any) -> Preset:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # Mapping protocol, so that ``{**preset("transient_network")}`` expands to kwargs.
    def __getitem__(self, key: str) -> Any:
        if key not in RETRY_FIELDS:
            raise KeyError(key)
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

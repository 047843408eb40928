"""The rules file: rules, routes, channels and retry policies, validated at load.

One YAML file (``[tasklens] rules_file``) configures the whole alert engine. Everything is
checked when the file is loaded, so a typo is reported with the file, the key and the fix
(``tasklens check-config``, the Alerts page, ``/tasklens/health``, one alert), never discovered at
3 am when the first alert should go out. A running deployment keeps its last good rules meanwhile
(:func:`tasklens.config.ruleset`)::

    ruleset = load_ruleset(Path("include/tasklens_rules.yml"))
    ruleset.rule("task_failed").severity        # Severity.CRITICAL
    ruleset.channels["slack"].conn_id            # "tasklens_slack"

Without a file, :func:`load_ruleset` returns the built-in defaults: failures and killed tasks
to Slack, escalation to email after 30 minutes unacknowledged, retries stored only. A file
is layered on top of the defaults: ``rules`` and ``channels`` override or extend the
built-in ones by name; ``routes`` (an ordered list) replaces the default routes when given.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tasklens import channels as channel_registry
from tasklens.alerts import AlertKind, Severity
from tasklens.deadlines import Deadline, parse_deadline
from tasklens.exceptions import ConfigError

__all__ = [
    "BUILTIN_RULES",
    "CHANNEL_TYPES",
    "GROUP_BY_FIELDS",
    "METRIC_OPS",
    "RULE_TYPES",
    "Channel",
    "MuteWindow",
    "RetryPolicyRef",
    "Route",
    "RouteMatch",
    "Rule",
    "RuleMatch",
    "Ruleset",
    "default_ruleset",
    "load_ruleset",
    "parse_duration",
    "parse_rules_text",
    "parse_ruleset",
    "read_rules_file",
]

#: Rule types and the task event each one reacts to (metric and custom rules are fed separately).
RULE_TYPES: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "failed": ("failed",),
        "retry": ("up_for_retry",),
        "killed": ("killed",),
        "recovered": ("success",),
        "duration": ("success", "failed", "up_for_retry", "killed"),
        "overrun": (),  # a running attempt, checked by the api-server (tasklens.foresight)
        "stuck": (),  # a queued / scheduled attempt, checked by the api-server (tasklens.foresight)
        "late": (),  # a scheduled DAG run not started in time, checked by the api-server (tasklens.foresight)
        "heartbeat": (),  # an Airflow component that stopped heartbeating (tasklens.foresight)
        "metric": (),
        "custom": (),
    }
)
#: Built-in rule names and their types; a rules file configures them by name.
BUILTIN_RULES: Mapping[str, str] = types.MappingProxyType(
    {
        "task_failed": "failed",
        "task_retry": "retry",
        "task_killed": "killed",
        "task_recovered": "recovered",
        "task_duration": "duration",
        "task_overrun": "overrun",
        "task_stuck": "stuck",
        "dag_late": "late",
        "component_heartbeat": "heartbeat",
        "custom": "custom",
    }
)
CHANNEL_TYPES = tuple(channel_registry.CHANNEL_TYPES)  # built in; the registry also has types added at run time
METRIC_OPS: Mapping[str, Callable[[float, float], bool]] = types.MappingProxyType(
    {
        ">": lambda value, threshold: value > threshold,
        ">=": lambda value, threshold: value >= threshold,
        "<": lambda value, threshold: value < threshold,
        "<=": lambda value, threshold: value <= threshold,
        "==": lambda value, threshold: value == threshold,
        "!=": lambda value, threshold: value != threshold,
    }
)
#: Alert fields a route may group by; any other name is looked up in the alert's labels.
GROUP_BY_FIELDS = ("dag_id", "task_id", "run_id", "map_index", "rule", "kind", "severity", "fingerprint")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BUILTIN_SOURCE = "<built-in tasklens rules>"


# --------------------------------------------------------------------------- data model


@dataclasses.dataclass(frozen=True)
class RuleMatch:
    """Which task events a rule applies to. Empty tuples match everything; globs use ``fnmatch``."""

    dag_id: tuple[str, ...] = ()
    task_id: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of these DAG tags
    owner: tuple[str, ...] = ()
    operator: tuple[str, ...] = ()
    exception_type: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """One alert rule. ``type`` says what it reacts to (see :data:`RULE_TYPES`).

    ``notify: false`` keeps the alerts in the store but routes them nowhere (retries by default).
    Programmatic rules may add ``condition`` (a predicate on the TaskEvent, e.g.
    ``rules.after_attempt(2) & rules.has_tag("critical")``); the YAML uses ``match``.
    """

    name: str
    type: str
    severity: Severity
    enabled: bool = True
    notify: bool = True
    description: str = ""
    match: RuleMatch = RuleMatch()
    after_attempt: int = 0  # only attempts with try_number >= this
    condition: Callable[[Any], bool] | None = None
    # duration rules
    max_duration_s: float | None = None
    median_factor: float | None = None
    min_history: int = 5
    min_duration_s: float = 0.0
    events: tuple[str, ...] = ()
    # overrun rules (min_history, min_duration_s and max_duration_s above apply too): alert past factor x p95
    factor: float = 2.0
    # stuck rules
    max_queued_s: float | None = None
    max_scheduled_s: float | None = None
    # late rules / heartbeat rules
    max_delay_s: float | None = None
    max_silence_s: float | None = None
    # metric rules
    metric: str | None = None
    op: str = ">"
    threshold: float | None = None
    resolve_when_ok: bool = True
    # recovered rules
    resolves: tuple[str, ...] = ()
    # custom rules / message template override
    template: str | None = None

    @property
    def active(self) -> bool:
        """Enabled and routed to channels."""
        return self.enabled and self.notify

    @property
    def event_kinds(self) -> tuple[str, ...]:
        """The TaskEvent kinds this rule is evaluated on."""
        return self.events or RULE_TYPES.get(self.type, ())


@dataclasses.dataclass(frozen=True)
class MuteWindow:
    """A time window in which a route sends nothing (alerts are still stored).

    Either recurring (``weekdays`` and/or ``hours`` in ``timezone``; an hours range may wrap past
    midnight and is checked on the local date of the instant) or explicit (``start``/``end``, UTC).
    """

    weekdays: frozenset[int] = frozenset(range(7))  # 0 = Monday
    start_time: time | None = None
    end_time: time | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None

    def contains(self, at: datetime) -> bool:
        """True when ``at`` (naive = UTC) falls inside the window."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        if self.start is not None or self.end is not None:
            after_start = self.start is None or at >= self.start
            before_end = self.end is None or at < self.end
            return after_start and before_end
        local = at.astimezone(_zone(self.timezone))
        if local.weekday() not in self.weekdays:
            return False
        if self.start_time is None or self.end_time is None:
            return True
        now = local.time().replace(tzinfo=None)
        if self.start_time <= self.end_time:
            return self.start_time <= now < self.end_time
        return now >= self.start_time or now < self.end_time


@dataclasses.dataclass(frozen=True)
class RouteMatch:
    """Which alerts a route takes. Every given criterion must hold; lists mean "any of"."""

    min_severity: Severity = Severity.INFO
    kinds: tuple[AlertKind, ...] = ()
    rules: tuple[str, ...] = ()  # globs on the rule name
    dag_id: tuple[str, ...] = ()
    task_id: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    owner: tuple[str, ...] = ()
    regex: tuple[tuple[str, re.Pattern[str]], ...] = ()  # (field, pattern); field "" = title/summary/exception


DEFAULT_GROUP_WAIT_S = 3.0


@dataclasses.dataclass(frozen=True)
class Route:
    """One route: matching alerts go to ``channels`` with these timing knobs (Alertmanager style)."""

    name: str
    channels: tuple[str, ...]
    match: RouteMatch = RouteMatch()
    continue_matching: bool = False
    group_by: tuple[str, ...] = ("dag_id", "run_id")
    # Short by default: failures of one run that land together still form one digest, and the first
    # message stays within seconds of the failure (Alertmanager's 30 s suits paging less urgent teams).
    group_wait_s: float = DEFAULT_GROUP_WAIT_S
    repeat_interval_s: float = 3600.0
    mute: tuple[MuteWindow, ...] = ()
    escalate_after_s: float | None = None
    escalation_channels: tuple[str, ...] = ()
    fallback_channels: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Channel:
    """A delivery target. Secrets live in the Airflow connection ``conn_id``, never here.

    An email channel without ``to`` sends to the addresses in its SMTP connection's extra ``to``.
    """

    name: str
    type: str  # "slack" | "email"
    conn_id: str
    to: tuple[str, ...] = ()
    channel: str | None = None  # Slack channel override (bot-token connections)
    rate_limit_per_s: float = 1.0
    #: The type's own options (``tasklens.channels.CHANNEL_TYPES[type].options``: host, class, kwargs...).
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class RetryPolicyRef:
    """A retry policy assignment (fleshed out by ``tasklens.retry``): which preset for which tasks."""

    name: str
    preset: str
    dag_id: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    operator: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """Everything the rules file configures, validated. ``source`` is the file (None = built-in)."""

    rules: tuple[Rule, ...]
    routes: tuple[Route, ...]
    channels: Mapping[str, Channel]
    retry_policies: Mapping[str, RetryPolicyRef] = dataclasses.field(default_factory=dict)
    source: Path | None = None
    deadlines: tuple[Deadline, ...] = ()  # when DAG runs must be done (tasklens.deadlines)

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def route(self, name: str) -> Route | None:
        """The route called ``name``, or None."""
        for route in self.routes:
            if route.name == name:
                return route
        return None

    def rules_of_type(self, *rule_types: str) -> tuple[Rule, ...]:
        """Enabled rules of the given types, in file order."""
        return tuple(r for r in self.rules if r.enabled and r.type in rule_types)


# --------------------------------------------------------------------------- parsing helpers


def parse_duration(value: Any, *, source: str = "<value>", key: str = "duration") -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or a number of seconds -> seconds (float, >= 0)."""
    fix = "write a duration such as 30s, 5m, 1h, 1h30m or a number of seconds"
    if isinstance(value, bool) or value is None:
        raise ConfigError(source, key, f"{value!r} is not a duration", fix)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ConfigError(source, key, f"negative duration {value!r}", "use a duration of 0 or more")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ConfigError(source, key, f"{value!r} is not a duration", fix) from None
            seconds = sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    else:
        raise ConfigError(source, key, f"{value!r} is not a duration", fix)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(source, key, f"{value!r} is not a finite duration", fix)
    if seconds < 0:
        raise ConfigError(source, key, f"negative duration {value!r}", "use a duration of 0 or more")
    return seconds


def _zone(name: str) -> Any:
    if name.upper() == "UTC":
        return timezone.utc
    return ZoneInfo(name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges are resolved by SafeLoader itself
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            continue  # reported as a non-string key later
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Reader:
    """Validates one rules document; every error names the file, the dotted key and a fix."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(self.source, key, problem, fix)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(
                key, f"expected a mapping, got {type(value).__name__}", f"write {key} as `name: value` lines"
            )
        for name in value:
            if not isinstance(name, str):
                raise self.fail(f"{key}.{name!r}", "keys must be strings", "quote the key")
        return dict(value)

    def keys(self, value: Mapping[str, Any], key: str, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        allowed = tuple(allowed)
        for name in value:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(_join(key, name), f"unknown key {name!r}", f"{hint}allowed keys: {', '.join(allowed)}")
        for name in required:
            if name not in value or value[name] is None:
                raise self.fail(_join(key, name), "missing required key", f"add {name}: to {key or 'the file'}")

    def string(self, value: Any, key: str, *, allow_empty: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"expected a string, got {type(value).__name__}", "write a plain string")
        text = str(value)
        if not allow_empty and not text.strip():
            raise self.fail(key, "empty string", "write a non-empty value or remove the key")
        return text

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        """A string or a list of strings."""
        if value is None:
            return ()
        if isinstance(value, (list, tuple)):
            return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))
        return (self.string(value, key),)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"{value!r} is not a boolean", "write true or false")
        return value

    def number(self, value: Any, key: str, *, minimum: float | None = None, integer: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(str(value))
            except ValueError:
                raise self.fail(key, f"{value!r} is not a number", "write a number such as 1.5") from None
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise self.fail(key, f"{value!r} is not a finite number", "write a finite number")
        if integer and number != int(number):
            raise self.fail(key, f"{value!r} is not a whole number", "write a whole number such as 3")
        if minimum is not None and number < minimum:
            raise self.fail(key, f"{value!r} is below {minimum:g}", f"write a number of at least {minimum:g}")
        return number

    def duration(self, value: Any, key: str) -> float:
        return parse_duration(value, source=self.source, key=key)

    def severity(self, value: Any, key: str) -> Severity:
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text not in {s.value for s in Severity}:
            raise self.fail(key, f"unknown severity {value!r}", "use one of: info, warning, critical")
        return Severity(text)

    def regex(self, value: Any, key: str) -> re.Pattern[str]:
        pattern = self.string(value, key)
        try:
            return re.compile(pattern)
        except re.error as error:
            raise self.fail(
                key,
                f"regex {pattern!r} does not compile: {error}",
                "fix the regular expression (quote it in single quotes so YAML keeps backslashes)",
            ) from None

    def template_name(self, value: Any, key: str) -> str:
        name = self.string(value, key)
        if not _TEMPLATE_NAME.match(name):
            raise self.fail(
                key, f"bad template name {name!r}", "use letters, digits, '_', '-' or '.', e.g. ml_model_drift"
            )
        return name


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


# --------------------------------------------------------------------------- sections

_RULE_KEYS = ("type", "enabled", "severity", "notify", "description", "match", "after_attempt", "template")
_RULE_KEYS_BY_TYPE = {
    "duration": ("max_duration", "median_factor", "min_history", "min_duration", "events"),
    "metric": ("metric", "op", "threshold", "resolve_when_ok"),
    "recovered": ("resolves",),
    "overrun": ("max_duration", "factor", "min_history", "min_duration"),
    "stuck": ("max_queued", "max_scheduled"),
    "late": ("max_delay",),
    "heartbeat": ("max_silence",),
}
_RULE_MATCH_KEYS = ("dag_id", "task_id", "tags", "owner", "operator", "exception_type")
_ROUTE_KEYS = (
    "name",
    "match",
    "channels",
    "continue",
    "group_by",
    "group_wait",
    "repeat_interval",
    "mute",
    "escalate_after",
    "escalation_channels",
    "fallback_channels",
)
_ROUTE_MATCH_KEYS = ("severity", "kind", "rule", "dag_id", "task_id", "tags", "owner", "regex")
_REGEX_FIELDS = ("title", "summary", "exception_type", "exception_message", "dag_id", "task_id", "run_id", "rule")
_CHANNEL_KEYS = ("type", "conn_id", "to", "channel", "rate_limit_per_s")
_MUTE_KEYS = ("weekdays", "hours", "timezone", "start", "end")
_DEFAULTS_KEYS = ("group_by", "group_wait", "repeat_interval")
_TOP_KEYS = ("version", "defaults", "channels", "rules", "routes", "retry_policies", "deadlines")
_RETRY_POLICY_KEYS = ("preset", "match")
_RETRY_MATCH_KEYS = ("dag_id", "tags", "operator")


def _parse_rule(reader: _Reader, name: str, raw: Any, base: Rule | None) -> Rule:
    key = f"rules.{name}"
    body = reader.mapping(raw, key)
    if base is not None:
        rule_type = base.type
        if "type" in body and body["type"] != rule_type:
            raise reader.fail(
                f"{key}.type",
                f"built-in rule {name!r} has type {rule_type!r}",
                "remove type: or give your rule another name",
            )
    else:
        if "type" not in body:
            raise reader.fail(
                f"{key}.type",
                f"rule {name!r} is not built in and has no type",
                f"add type: one of {', '.join(t for t in RULE_TYPES if t != 'custom')}, or use a "
                f"built-in name: {', '.join(BUILTIN_RULES)}",
            )
        rule_type = reader.string(body["type"], f"{key}.type")
        if rule_type not in RULE_TYPES or rule_type == "custom":
            raise reader.fail(
                f"{key}.type",
                f"unknown rule type {rule_type!r}",
                f"use one of: {', '.join(t for t in RULE_TYPES if t != 'custom')}",
            )
    reader.keys(body, key, _RULE_KEYS + _RULE_KEYS_BY_TYPE.get(rule_type, ()))
    rule = base or Rule(name=name, type=rule_type, severity=Severity.WARNING)
    changes: dict[str, Any] = {}
    if "enabled" in body:
        changes["enabled"] = reader.boolean(body["enabled"], f"{key}.enabled")
    if "severity" in body:
        changes["severity"] = reader.severity(body["severity"], f"{key}.severity")
    if "notify" in body:
        changes["notify"] = reader.boolean(body["notify"], f"{key}.notify")
    if "description" in body:
        changes["description"] = reader.string(body["description"], f"{key}.description", allow_empty=True)
    if "after_attempt" in body:
        changes["after_attempt"] = int(
            reader.number(body["after_attempt"], f"{key}.after_attempt", minimum=0, integer=True)
        )
    if "template" in body:
        changes["template"] = reader.template_name(body["template"], f"{key}.template")
    if "match" in body:
        match = reader.mapping(body["match"], f"{key}.match")
        reader.keys(match, f"{key}.match", _RULE_MATCH_KEYS)
        changes["match"] = RuleMatch(**{k: reader.strings(v, f"{key}.match.{k}") for k, v in match.items()})
    if rule_type in ("overrun", "stuck", "late", "heartbeat"):
        changes.update(_foresight_rule_changes(reader, key, body))
    if rule_type == "duration":
        if "max_duration" in body:
            changes["max_duration_s"] = (
                None if body["max_duration"] is None else reader.duration(body["max_duration"], f"{key}.max_duration")
            )
        if "median_factor" in body:
            changes["median_factor"] = (
                None
                if body["median_factor"] is None
                else reader.number(body["median_factor"], f"{key}.median_factor", minimum=1.0)
            )
        if "min_history" in body:
            changes["min_history"] = int(
                reader.number(body["min_history"], f"{key}.min_history", minimum=1, integer=True)
            )
        if "min_duration" in body:
            changes["min_duration_s"] = reader.duration(body["min_duration"], f"{key}.min_duration")
        if "events" in body:
            events = reader.strings(body["events"], f"{key}.events")
            for i, event in enumerate(events):
                if event not in RULE_TYPES["duration"]:
                    raise reader.fail(
                        f"{key}.events[{i}]",
                        f"unknown event {event!r}",
                        f"use any of: {', '.join(RULE_TYPES['duration'])}",
                    )
            changes["events"] = events
    if rule_type == "metric":
        for required in ("metric", "threshold"):
            if required not in body and (base is None or getattr(base, required) is None):
                raise reader.fail(
                    f"{key}.{required}",
                    "missing required key",
                    f"add {required}: to {key} (e.g. metric: spark_job_duration, op: '>', threshold: 1800)",
                )
        if "metric" in body:
            changes["metric"] = reader.string(body["metric"], f"{key}.metric")
        if "op" in body:
            op = reader.string(body["op"], f"{key}.op")
            if op not in METRIC_OPS:
                raise reader.fail(
                    f"{key}.op",
                    f"unknown comparison {op!r}",
                    f"use one of: {', '.join(METRIC_OPS)} (quote it: op: '>')",
                )
            changes["op"] = op
        if "threshold" in body:
            changes["threshold"] = reader.number(body["threshold"], f"{key}.threshold")
        if "resolve_when_ok" in body:
            changes["resolve_when_ok"] = reader.boolean(body["resolve_when_ok"], f"{key}.resolve_when_ok")
    if rule_type == "recovered" and "resolves" in body:
        changes["resolves"] = reader.strings(body["resolves"], f"{key}.resolves")
    rule = dataclasses.replace(rule, **changes)
    if rule.type == "duration" and rule.enabled and rule.max_duration_s is None and rule.median_factor is None:
        raise reader.fail(
            key,
            "duration rule without max_duration or median_factor",
            "set max_duration (e.g. 2h) and/or median_factor (e.g. 3), or enabled: false",
        )
    return rule


def _foresight_rule_changes(reader: _Reader, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of the api-server's in-flight checks (``overrun``, ``stuck``)."""
    changes: dict[str, Any] = {}
    for name, field in (("max_duration", "max_duration_s"), ("min_duration", "min_duration_s"),
                        ("max_queued", "max_queued_s"), ("max_scheduled", "max_scheduled_s"),
                        ("max_delay", "max_delay_s"), ("max_silence", "max_silence_s")):
        if name in body:
            changes[field] = None if body[name] is None else reader.duration(body[name], f"{key}.{name}")
    if "factor" in body:
        changes["factor"] = reader.number(body["factor"], f"{key}.factor", minimum=1.0)
    if "min_history" in body:
        changes["min_history"] = int(reader.number(body["min_history"], f"{key}.min_history", minimum=1, integer=True))
    return changes


def _parse_mute(reader: _Reader, raw: Any, key: str) -> MuteWindow:
    body = reader.mapping(raw, key)
    reader.keys(body, key, _MUTE_KEYS)
    if not body:
        raise reader.fail(key, "empty mute window", "give weekdays/hours, or start/end")
    explicit = "start" in body or "end" in body
    recurring = any(k in body for k in ("weekdays", "hours"))
    if explicit and recurring:
        raise reader.fail(key, "mixes start/end with weekdays/hours", "split it into two mute windows")
    if explicit:
        start = _instant(reader, body.get("start"), f"{key}.start")
        end = _instant(reader, body.get("end"), f"{key}.end")
        if start is None or end is None:
            raise reader.fail(
                key,
                "an explicit mute window needs both start and end",
                "add start: 2025-12-24T00:00:00Z and end: 2025-12-27T00:00:00Z",
            )
        if end <= start:
            raise reader.fail(f"{key}.end", "end is not after start", "swap start and end")
        if "timezone" in body:
            raise reader.fail(
                f"{key}.timezone",
                "timezone applies to weekdays/hours only",
                "write start/end with an offset, e.g. 2025-12-24T00:00:00+01:00",
            )
        return MuteWindow(start=start, end=end)
    zone_name = reader.string(body.get("timezone", "UTC"), f"{key}.timezone")
    try:
        _zone(zone_name)
    except Exception:
        raise reader.fail(
            f"{key}.timezone", f"unknown timezone {zone_name!r}", "use an IANA name such as UTC or Europe/Paris"
        ) from None
    weekdays = frozenset(range(7))
    if "weekdays" in body:
        weekdays = _weekdays(reader, body["weekdays"], f"{key}.weekdays")
    start_time = end_time = None
    if "hours" in body:
        start_time, end_time = _hours(reader, body["hours"], f"{key}.hours")
    return MuteWindow(weekdays=weekdays, start_time=start_time, end_time=end_time, timezone=zone_name)


def _instant(reader: _Reader, value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = reader.string(value, key).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise reader.fail(
                key, f"{value!r} is not an ISO 8601 date-time", "write e.g. 2025-12-24T00:00:00Z"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _weekdays(reader: _Reader, value: Any, key: str) -> frozenset[int]:
    days: set[int] = set()
    fix = "use mon..sun, ranges like mon-fri, e.g. weekdays: [sat, sun]"
    for i, item in enumerate(reader.strings(value, key)):
        for part in item.split(","):
            part = part.strip().lower()
            bounds = [b.strip()[:3] for b in part.split("-")]
            if len(bounds) > 2 or any(b not in _WEEKDAYS for b in bounds):
                raise reader.fail(f"{key}[{i}]" if isinstance(value, list) else key, f"unknown weekday {part!r}", fix)
            first, last = _WEEKDAYS.index(bounds[0]), _WEEKDAYS.index(bounds[-1])
            span = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
            days.update(span)
    if not days:
        raise reader.fail(key, "no weekdays given", fix)
    return frozenset(days)


_HOURS = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?\s*$")


def _hours(reader: _Reader, value: Any, key: str) -> tuple[time, time]:
    fix = 'write a range like "22:00-06:00" or "9-17" (UTC unless timezone is set; 24:00 = midnight)'
    found = _HOURS.match(reader.string(value, key))
    if not found:
        raise reader.fail(key, f"{value!r} is not an hours range", fix)
    h1, m1, h2, m2 = (int(x) if x else 0 for x in found.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        raise reader.fail(key, f"{value!r} is not a valid time range", fix)
    start, end = time(h1 % 24, m1), time(h2 % 24, m2)
    if start == end:
        raise reader.fail(
            key,
            f"{value!r} is an empty range",
            "use a range with different start and end, or omit hours to mute whole days",
        )
    return start, end


def _parse_route(
    reader: _Reader,
    index: int,
    raw: Any,
    defaults: Mapping[str, Any],
    channels: Mapping[str, Channel],
    used_names: set[str],
) -> Route:
    key = f"routes[{index}]"
    body = reader.mapping(raw, key)
    reader.keys(body, key, _ROUTE_KEYS, required=("channels",))
    name = reader.string(body["name"], f"{key}.name") if "name" in body else f"route-{index}"
    if name in used_names:
        raise reader.fail(f"{key}.name", f"duplicate route name {name!r}", "give every route a unique name")
    used_names.add(name)

    def channel_list(field: str) -> tuple[str, ...]:
        names = reader.strings(body.get(field), f"{key}.{field}")
        for i, channel in enumerate(names):
            if channel not in channels:
                close = difflib.get_close_matches(channel, list(channels), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise reader.fail(
                    f"{key}.{field}[{i}]",
                    f"unknown channel {channel!r}",
                    f"{hint}define it under channels: or use one of: {', '.join(channels)}",
                )
        return tuple(dict.fromkeys(names))

    targets = channel_list("channels")
    if not targets:
        raise reader.fail(f"{key}.channels", "a route without channels", "list at least one channel name")
    escalation = channel_list("escalation_channels")
    fallback = channel_list("fallback_channels")
    escalate_after = None
    if body.get("escalate_after") is not None:
        escalate_after = reader.duration(body["escalate_after"], f"{key}.escalate_after")
    if (escalate_after is None) != (not escalation):
        missing = "escalation_channels" if escalate_after is not None else "escalate_after"
        raise reader.fail(
            f"{key}.{missing}",
            "escalate_after and escalation_channels go together",
            f"add {missing}: or remove the other one",
        )
    group_by = _group_by(reader, body["group_by"], f"{key}.group_by") if "group_by" in body else defaults["group_by"]
    mute_raw = body.get("mute") or []
    if not isinstance(mute_raw, list):
        mute_raw = [mute_raw]
    return Route(
        name=name,
        channels=targets,
        match=_parse_route_match(reader, body.get("match"), f"{key}.match"),
        continue_matching=reader.boolean(body["continue"], f"{key}.continue") if "continue" in body else False,
        group_by=group_by,
        group_wait_s=reader.duration(body["group_wait"], f"{key}.group_wait")
        if "group_wait" in body
        else defaults["group_wait_s"],
        repeat_interval_s=reader.duration(body["repeat_interval"], f"{key}.repeat_interval")
        if "repeat_interval" in body
        else defaults["repeat_interval_s"],
        mute=tuple(_parse_mute(reader, window, f"{key}.mute[{i}]") for i, window in enumerate(mute_raw)),
        escalate_after_s=escalate_after,
        escalation_channels=escalation,
        fallback_channels=fallback,
    )


def _group_by(reader: _Reader, value: Any, key: str) -> tuple[str, ...]:
    fields = reader.strings(value, key)
    for i, field in enumerate(fields):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", field):
            raise reader.fail(
                f"{key}[{i}]",
                f"bad group_by field {field!r}",
                f"use alert fields ({', '.join(GROUP_BY_FIELDS)}) or label names such as owner",
            )
    return tuple(dict.fromkeys(fields))


def _parse_route_match(reader: _Reader, raw: Any, key: str) -> RouteMatch:
    body = reader.mapping(raw, key)
    reader.keys(body, key, _ROUTE_MATCH_KEYS)
    kinds: list[AlertKind] = []
    for i, kind in enumerate(reader.strings(body.get("kind"), f"{key}.kind")):
        try:
            kinds.append(AlertKind(kind))
        except ValueError:
            raise reader.fail(
                f"{key}.kind[{i}]",
                f"unknown alert kind {kind!r}",
                f"use any of: {', '.join(k.value for k in AlertKind)}",
            ) from None
    regex: list[tuple[str, re.Pattern[str]]] = []
    raw_regex = body.get("regex")
    if isinstance(raw_regex, Mapping):
        for field, pattern in reader.mapping(raw_regex, f"{key}.regex").items():
            if field not in _REGEX_FIELDS and not field.startswith("labels."):
                raise reader.fail(
                    f"{key}.regex.{field}",
                    f"unknown field {field!r}",
                    f"use one of: {', '.join(_REGEX_FIELDS)} or labels.<name>",
                )
            regex.append((field, reader.regex(pattern, f"{key}.regex.{field}")))
    elif raw_regex is not None:
        regex.append(("", reader.regex(raw_regex, f"{key}.regex")))
    return RouteMatch(
        min_severity=reader.severity(body["severity"], f"{key}.severity") if "severity" in body else Severity.INFO,
        kinds=tuple(kinds),
        rules=reader.strings(body.get("rule"), f"{key}.rule"),
        dag_id=reader.strings(body.get("dag_id"), f"{key}.dag_id"),
        task_id=reader.strings(body.get("task_id"), f"{key}.task_id"),
        tags=reader.strings(body.get("tags"), f"{key}.tags"),
        owner=reader.strings(body.get("owner"), f"{key}.owner"),
        regex=tuple(regex),
    )


def _parse_channel(reader: _Reader, name: str, raw: Any, default_conn: Mapping[str, str]) -> Channel:
    key = f"channels.{name}"
    body = reader.mapping(raw, key)
    reader.keys(body, key, (*_CHANNEL_KEYS, *_all_channel_options()), required=("type",))
    channel_type = reader.string(body["type"], f"{key}.type")
    spec = channel_registry.channel_type(channel_type)
    if spec is None:
        known = ", ".join(channel_registry.CHANNEL_TYPES)
        raise reader.fail(f"{key}.type", f"unknown channel type {channel_type!r}", f"use one of: {known}")
    reader.keys(body, key, (*_CHANNEL_KEYS, *spec.options), required=("type", *spec.required))
    options = {name: _channel_option(reader, body[name], f"{key}.{name}", spec.options[name])
               for name in spec.options if body.get(name) is not None}
    to = reader.strings(body.get("to"), f"{key}.to")
    if to and channel_type != "email":
        raise reader.fail(f"{key}.to", "to: is for email channels", "remove to: or set type: email")
    for i, address in enumerate(to):
        if not re.match(r"^[^@\s<>,;]+@[^@\s<>,;]+$", address):
            raise reader.fail(f"{key}.to[{i}]", f"{address!r} is not an email address", "write name@example.com")
    slack_channel = None
    if body.get("channel") is not None:
        if channel_type != "slack":
            raise reader.fail(f"{key}.channel", "channel: is for slack channels", "remove it or set type: slack")
        slack_channel = reader.string(body["channel"], f"{key}.channel")
    rate = spec.rate_per_s
    if "rate_limit_per_s" in body:
        rate = reader.number(body["rate_limit_per_s"], f"{key}.rate_limit_per_s", minimum=0.001)
    conn_id = (
        reader.string(body["conn_id"], f"{key}.conn_id")
        if body.get("conn_id") is not None
        else default_conn.get(channel_type) or spec.conn_id or ""
    )
    return Channel(name=name, type=channel_type, conn_id=conn_id, to=to, channel=slack_channel, rate_limit_per_s=rate,
                   options=options)


def _all_channel_options() -> tuple[str, ...]:
    """Every registered type's option keys (an unknown key is reported before the type is known)."""
    return tuple(dict.fromkeys(name for spec in channel_registry.CHANNEL_TYPES.values() for name in spec.options))


def _channel_option(reader: _Reader, value: Any, key: str, kind: str) -> Any:
    """One channel option checked against its kind (see ``tasklens.channels.OptionKind``)."""
    if kind == "strs":
        return reader.strings(value, key)
    if kind == "number":
        return reader.number(value, key)
    if kind == "mapping":
        return reader.mapping(value, key)
    text = reader.string(value, key)
    if kind == "dotted" and not re.match(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$", text):
        raise reader.fail(key, f"{text!r} is not a dotted path", "write module.Class, e.g. package.module.MyNotifier")
    if kind == "url" and not re.match(r"^https?://[^\s/]+", text):
        raise reader.fail(key, f"{text!r} is not an http(s) URL", "write the base URL, e.g. https://events.example.com")
    return text


def _parse_retry_policy(reader: _Reader, name: str, raw: Any) -> RetryPolicyRef:
    key = f"retry_policies.{name}"
    body = reader.mapping(raw, key)
    reader.keys(body, key, _RETRY_POLICY_KEYS, required=("preset",))
    match = reader.mapping(body.get("match"), f"{key}.match")
    reader.keys(match, f"{key}.match", _RETRY_MATCH_KEYS)
    return RetryPolicyRef(
        name=name,
        preset=reader.string(body["preset"], f"{key}.preset"),
        dag_id=reader.strings(match.get("dag_id"), f"{key}.match.dag_id"),
        tags=reader.strings(match.get("tags"), f"{key}.match.tags"),
        operator=reader.strings(match.get("operator"), f"{key}.match.operator"),
    )


# --------------------------------------------------------------------------- defaults


#: ``(slack_conn_id, smtp_conn_id)`` of the built-in channels when the caller passes none. The ruleset reads no
#: configuration: :mod:`tasklens.config` passes its ``[tasklens]`` values in with :func:`use_default_conn_ids`.
def _builtin_conn_ids() -> tuple[str, str]:
    return "tasklens_slack", "tasklens_smtp"


_conn_id_defaults: Callable[[], tuple[str, str]] = _builtin_conn_ids


def use_default_conn_ids(defaults: Callable[[], tuple[str, str]]) -> None:
    """Where the built-in Slack and email channels get their connection ids when none is passed."""
    global _conn_id_defaults
    _conn_id_defaults = defaults


def _default_conn_ids(slack_conn_id: str | None, smtp_conn_id: str | None) -> dict[str, str]:
    if slack_conn_id is None or smtp_conn_id is None:
        default_slack, default_smtp = _conn_id_defaults()
        slack_conn_id = slack_conn_id or default_slack
        smtp_conn_id = smtp_conn_id or default_smtp
    return {"slack": slack_conn_id, "email": smtp_conn_id}


def _builtin_rules() -> tuple[Rule, ...]:
    def metric(name: str, op: str, threshold: float, severity: Severity, text: str) -> Rule:
        return Rule(
            name=name, type="metric", severity=severity, metric=name, op=op, threshold=threshold, description=text
        )

    return (
        Rule("task_failed", "failed", Severity.CRITICAL, description="A task attempt failed with no retries left."),
        Rule(
            "task_retry",
            "retry",
            Severity.WARNING,
            notify=False,
            description="A task attempt failed and a retry is scheduled (stored, not sent).",
        ),
        Rule(
            "task_killed",
            "killed",
            Severity.CRITICAL,
            description="A task was killed outside Python (SIGKILL/OOM, worker lost, heartbeat timeout).",
        ),
        Rule(
            "task_recovered",
            "recovered",
            Severity.INFO,
            resolves=("task_failed", "task_retry", "task_killed"),
            description="A task succeeded: resolve its open failure, retry and killed alerts.",
        ),
        Rule(
            "task_duration",
            "duration",
            Severity.WARNING,
            median_factor=3.0,
            min_history=5,
            min_duration_s=300.0,
            events=("success",),
            description="A task ran more than 3x its recent median (and at least 5 minutes).",
        ),
        Rule(
            "task_overrun",
            "overrun",
            Severity.WARNING,
            factor=2.0,
            min_history=5,
            min_duration_s=300.0,
            description="A task has been running over 2x its usual p95 duration (and at least 5 minutes).",
        ),
        Rule(
            "task_stuck",
            "stuck",
            Severity.WARNING,
            max_queued_s=1800.0,
            max_scheduled_s=1800.0,
            description="A task has waited in queued or scheduled for over 30 minutes.",
        ),
        Rule(
            "dag_late",
            "late",
            Severity.WARNING,
            max_delay_s=1800.0,
            description="A scheduled DAG run has not started (or not been created) 30 minutes after it was due.",
        ),
        Rule(
            "component_heartbeat",
            "heartbeat",
            Severity.CRITICAL,
            max_silence_s=180.0,
            description="The scheduler, triggerer or dag-processor has not heartbeated for 3 minutes.",
        ),
        Rule("custom", "custom", Severity.WARNING, description="Alerts raised by task code with tasklens.alert()."),
        metric("spark_job_duration", ">", 1800.0, Severity.WARNING, "A Spark job ran longer than 30 minutes."),
        metric("spark_memory_utilization", ">", 85.0, Severity.CRITICAL, "Spark executors used over 85% memory."),
        metric("data_quality_score", "<", 95.0, Severity.WARNING, "Data quality score fell below 95."),
        metric("prediction_accuracy", "<", 85.0, Severity.WARNING, "Model accuracy fell below 85%."),
    )


def _builtin_routes() -> tuple[Route, ...]:
    return (
        Route(
            name="critical",
            channels=("slack",),
            match=RouteMatch(min_severity=Severity.CRITICAL),
            escalate_after_s=1800.0,
            escalation_channels=("email",),
            fallback_channels=("email",),
        ),
        Route(
            name="warning",
            channels=("slack",),
            match=RouteMatch(min_severity=Severity.WARNING),
            fallback_channels=("email",),
        ),
    )


def default_ruleset(*, slack_conn_id: str | None = None, smtp_conn_id: str | None = None) -> Ruleset:
    """The built-in rules, routes and channels (connection ids default to ``[tasklens]`` config)."""
    conns = _default_conn_ids(slack_conn_id, smtp_conn_id)
    channels = {
        "slack": Channel(name="slack", type="slack", conn_id=conns["slack"], rate_limit_per_s=1.0),
        "email": Channel(name="email", type="email", conn_id=conns["email"], rate_limit_per_s=5.0),
    }
    return Ruleset(
        rules=_builtin_rules(),
        routes=_builtin_routes(),
        channels=types.MappingProxyType(channels),
        retry_policies=types.MappingProxyType({}),
        source=None,
    )


# --------------------------------------------------------------------------- loading


def parse_ruleset(
    document: Any,
    *,
    source: str = "<rules>",
    path: Path | None = None,
    slack_conn_id: str | None = None,
    smtp_conn_id: str | None = None,
) -> Ruleset:
    """Validate an already-parsed YAML document (a mapping) layered on the built-in defaults."""
    reader = _Reader(source)
    top = reader.mapping(document, "")
    # `x-...` keys hold YAML anchors for reuse (as in docker-compose); they are not configuration.
    top = {key: value for key, value in top.items() if not key.startswith("x-")}
    reader.keys(top, "", _TOP_KEYS)
    if "version" in top and top["version"] != 1:
        raise reader.fail("version", f"unsupported version {top['version']!r}", "write version: 1")
    defaults_body = reader.mapping(top.get("defaults"), "defaults")
    reader.keys(defaults_body, "defaults", _DEFAULTS_KEYS)
    defaults: dict[str, Any] = {
        "group_by": _group_by(reader, defaults_body["group_by"], "defaults.group_by")
        if "group_by" in defaults_body
        else ("dag_id", "run_id"),
        "group_wait_s": reader.duration(defaults_body["group_wait"], "defaults.group_wait")
        if "group_wait" in defaults_body
        else DEFAULT_GROUP_WAIT_S,
        "repeat_interval_s": reader.duration(defaults_body["repeat_interval"], "defaults.repeat_interval")
        if "repeat_interval" in defaults_body
        else 3600.0,
    }
    base = default_ruleset(slack_conn_id=slack_conn_id, smtp_conn_id=smtp_conn_id)
    conns = {"slack": base.channels["slack"].conn_id, "email": base.channels["email"].conn_id}

    channels = dict(base.channels)
    for name, raw in reader.mapping(top.get("channels"), "channels").items():
        _check_name(reader, name, "channels")
        channels[name] = _parse_channel(reader, name, raw, conns)

    rules = {rule.name: rule for rule in base.rules}
    for name, raw in reader.mapping(top.get("rules"), "rules").items():
        _check_name(reader, name, "rules")
        rules[name] = _parse_rule(reader, name, raw, rules.get(name))
    for rule in rules.values():
        for i, resolved in enumerate(rule.resolves):
            if resolved not in rules:
                raise reader.fail(
                    f"rules.{rule.name}.resolves[{i}]",
                    f"unknown rule {resolved!r}",
                    f"use rule names defined in the file or built in: {', '.join(rules)}",
                )

    if "routes" in top and top["routes"] is not None:
        if not isinstance(top["routes"], list):
            raise reader.fail("routes", "expected a list of routes", "write each route as a `- name: ...` item")
        used: set[str] = set()
        routes = tuple(_parse_route(reader, i, raw, defaults, channels, used) for i, raw in enumerate(top["routes"]))
    else:
        routes = tuple(
            dataclasses.replace(
                route,
                group_by=defaults["group_by"],
                group_wait_s=defaults["group_wait_s"],
                repeat_interval_s=defaults["repeat_interval_s"],
            )
            for route in base.routes
        )

    policies = {}
    for name, raw in reader.mapping(top.get("retry_policies"), "retry_policies").items():
        _check_name(reader, name, "retry_policies")
        policies[name] = _parse_retry_policy(reader, name, raw)

    deadlines = []
    for name, raw in reader.mapping(top.get("deadlines"), "deadlines").items():
        _check_name(reader, name, "deadlines")
        deadlines.append(parse_deadline(name, raw, source=reader.source, strings=reader.strings,
                                        duration=reader.duration))

    return Ruleset(
        rules=tuple(rules.values()),
        routes=routes,
        channels=types.MappingProxyType(channels),
        retry_policies=types.MappingProxyType(policies),
        source=path,
        deadlines=tuple(deadlines),
    )


def _check_name(reader: _Reader, name: str, section: str) -> None:
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$", name):
        raise reader.fail(
            f"{section}.{name}",
            f"bad name {name!r}",
            "use letters, digits, '_', '-', '.' or ':' (at most 100 characters)",
        )


def read_rules_file(path: Path | str) -> str:
    """The text of the rules file at ``path``.

    Raises :class:`~tasklens.exceptions.ConfigError` (kind ``missing_file`` or ``unreadable_file``).
    """
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            source,
            "rules_file",
            "file not found",
            "create it (see include/tasklens_rules.example.yml) or unset [tasklens] rules_file",
            kind="missing_file",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            source, "rules_file", f"cannot read the file: {error}", "make it a readable UTF-8 text file",
            kind="unreadable_file",
        ) from None


def parse_rules_text(
    text: str,
    *,
    source: str = "<rules>",
    path: Path | None = None,
    slack_conn_id: str | None = None,
    smtp_conn_id: str | None = None,
) -> Ruleset:
    """Parse and validate the YAML ``text`` of a rules file.

    Raises :class:`~tasklens.exceptions.ConfigError` (kind ``invalid_yaml`` or ``invalid_rules``).
    """
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            source,
            where,
            f"malformed YAML: {problem}",
            "fix the YAML syntax there (indentation, quotes, a ':' after each key)",
            kind="invalid_yaml",
        ) from None
    try:
        return parse_ruleset(document, source=source, path=path, slack_conn_id=slack_conn_id,
                             smtp_conn_id=smtp_conn_id)
    except ConfigError as error:
        if error.kind == "invalid":
            error.kind = "invalid_rules"
        raise


def load_ruleset(
    path: Path | str | None, *, slack_conn_id: str | None = None, smtp_conn_id: str | None = None
) -> Ruleset:
    """Load and validate the rules file; ``None`` returns :func:`default_ruleset`.

    Raises :class:`~tasklens.exceptions.ConfigError` naming the file, the key and the fix.
    """
    if path is None:
        return default_ruleset(slack_conn_id=slack_conn_id, smtp_conn_id=smtp_conn_id)
    path = Path(path)
    return parse_rules_text(read_rules_file(path), source=str(path), path=path, slack_conn_id=slack_conn_id,
                            smtp_conn_id=smtp_conn_id)

"""The rules model: rules, routes, channels, mute windows and retry policy assignments, as the rules file
configures them once validated (frozen dataclasses, no I/O)."""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tasklens import channels as channel_registry
from tasklens.alerts import AlertKind, Severity
from tasklens.deadlines import Deadline
from tasklens.failures import ClassRule

__all__ = [
    "BUILTIN_RULES",
    "CHANNEL_TYPES",
    "DEFAULT_GROUP_WAIT_S",
    "GROUP_BY_FIELDS",
    "METRIC_OPS",
    "RULE_TYPES",
    "TEMPLATE_NAME",
    "Channel",
    "MuteWindow",
    "RetryPolicyRef",
    "Route",
    "RouteMatch",
    "Rule",
    "RuleMatch",
    "Ruleset",
    "time_zone",
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
#: What a message template name may be (rules files and ``tasklens.alert(template=...)``).
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def time_zone(name: str) -> Any:
    if name.upper() == "UTC":
        return timezone.utc
    return ZoneInfo(name)


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
        local = at.astimezone(time_zone(self.timezone))
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
    failure_class: tuple[str, ...] = ()  # any of these failure classes (tasklens.failures)
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
    locale: str | None = None  # the messages' language (a shipped catalogue); the channel's when None
    timezone: str | None = None  # IANA zone of the messages' dates; the channel's when None


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
    locale: str | None = None  # the messages' language unless the route sets one
    timezone: str | None = None
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
    #: The file's classifier entries, tried before :data:`tasklens.failures.BUILTIN_TABLE`.
    failure_classes: tuple[ClassRule, ...] = ()
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

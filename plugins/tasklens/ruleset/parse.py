"""A rules document (parsed YAML) to a validated :class:`~tasklens.ruleset.model.Ruleset`, layered on the built-in
defaults. Every error is a :class:`~tasklens.exceptions.ConfigError` naming the source, the dotted key and a fix."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from collections.abc import Iterable, Mapping
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Any

from tasklens import catalogues
from tasklens import channels as channel_registry
from tasklens.alerts import AlertKind, Severity
from tasklens.deadlines import parse_deadline
from tasklens.exceptions import ConfigError
from tasklens.failures import FAILURE_CLASSES, parse_table
from tasklens.ruleset.defaults import default_ruleset
from tasklens.ruleset.model import (
    BUILTIN_RULES,
    DEFAULT_GROUP_WAIT_S,
    GROUP_BY_FIELDS,
    METRIC_OPS,
    RULE_TYPES,
    TEMPLATE_NAME,
    Channel,
    MuteWindow,
    RetryPolicyRef,
    Route,
    RouteMatch,
    Rule,
    RuleMatch,
    Ruleset,
    time_zone,
)

__all__ = ["parse_duration", "parse_ruleset"]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


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
        if not TEMPLATE_NAME.match(name):
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
    "locale",
    "timezone",
)
_ROUTE_MATCH_KEYS = ("severity", "kind", "rule", "dag_id", "task_id", "tags", "owner", "failure_class", "regex")
_REGEX_FIELDS = ("title", "summary", "exception_type", "exception_message", "dag_id", "task_id", "run_id", "rule")
_CHANNEL_KEYS = ("type", "conn_id", "to", "channel", "rate_limit_per_s", "locale", "timezone")
_MUTE_KEYS = ("weekdays", "hours", "timezone", "start", "end")
_DEFAULTS_KEYS = ("group_by", "group_wait", "repeat_interval")
_TOP_KEYS = ("version", "defaults", "channels", "rules", "routes", "retry_policies", "failure_classes", "deadlines")
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
    """The keys of the api-server's in-flight checks (``overrun``, ``stuck``, ``late``, ``heartbeat``)."""
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
        time_zone(zone_name)
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
        **_message_language(reader, body, key),
    )


def _message_language(reader: _Reader, body: Mapping[str, Any], key: str) -> dict[str, str | None]:
    """``locale`` (a shipped catalogue, normalised: ``pt-br`` -> ``pt_BR``) and ``timezone`` of a route or channel."""
    locale = zone = None
    if body.get("locale") is not None:
        locale = reader.string(body["locale"], f"{key}.locale")
        if catalogues.catalogue_for(locale) is None:
            raise reader.fail(
                f"{key}.locale",
                f"no message catalogue for locale {locale!r}",
                f"use one of: {', '.join(catalogues.available_catalogues())} (or a regional variant such as fr_CA), "
                f"or add tasklens/locale/{catalogues.normalize_locale(locale) or locale}.po (docs/channels.md)",
            )
        locale = catalogues.normalize_locale(locale)
    if body.get("timezone") is not None:
        zone = reader.string(body["timezone"], f"{key}.timezone")
        try:
            time_zone(zone)
        except Exception:
            raise reader.fail(
                f"{key}.timezone", f"unknown timezone {zone!r}", "use an IANA name such as UTC or Europe/Paris"
            ) from None
    return {"locale": locale, "timezone": zone}


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
        failure_class=_failure_classes(reader, body.get("failure_class"), f"{key}.failure_class"),
        regex=tuple(regex),
    )


def _failure_classes(reader: _Reader, value: Any, key: str) -> tuple[str, ...]:
    classes = reader.strings(value, key)
    for i, name in enumerate(classes):
        if name not in FAILURE_CLASSES:
            raise reader.fail(f"{key}[{i}]" if isinstance(value, list) else key, f"unknown failure class {name!r}",
                              f"use any of: {', '.join(FAILURE_CLASSES)}")
    return classes


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
                   options=options, **_message_language(reader, body, key))


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
        failure_classes=parse_table(top.get("failure_classes"), source),
        deadlines=tuple(deadlines),
    )


def _check_name(reader: _Reader, name: str, section: str) -> None:
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$", name):
        raise reader.fail(
            f"{section}.{name}",
            f"bad name {name!r}",
            "use letters, digits, '_', '-', '.' or ':' (at most 100 characters)",
        )

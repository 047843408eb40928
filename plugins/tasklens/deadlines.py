"""The rules file's ``deadlines:`` section: when a DAG run must be done, validated at load (model only, no I/O).

::

    deadlines:
      nightly_ml:
        match: {dag_id: "lakehouse_*", tags: [ml]}
        by: "06:00 Europe/Paris"        # the first 06:00 Paris time after the run is due
      hourly_feed:
        match: {dag_id: feed_hourly}
        within: 45m                     # 45 min after the run starts (from: start) or its data interval end

The api-server forecasts each in-flight run's finish against it (:mod:`tasklens.foresight.forecast`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasklens.alerts import Severity
from tasklens.exceptions import ConfigError

__all__ = ["DEADLINE_KEYS", "Deadline", "parse_deadline", "unmatched_globs"]

DEADLINE_KEYS = ("match", "by", "within", "from", "severity", "quantile", "min_history", "update_after_move")
_MATCH_KEYS = ("dag_id", "tags")
_ANCHORS = ("start", "data_interval_end")
_BY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*(\S+)?\s*$")


@dataclasses.dataclass(frozen=True)
class Deadline:
    """One ``deadlines:`` entry. Exactly one of ``by`` (a local time of day in ``zone``) and ``within_s``."""

    name: str
    dag_id: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    by: time | None = None
    zone: str = "UTC"
    within_s: float | None = None
    anchor: str = "start"
    severity: Severity = Severity.WARNING
    quantile: float = 0.9
    min_history: int = 5
    update_after_move_s: float = 600.0

    @property
    def label(self) -> str:
        """``"06:00 Europe/Paris"`` or ``"2h after start"`` (for messages)."""
        if self.by is not None:
            return f"{self.by.strftime('%H:%M')} {self.zone}"
        hours, rest = divmod(int(self.within_s or 0), 3600)
        minutes = rest // 60
        span = f"{hours}h{minutes:02d}m" if hours and minutes else f"{hours}h" if hours else f"{minutes}m"
        return f"{span} after {'the run start' if self.anchor == 'start' else 'the data interval end'}"

    def due_at(self, *, run_after: datetime | None, start: datetime | None,
               data_interval_end: datetime | None) -> datetime | None:
        """When a run with these times must be done (UTC), or None when the anchor is unknown."""
        if self.within_s is not None:
            anchor = start if self.anchor == "start" else data_interval_end
            return None if anchor is None else anchor + timedelta(seconds=self.within_s)
        reference = run_after or start
        if reference is None or self.by is None:
            return None
        zone = _zone(self.zone)
        local = reference.astimezone(zone)
        candidate = datetime.combine(local.date(), self.by, tzinfo=zone)
        if candidate <= local:
            candidate = datetime.combine(local.date() + timedelta(days=1), self.by, tzinfo=zone)
        return candidate.astimezone(timezone.utc)


def _zone(name: str) -> tzinfo:
    return timezone.utc if name.upper() == "UTC" else ZoneInfo(name)


def parse_deadline(name: str, raw: Any, *, source: str, strings: Callable[[Any, str], tuple[str, ...]],
                   duration: Callable[[Any, str], float]) -> Deadline:
    """Validate one ``deadlines.<name>`` entry; raises :class:`ConfigError` naming the key and the fix.

    ``strings`` and ``duration`` are the rules file reader's own checks (one string or a list; ``2h``)."""
    key = f"deadlines.{name}"

    def fail(sub: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(source, f"{key}.{sub}" if sub else key, problem, fix)

    if not isinstance(raw, Mapping):
        raise fail("", "expected a mapping", 'write e.g. `match: {dag_id: "nightly_*"}` and `by: "06:00 UTC"`')
    unknown = sorted(set(raw) - set(DEADLINE_KEYS))
    if unknown:
        raise fail(str(unknown[0]), "unknown key", f"use any of: {', '.join(DEADLINE_KEYS)}")
    changes: dict[str, Any] = {}
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match:
        raise fail("match", "missing or empty", 'say which DAGs: `match: {dag_id: "nightly_*"}` or `{tags: [ml]}`')
    for sub in match:
        if sub not in _MATCH_KEYS:
            raise fail(f"match.{sub}", "unknown key", f"use any of: {', '.join(_MATCH_KEYS)}")
        changes[sub] = strings(match[sub], f"{key}.match.{sub}")
    if ("by" in raw) == ("within" in raw):
        raise fail("by", "give exactly one of by: and within:",
                   'write by: "06:00 Europe/Paris" (a time of day) or within: 2h (after the run starts)')
    if "by" in raw:
        text = str(raw["by"])
        found = _BY.match(text)
        if not found:
            raise fail("by", f"{text!r} is not a time of day", 'write "HH:MM" and a timezone: "06:00 Europe/Paris"')
        hour, minute, zone = int(found.group(1)), int(found.group(2)), found.group(3) or "UTC"
        if hour > 23 or minute > 59:
            raise fail("by", f"{text!r} is not a time of day (hours 0-23, minutes 0-59)",
                       'write e.g. "06:00 Europe/Paris"; for "by the end of the day" write "23:59"')
        try:
            _zone(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise fail("by", f"unknown timezone {zone!r}",
                       "use an IANA name such as Europe/Paris, America/New_York or UTC") from None
        changes.update(by=time(hour, minute), zone=zone)
    else:
        within = duration(raw["within"], f"{key}.within")
        if within <= 0:
            raise fail("within", "must be longer than 0", "write e.g. within: 2h")
        changes["within_s"] = within
        if "from" in raw:
            anchor = str(raw["from"])
            if anchor not in _ANCHORS:
                raise fail("from", f"unknown anchor {anchor!r}", f"use one of: {', '.join(_ANCHORS)}")
            changes["anchor"] = anchor
    if "from" in raw and "by" in raw:
        raise fail("from", "from: applies to within: only", "remove from:, or use within: instead of by:")
    if "severity" in raw:
        try:
            changes["severity"] = Severity(str(raw["severity"]).lower())
        except ValueError:
            raise fail("severity", f"unknown severity {raw['severity']!r}", "use info, warning or critical") from None
    if "quantile" in raw:
        value = raw["quantile"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= float(value) < 1:
            raise fail("quantile", f"{value!r} is not a quantile between 0.5 and 1", "write e.g. 0.9 (p90)")
        changes["quantile"] = float(value)
    if "min_history" in raw:
        value = raw["min_history"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("min_history", f"{value!r} is not a positive whole number", "write e.g. min_history: 5")
        changes["min_history"] = value
    if "update_after_move" in raw:
        changes["update_after_move_s"] = duration(raw["update_after_move"], f"{key}.update_after_move")
    return Deadline(name=name, **changes)


def unmatched_globs(deadlines: Iterable[Deadline], dag_ids: Iterable[str]) -> list[tuple[str, str]]:
    """``(key, glob)`` of every deadline ``match.dag_id`` glob that matches none of ``dag_ids`` (a typo, or a DAG
    that was renamed): such a deadline silently watches nothing."""
    known = list(dag_ids)
    return [
        (f"deadlines.{deadline.name}.match.dag_id", glob)
        for deadline in deadlines
        for glob in deadline.dag_id
        if not any(fnmatch.fnmatchcase(dag_id, glob) for dag_id in known)
    ]

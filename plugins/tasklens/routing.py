"""Routing: an :class:`~tasklens.alerts.Alert` in, the channel targets it goes to out. Pure.

Routes are tried in file order, like Alertmanager's: the first matching route takes the alert
unless it says ``continue: true``. Each target becomes a :class:`~tasklens.alerts.Delivery`
carrying the route's grouping and timing knobs; the dispatcher applies them. Alerts of rules
with ``notify: false`` (retries by default) or disabled rules route nowhere: they are stored only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote

from tasklens.alerts import Alert, AlertKind, Delivery
from tasklens.ruleset import Route, RouteMatch, Ruleset
from tasklens.text import fit_key

__all__ = ["GROUP_KEY_CHARS", "group_key", "is_muted", "matches", "message_language", "route"]

#: Longest group key: the store's ``tasklens_deliveries.group_key`` column (VARCHAR(500)).
GROUP_KEY_CHARS = 500


def _globs(value: str | None, patterns: Iterable[str]) -> bool:
    text = "" if value is None else str(value)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in patterns)


def _tags(alert: Alert) -> list[str]:
    raw = alert.labels.get("dag_tags") or ""
    return [tag for tag in raw.split(",") if tag]


def _field(alert: Alert, field: str) -> str:
    if field.startswith("labels."):
        return str(alert.labels.get(field[len("labels.") :], ""))
    value = getattr(alert, field, None)
    return "" if value is None else str(getattr(value, "value", value))


def matches(alert: Alert, match: RouteMatch) -> bool:
    """Whether ``alert`` satisfies every criterion of a route's ``match``."""
    if alert.severity.rank < match.min_severity.rank:
        return False
    if match.kinds and alert.kind not in match.kinds:
        return False
    if match.rules and not _globs(alert.rule, match.rules):
        return False
    if match.dag_id and not _globs(alert.dag_id, match.dag_id):
        return False
    if match.task_id and not _globs(alert.task_id, match.task_id):
        return False
    if match.tags and not any(_globs(tag, match.tags) for tag in _tags(alert)):
        return False
    if match.failure_class and alert.failure_class not in match.failure_class:
        return False
    if match.owner:
        owners = [o.strip() for o in str(alert.labels.get("owner", "")).split(",")]
        if not any(_globs(owner, match.owner) for owner in owners):
            return False
    for field, pattern in match.regex:
        if field:
            text = _field(alert, field)
        else:
            text = "\n".join(filter(None, (alert.title, alert.summary, alert.exception_type, alert.exception_message)))
        if not pattern.search(text):
            return False
    return True


def _quote(value: str) -> str:
    # surrogatepass: ids carrying undecodable bytes still get a distinct, ASCII-only key.
    return quote(value, safe="", errors="surrogatepass")


def group_key(alert: Alert, route: Route | str, group_by: Iterable[str] | None = None) -> str:
    """The key alerts are grouped by within ``group_wait`` (e.g. one digest per DAG run).

    ``route=<name>;dag_id=<v>;run_id=<v>`` with values percent-encoded, so distinct values
    never collide. Unknown fields are looked up in the alert's labels. A key longer than
    :data:`GROUP_KEY_CHARS` (long non-ASCII ids encode to 9 characters each) keeps its head
    plus a hash of the whole key, so it still fits the store and stays distinct.
    """
    name = route if isinstance(route, str) else route.name
    fields = tuple(group_by) if group_by is not None else (() if isinstance(route, str) else route.group_by)
    parts = [f"route={_quote(name)}"]
    for field in fields:
        if field in ("dag_id", "task_id", "run_id", "map_index", "rule", "kind", "severity", "fingerprint"):
            value = _field(alert, field)
        else:
            value = _field(alert, field if field.startswith("labels.") else f"labels.{field}")
        parts.append(f"{_quote(field)}={_quote(value)}")
    return fit_key(";".join(parts), GROUP_KEY_CHARS)


def route(alert: Alert, ruleset: Ruleset) -> list[Delivery]:
    """The deliveries for ``alert``: one per channel, first matching route wins per channel.

    RESOLVE alerts route like the alert they resolve (same rule and severity) but never escalate;
    the store sends resolve notices only where the alert itself went.
    """
    rule = ruleset.rule(alert.rule)
    if rule is not None and not rule.active:
        return []
    deliveries: list[Delivery] = []
    seen: set[str] = set()
    for candidate in ruleset.routes:
        if not matches(alert, candidate.match):
            continue
        key = group_key(alert, candidate)
        escalate = candidate.escalate_after_s is not None and alert.kind != AlertKind.RESOLVE
        for channel_name in candidate.channels:
            if channel_name in seen or channel_name not in ruleset.channels:
                continue
            seen.add(channel_name)
            deliveries.append(
                Delivery(
                    route=candidate.name,
                    channel=channel_name,
                    channel_type=ruleset.channels[channel_name].type,
                    group_key=key,
                    group_wait_s=candidate.group_wait_s,
                    repeat_interval_s=candidate.repeat_interval_s,
                    escalate_after_s=candidate.escalate_after_s if escalate else None,
                    escalation_channels=candidate.escalation_channels if escalate else (),
                    fallback_channels=tuple(c for c in candidate.fallback_channels if c != channel_name),
                )
            )
        if not candidate.continue_matching:
            break
    return deliveries


def is_muted(delivery_or_route: Delivery | Route | str, at: datetime, ruleset: Ruleset) -> bool:
    """Whether the route behind a delivery (or the route itself, or its name) is muted at ``at``.

    Naive datetimes are UTC. An unknown route is never muted.
    """
    if isinstance(delivery_or_route, Route):
        found: Route | None = delivery_or_route
    else:
        name = delivery_or_route if isinstance(delivery_or_route, str) else delivery_or_route.route
        found = ruleset.route(name)
    if found is None:
        return False
    return any(window.contains(at) for window in found.mute)


def message_language(ruleset: Ruleset, route_name: str, channel_name: str) -> tuple[str | None, str | None]:
    """``(locale, timezone)`` of a message sent to ``channel_name`` for route ``route_name``: each is the route's
    when it sets one, else the channel's, else None (English, UTC)."""
    found = ruleset.route(route_name)
    channel = ruleset.channels.get(channel_name)
    locale = (found.locale if found else None) or (channel.locale if channel else None)
    zone = (found.timezone if found else None) or (channel.timezone if channel else None)
    return locale, zone

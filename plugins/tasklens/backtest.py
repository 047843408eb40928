"""``tasklens backtest``: replay the stored event history through a candidate rules file, next to the current rules.

No network and no writes: the events are read from the store, every rule, classifier and route is the real one
(:mod:`tasklens.rules`, :mod:`tasklens.failures`, :mod:`tasklens.routing`), and what the store and the dispatcher
would have done is simulated in memory:

- a new alert is one message per routed channel; alerts with the same group key within the route's
  ``group_wait`` of the group's first share one message (a digest);
- an occurrence of an alert still open is folded; it is sent again (a repeat) once ``repeat_interval`` has passed
  since that channel's last message about it;
- an alert still open ``escalate_after`` after it opened is one escalation message per escalation channel;
- a resolve is one message per channel that got the alert; muted routes send nothing;
- pages are messages carrying a critical alert (alert, repeat, escalation);
- incidents are failures across two or more DAGs sharing a signature or dependency within
  ``[tasklens] incident_window_s`` (:mod:`tasklens.incidents`).

Retries the reporter deduplicated, fallbacks and rate limits are not simulated: counts are what the rules ask for.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tasklens import failures, incidents, routing, rules
from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.events import TaskEvent
from tasklens.ruleset import Ruleset
from tasklens.store import Store, events_table

__all__ = ["Tally", "format_report", "read_history", "replay"]


@dataclasses.dataclass
class Tally:
    """What one rules file would have sent over a history."""

    messages: collections.Counter[tuple[str, str]] = dataclasses.field(default_factory=collections.Counter)
    pages: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    incidents: int = 0
    occurrences: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    titles: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    def noisiest(self, count: int = 10) -> list[tuple[str, int]]:
        """The ``count`` fingerprints with the most occurrences: ``(title, occurrences)``."""
        top = sorted(self.occurrences.items(), key=lambda item: (-item[1], self.titles[item[0]]))[:count]
        return [(self.titles[fp], n) for fp, n in top]


@dataclasses.dataclass
class _Open:
    alert: Alert
    deliveries: list[Delivery]
    last_sent: dict[str, datetime]
    notified: set[str]


class _Simulation:
    def __init__(self, ruleset: Ruleset, incident_window_s: float) -> None:
        self.ruleset = ruleset
        self.tally = Tally()
        self.open: dict[str, _Open] = {}
        self.groups: dict[tuple[str, str, str], datetime] = {}
        self.escalations: list[tuple[datetime, int, str]] = []  # (due, order, fingerprint)
        self.history: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        self.window = timedelta(seconds=incident_window_s)
        self.clusters: list[dict[str, Any]] = []

    def message(self, at: datetime, channel: str, kind: str, group_key: str, wait_s: float, severity: Severity) -> None:
        key = (channel, kind, group_key)
        start = self.groups.get(key)
        if start is not None and (at - start).total_seconds() <= wait_s:
            return  # joins the digest already counted
        self.groups[key] = at
        day = at.date().isoformat()
        self.tally.messages[(day, channel)] += 1
        if severity == Severity.CRITICAL and kind != "resolve":
            self.tally.pages[day] += 1

    def escalate_until(self, now: datetime) -> None:
        while self.escalations and self.escalations[0][0] <= now:
            due, _, fp = heapq.heappop(self.escalations)
            record = self.open.get(fp)
            if record is None:
                continue
            for delivery in record.deliveries:
                for channel in delivery.escalation_channels:
                    record.notified.add(channel)
                    self.message(due, channel, "escalation", delivery.group_key, delivery.group_wait_s,
                                 record.alert.severity)

    def event(self, event: TaskEvent, at: datetime) -> None:
        self.escalate_until(at)
        if event.event in failures.FAILURE_EVENTS:
            event = dataclasses.replace(event, failure_class=failures.classify(event, self.ruleset.failure_classes))
        durations = tuple(self.history[(event.dag_id, event.task_id)][-50:])
        for alert in rules.evaluate_event(event, self.ruleset, recent_durations_s=durations):
            if alert.kind == AlertKind.RESOLVE:
                self.resolve(alert, at)
            else:
                self.raise_alert(alert, at)
        if event.event == "success" and event.duration_s is not None:
            self.history[(event.dag_id, event.task_id)].append(float(event.duration_s))

    def raise_alert(self, alert: Alert, at: datetime) -> None:
        self.tally.occurrences[alert.fingerprint] += 1
        self.tally.titles.setdefault(alert.fingerprint, alert.title)
        self.correlate(alert, at)
        record = self.open.get(alert.fingerprint)
        if record is not None:
            fresh = {d.channel: d for d in routing.route(alert, self.ruleset)}  # this occurrence's group keys
            for delivery in record.deliveries:
                last = record.last_sent.get(delivery.channel)
                if last is None or (at - last).total_seconds() >= delivery.repeat_interval_s:
                    record.last_sent[delivery.channel] = at
                    key = fresh.get(delivery.channel, delivery).group_key
                    self.message(at, delivery.channel, "alert", key, delivery.group_wait_s, alert.severity)
            return
        live = [d for d in routing.route(alert, self.ruleset) if not routing.is_muted(d, at, self.ruleset)]
        self.open[alert.fingerprint] = _Open(alert, live, {d.channel: at for d in live}, {d.channel for d in live})
        for delivery in live:
            self.message(at, delivery.channel, "alert", delivery.group_key, delivery.group_wait_s, alert.severity)
            if delivery.escalate_after_s is not None and delivery.escalation_channels:
                due = at + timedelta(seconds=delivery.escalate_after_s)
                heapq.heappush(self.escalations, (due, len(self.escalations), alert.fingerprint))

    def resolve(self, resolve: Alert, at: datetime) -> None:
        for fp, record in list(self.open.items()):
            alert = record.alert
            if (alert.dag_id, alert.task_id, alert.rule) != (resolve.dag_id, resolve.task_id, resolve.rule):
                continue
            del self.open[fp]
            group = {d.channel: d for d in record.deliveries}
            for channel in sorted(record.notified):
                delivery = group.get(channel) or (record.deliveries[0] if record.deliveries else None)
                key = delivery.group_key if delivery is not None else channel
                wait_s = delivery.group_wait_s if delivery is not None else 0.0
                self.message(at, channel, "resolve", key, wait_s, alert.severity)

    def correlate(self, alert: Alert, at: datetime) -> None:
        correlation = incidents.correlation_of(alert.kind.value, alert.exception_type, alert.exception_message,
                                               alert.labels, alert.data)
        if correlation is None:
            return
        for cluster in self.clusters:
            same = cluster["signature"] == correlation.signature_hash or (
                correlation.dependency is not None and cluster["dependency"] == correlation.dependency)
            if same and at - cluster["last"] <= self.window:
                cluster["last"] = at
                cluster["dags"].add(alert.dag_id)
                return
        self.clusters.append({"signature": correlation.signature_hash, "dependency": correlation.dependency,
                              "last": at, "dags": {alert.dag_id}})

    def finish(self) -> Tally:
        self.escalate_until(datetime.max.replace(tzinfo=timezone.utc))
        self.tally.incidents = sum(1 for cluster in self.clusters if len(cluster["dags"]) >= 2)
        return self.tally


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def read_history(store: Store, since: datetime) -> list[tuple[datetime, TaskEvent]]:
    """The stored terminal events since ``since``, oldest first (read only)."""
    e = events_table.c
    query = sa.select(e.ts, e.payload).where(e.ts >= since).order_by(e.ts, e.id)
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        rows = conn.execute(query).all()
    out = []
    for ts, payload in rows:
        try:
            out.append((_instant(ts), TaskEvent.from_dict(dict(payload or {}))))
        except (TypeError, ValueError):
            continue  # a row written by another tasklens version: skipped, not fatal
    return out


def replay(history: Iterable[tuple[datetime, TaskEvent]], ruleset: Ruleset, *, incident_window_s: float) -> Tally:
    """What ``ruleset`` would have sent over ``history`` (see the module docstring for the model)."""
    simulation = _Simulation(ruleset, incident_window_s)
    for at, event in history:
        simulation.event(event, at)
    return simulation.finish()


def format_report(current: Tally, candidate: Tally, *, events: int, since: datetime, current_name: str,
                  candidate_name: str) -> str:
    """The side-by-side report ``tasklens backtest`` prints."""
    width = 44
    lines = [f"tasklens backtest: {events} events since {since:%Y-%m-%d %H:%M} UTC",
             f"current = {current_name}; candidate = {candidate_name}", "",
             f"{'messages per day and channel':<{width}}{'current':>10}{'candidate':>11}"]
    for day, channel in sorted(set(current.messages) | set(candidate.messages)):
        lines.append(f"{day}  {channel:<{width - 12}}{current.messages[(day, channel)]:>10}"
                     f"{candidate.messages[(day, channel)]:>11}")
    lines.append(f"{'messages in all':<{width}}{current.total_messages:>10}{candidate.total_messages:>11}")
    lines.append(f"{'pages (critical)':<{width}}{sum(current.pages.values()):>10}{sum(candidate.pages.values()):>11}")
    lines.append(f"{'incidents':<{width}}{current.incidents:>10}{candidate.incidents:>11}")
    lines += ["", "ten noisiest fingerprints (occurrences)"]
    for label, tally in (("current", current), ("candidate", candidate)):
        lines.append(f"  {label}:")
        lines += [f"    {n:>6}  {title}" for title, n in tally.noisiest()] or ["    (none)"]
    return "\n".join(lines)


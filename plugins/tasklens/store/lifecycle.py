"""An alert's life in the store: recording occurrences (fold into the open alert or open one, once per attempt),
resolving, and the UI's acknowledge, resolve and mute.

Resolve semantics: an alert of kind ``RESOLVE`` closes every unresolved alert with the same fingerprint, or with the
same ``dag_id``, ``task_id`` and ``rule`` (a success cannot know the exception type a failure fingerprint includes),
and queues a resolve notice to each channel that got (or is about to get) the alert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tasklens.alerts import Alert, AlertKind, Delivery, Severity, Status
from tasklens.exceptions import StoreError
from tasklens.store.engine import StoreEngine
from tasklens.store.outbox import queue_delivery
from tasklens.store.rows import delivery_from_json, delivery_to_json, discriminator, fitted_alert, json_safe, parse_ts
from tasklens.store.schema import (
    EVENT_KEY_CHARS,
    FAILURE_EVENTS,
    LIVE_STATES,
    MAX_EXCEPTION_MESSAGE,
    MAX_SUMMARY,
    MAX_TITLE,
    OCCURRED_AT_CHARS,
    TERMINAL_EVENTS,
    alerts_table,
    deliveries_table,
    events_table,
    occurrences_table,
)
from tasklens.text import bounded as _bounded
from tasklens.text import fit_key, safe_text

__all__ = ["AlertLifecycle", "RecordResult"]

_FAILURE_ALERT_KINDS = frozenset({AlertKind.FAILURE, AlertKind.RETRY, AlertKind.KILLED})


@dataclasses.dataclass
class RecordResult:
    """What :meth:`Store.record` did: ids of touched alerts and how each occurrence was counted."""

    alert_ids: list[int] = dataclasses.field(default_factory=list)
    new_alerts: int = 0
    folded: int = 0  # same fingerprint while open: occurrences + 1
    duplicates: int = 0  # the same attempt reported again (listener + callback + reconciler): ignored
    first_report: bool = True  # False: this attempt's failure was already stored (by another reporter)
    resolved: int = 0
    queued_delivery_ids: list[int] = dataclasses.field(default_factory=list)


# Built once: constructing SQLAlchemy statements costs more than running them on the success path.
_OPEN_FOR_RESOLVES = (
    sa.select(alerts_table.c.id)
    .where(
        sa.or_(
            alerts_table.c.open_key.in_(sa.bindparam("fingerprints", expanding=True)),
            sa.and_(
                alerts_table.c.dag_id == sa.bindparam("dag_id"),
                alerts_table.c.task_id.is_not_distinct_from(sa.bindparam("task_id")),
                alerts_table.c.rule.in_(sa.bindparam("rules", expanding=True)),
                alerts_table.c.open_key.is_not(None),
            ),
        )
    )
    .limit(1)
)


class AlertLifecycle(StoreEngine):
    """Recording and closing alerts on :class:`~tasklens.store.Store` (the pipeline and the UI call these)."""

    def record(
        self,
        items: Iterable[tuple[Alert, Sequence[Delivery]]] | Iterable[tuple[Alert, Sequence[Delivery], bool]],
        *,
        event: Mapping[str, Any] | None = None,
    ) -> RecordResult:
        """Persist alert occurrences with their routed deliveries (and the terminal event) in one transaction.

        Each item is ``(alert, deliveries)`` or ``(alert, deliveries, muted)``. Returns what happened; raises
        :class:`StoreError` when the store cannot be written.
        """
        self.ensure_schema()
        now = self.clock()
        result = RecordResult()
        try:
            batch: list[Any] = [(fitted_alert(item[0]), *item[1:]) for item in items]
            with self._write() as conn:
                first_report = True
                if event is not None:
                    first_report = result.first_report = self._insert_event(conn, event, now)
                # A success proposes several resolves and usually nothing is open: one SELECT answers for all.
                resolves = [item[0] for item in batch if item[0].kind == AlertKind.RESOLVE]
                anything_to_resolve = bool(resolves) and self._any_open(conn, resolves)
                for item in batch:
                    alert, deliveries = item[0], item[1]
                    muted = bool(item[2]) if len(item) > 2 else False
                    if not first_report and alert.kind in _FAILURE_ALERT_KINDS:
                        # This attempt's failure was already reported (listener, scheduler, callback, reconciler).
                        result.duplicates += 1
                        continue
                    if alert.kind == AlertKind.RESOLVE:
                        if anything_to_resolve:
                            self._resolve(conn, alert, now, result, by=str(alert.data.get("resolved_by") or "tasklens"))
                    else:
                        self._record_occurrence(conn, alert, tuple(deliveries), muted, now, result)
                        anything_to_resolve = bool(resolves)  # it may have opened what a later resolve closes
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not write to the tasklens store: {exc}") from exc
        return result

    def _insert_event(self, conn: Connection, event: Mapping[str, Any], now: datetime) -> bool:
        """Store a terminal event; False when a failure of the same attempt was already stored."""
        if event.get("event") not in TERMINAL_EVENTS:
            return True
        duration = event.get("duration_s")
        is_failure = event.get("event") in FAILURE_EVENTS
        inserted = self._insert(
            conn,
            events_table,
            {
                **{name: fit_key(event[name], limit) for name, limit in EVENT_KEY_CHARS.items()},
                "map_index": int(event.get("map_index", -1)),
                "try_number": int(event.get("try_number") or 1),
                "event": str(event["event"]),
                "ts": parse_ts(event.get("ts")) or now,
                "duration_s": float(duration) if isinstance(duration, (int, float)) else None,
                "payload": json_safe(dict(event)),
                "outcome": "failure" if is_failure else None,
            },
        )
        return bool(inserted) or not is_failure

    def _open_alert(self, conn: Connection, fingerprint: str) -> Any:
        query = sa.select(alerts_table).where(alerts_table.c.open_key == fingerprint)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).mappings().first()

    def _record_occurrence(
        self,
        conn: Connection,
        alert: Alert,
        deliveries: tuple[Delivery, ...],
        muted: bool,
        now: datetime,
        result: RecordResult,
    ) -> None:
        for attempt in range(3):
            try:
                with conn.begin_nested() as savepoint:
                    outcome = self._fold_or_open(conn, alert, deliveries, muted, now, result)
                    if outcome is None:  # the same attempt was already recorded
                        savepoint.rollback()
                        result.duplicates += 1
                    return
            except sa.exc.IntegrityError:
                # Another process opened the same fingerprint between our SELECT and INSERT (PostgreSQL): fold.
                if attempt == 2:
                    raise

    def _fold_or_open(
        self,
        conn: Connection,
        alert: Alert,
        deliveries: tuple[Delivery, ...],
        muted: bool,
        now: datetime,
        result: RecordResult,
    ) -> int | None:
        existing = self._open_alert(conn, alert.fingerprint)
        common = {
            "title": _bounded(alert.title, MAX_TITLE) or "",
            "summary": _bounded(alert.summary, MAX_SUMMARY) or "",
            "run_id": alert.run_id,
            "map_index": alert.map_index,
            "try_number": alert.try_number,
            "max_tries": alert.max_tries,
            "exception_type": _bounded(alert.exception_type, 250),
            "exception_message": _bounded(alert.exception_message, MAX_EXCEPTION_MESSAGE),
            "log_url": None if alert.log_url is None else safe_text(alert.log_url),
            "template": alert.template,
            "labels": json_safe(dict(alert.labels)),
            "data": json_safe(dict(alert.data)),
            "last_seen": now,
        }
        queue: tuple[Delivery, ...] = ()
        joined: tuple[Delivery, ...] = ()
        if existing is None:
            routes = [delivery_to_json(d) for d in deliveries]
            escalations = [
                d.escalate_after_s for d in deliveries if d.escalate_after_s is not None and d.escalation_channels
            ]
            alert_id = conn.execute(
                alerts_table.insert().values(
                    fingerprint=alert.fingerprint,
                    open_key=alert.fingerprint,
                    rule=alert.rule,
                    kind=alert.kind.value,
                    severity=alert.severity.value,
                    status=Status.MUTED.value if muted else Status.OPEN.value,
                    dag_id=alert.dag_id,
                    task_id=alert.task_id,
                    first_seen=now,
                    occurrences=1,
                    routes=routes,
                    undelivered=False,
                    last_notified_at=None if muted else now,
                    escalate_at=now + timedelta(seconds=min(escalations)) if escalations else None,
                    **common,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            if not muted:
                queue = deliveries
        else:
            alert_id = existing["id"]
            severity = max(Severity(existing["severity"]), alert.severity, key=lambda s: s.rank)
            updates: dict[str, Any] = {
                **common,
                "severity": severity.value,
                "occurrences": existing["occurrences"] + 1,
            }
            joined = _join_routes(existing, deliveries, now, updates)
            status = existing["status"]
            muted_until = existing["muted_until"]
            if status == Status.MUTED.value and not muted and (muted_until is None or muted_until <= now):
                status = Status.OPEN.value  # a silence ended (or a timed mute expired): notify again
                updates.update(status=status, muted_until=None)
                queue = deliveries or tuple(delivery_from_json(r) for r in existing["routes"] or ())
            elif status == Status.OPEN.value:
                known = deliveries or tuple(delivery_from_json(r) for r in existing["routes"] or ())
                last = existing["last_notified_at"]
                # An update that changed what the alert says (a deadline forecast that moved a lot) goes out now,
                # and so does the first message of a route the alert has just joined.
                update = alert.data.get("notify_update") is True
                queue = tuple(
                    d for d in known
                    if update or d in joined or last is None or (now - last).total_seconds() >= d.repeat_interval_s
                )
            if queue:
                updates["last_notified_at"] = now
            conn.execute(alerts_table.update().where(alerts_table.c.id == alert_id).values(**updates))

        inserted = self._insert(
            conn,
            occurrences_table,
            {
                "alert_id": alert_id,
                "rule": alert.rule,
                "kind": alert.kind.value,
                "severity": alert.severity.value,
                "dag_id": alert.dag_id,
                "task_id": alert.task_id,
                "run_id": alert.run_id,
                "map_index": alert.map_index,
                "try_number": alert.try_number,
                "occurred_at": _bounded(alert.occurred_at, OCCURRED_AT_CHARS, marker=""),
                "recorded_at": now,
                "exception_type": _bounded(alert.exception_type, 250),
                "exception_message": _bounded(alert.exception_message, MAX_EXCEPTION_MESSAGE),
                "discriminator": discriminator(alert),
            },
        )
        if not inserted:
            return None
        if existing is None:
            result.new_alerts += 1
        else:
            result.folded += 1
        result.alert_ids.append(alert_id)
        first = existing is None or existing["status"] == Status.MUTED.value
        for delivery in queue:
            kind = "alert" if first or delivery in joined else "repeat"  # a route's first message is an alert
            result.queued_delivery_ids.append(queue_delivery(conn, alert_id, kind, delivery, now))
        return int(alert_id)

    @staticmethod
    def _resolve_match(alert: Alert) -> Any:
        """The open alerts a RESOLVE closes: its fingerprint, or the same rule on the same task (of the same run
        when its ``data["resolve_scope"]`` is ``"run"``: a run's deadline alerts); in both cases only alerts last
        seen before it happened (a success read later must not close a newer failure's alert)."""
        same_rule = [
            alerts_table.c.dag_id == alert.dag_id,
            alerts_table.c.task_id.is_not_distinct_from(alert.task_id),
            alerts_table.c.rule == alert.rule,
            alerts_table.c.open_key.is_not(None),
        ]
        if alert.data.get("resolve_scope") == "run":
            same_rule.append(alerts_table.c.run_id.is_not_distinct_from(alert.run_id))
        match = sa.or_(alerts_table.c.open_key == alert.fingerprint, sa.and_(*same_rule))
        happened = parse_ts(alert.occurred_at)
        return match if happened is None else sa.and_(match, alerts_table.c.last_seen <= happened)

    def _any_open(self, conn: Connection, resolves: Sequence[Alert]) -> bool:
        """Whether any of ``resolves`` would close something (the union of their :meth:`_resolve_match`)."""
        by_task: dict[tuple[str, str | None], list[Alert]] = {}
        for alert in resolves:
            by_task.setdefault((alert.dag_id, alert.task_id), []).append(alert)
        for (dag_id, task_id), alerts in by_task.items():
            params = {
                "fingerprints": [a.fingerprint for a in alerts],
                "dag_id": dag_id,
                "task_id": task_id,
                "rules": [a.rule for a in alerts],
            }
            if conn.execute(_OPEN_FOR_RESOLVES, params).first() is not None:
                return True
        return False

    def _resolve(self, conn: Connection, alert: Alert, now: datetime, result: RecordResult, *, by: str) -> None:
        query = sa.select(alerts_table.c.id, alerts_table.c.routes, alerts_table.c.data).where(
            self._resolve_match(alert))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        outcome = alert.data.get("outcome")
        for row in conn.execute(query).mappings().all():
            if isinstance(outcome, Mapping):  # how it ended (foresight's checks), for the resolve notice's template
                conn.execute(alerts_table.update().where(alerts_table.c.id == row["id"])
                             .values(data=json_safe({**(row["data"] or {}), "outcome": dict(outcome)})))
            self._close(conn, row["id"], row["routes"], now, by, result)

    def _close(
        self, conn: Connection, alert_id: int, routes: Any, now: datetime, by: str, result: RecordResult,
        channel_types: Callable[[str], bool] | None = None,
    ) -> None:
        conn.execute(
            alerts_table.update()
            .where(alerts_table.c.id == alert_id)
            .values(status=Status.RESOLVED.value, open_key=None, resolved_at=now, resolved_by=_bounded(by, 250),
                    last_seen=now)
        )
        result.resolved += 1
        result.alert_ids.append(alert_id)
        for delivery, due in self._notified_channels(conn, alert_id, routes, channel_types=channel_types):
            result.queued_delivery_ids.append(queue_delivery(conn, alert_id, "resolve", delivery, now, not_before=due))

    def _notified_channels(
        self, conn: Connection, alert_id: int, routes: Any, *, channel_types: Callable[[str], bool] | None = None
    ) -> list[tuple[Delivery, datetime]]:
        """One delivery per channel that got (or is about to get) the alert, with when its last message is due: a
        follow-up (resolve notice, acknowledgement) goes after the alert itself. ``channel_types`` filters by type."""
        by_channel = {r.get("channel"): delivery_from_json(r) for r in routes or ()}
        d = deliveries_table.c
        rows = conn.execute(
            sa.select(d.channel, d.channel_type, d.route, d.group_key, sa.func.max(d.next_attempt_at).label("due"))
            .where(d.alert_id == alert_id, d.kind.not_in(("resolve", "ack")), d.state.in_(LIVE_STATES))
            .group_by(d.channel, d.channel_type, d.route, d.group_key)
        ).mappings()
        found: dict[str, tuple[Delivery, datetime]] = {}
        for row in rows:
            if row["channel"] in found or (channel_types is not None and not channel_types(row["channel_type"])):
                continue
            route = by_channel.get(row["channel"])
            delivery = Delivery(
                route=row["route"],
                channel=row["channel"],
                channel_type=row["channel_type"],
                group_key=row["group_key"],
                group_wait_s=route.group_wait_s if route else 0.0,
                fallback_channels=route.fallback_channels if route else (),
            )
            found[row["channel"]] = (delivery, row["due"])
        return list(found.values())

    # -- the UI's actions (acknowledge, resolve, mute) ---------------------------------------------------------

    def acknowledge(self, alert_id: int, *, by: str, mirror_to: Callable[[str], bool] | None = None) -> bool:
        """Stop repeats and escalation of an open alert. Returns False when it is not open.

        Channels whose type ``mirror_to`` accepts (PagerDuty, Opsgenie) and that got the alert get an ``ack``
        delivery, so the incident tool shows it acknowledged too."""
        now = self.clock()
        with self._write() as conn:
            changed = bool(
                conn.execute(
                    alerts_table.update()
                    .where(alerts_table.c.id == alert_id, alerts_table.c.status == Status.OPEN.value)
                    .values(status=Status.ACKNOWLEDGED.value, acked_by=_bounded(by, 250), acked_at=now)
                ).rowcount
            )
            if changed and mirror_to is not None:
                routes = conn.execute(sa.select(alerts_table.c.routes).where(alerts_table.c.id == alert_id)).scalar()
                for delivery, due in self._notified_channels(conn, alert_id, routes, channel_types=mirror_to):
                    queue_delivery(conn, alert_id, "ack", delivery, now, not_before=due)
            return changed

    def resolve(self, alert_id: int, *, by: str, notify: Callable[[str], bool] | None = None) -> bool:
        """Close an alert by hand; channels that got it (of the types ``notify`` accepts) get a resolve notice."""
        now = self.clock()
        with self._write() as conn:
            row = conn.execute(
                sa.select(alerts_table.c.id, alerts_table.c.routes).where(
                    alerts_table.c.id == alert_id, alerts_table.c.open_key.is_not(None)
                )
            ).mappings().first()
            if row is None:
                return False
            self._close(conn, row["id"], row["routes"], now, by, RecordResult(), channel_types=notify)
            return True

    def mute(self, alert_id: int, *, until: datetime, by: str) -> bool:
        """Silence an unresolved alert until ``until`` (its occurrences are still counted); records who and when
        in ``acked_by``/``acked_at``."""
        now = self.clock()
        with self._write() as conn:
            return bool(
                conn.execute(
                    alerts_table.update()
                    .where(alerts_table.c.id == alert_id, alerts_table.c.open_key.is_not(None))
                    .values(status=Status.MUTED.value, muted_until=until, acked_by=by, acked_at=now)
                ).rowcount
            )


def _join_routes(existing: Mapping[str, Any], deliveries: tuple[Delivery, ...], now: datetime,
                 updates: dict[str, Any]) -> tuple[Delivery, ...]:
    """The deliveries of routes (and channels) an open alert matches for the first time, added to its routes in
    ``updates``: its severity rose (a deadline forecast that became a likely miss turns critical). Their escalation
    counts from now, not from the alert's first sighting."""
    stored = existing["routes"] or []
    known = {(route.get("route"), route.get("channel")) for route in stored}
    joined = tuple(d for d in deliveries if (d.route, d.channel) not in known)
    if not joined:
        return ()
    updates["routes"] = [*stored, *({**delivery_to_json(d), "since": now.isoformat()} for d in joined)]
    escalations = [now + timedelta(seconds=d.escalate_after_s) for d in joined
                   if d.escalate_after_s is not None and d.escalation_channels]
    if escalations:
        pending = parse_ts(existing["escalate_at"]) if existing["escalated_at"] is None else None
        updates["escalate_at"] = min(escalations + ([pending] if pending is not None else []))
        updates["escalated_at"] = None
    return joined

"""Reads of the store: alert snapshots for messages, the UI's and CLI's lists, what the reconciler and the duration
rule need, and the outbox's health figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Severity, Status
from tasklens.exceptions import StoreError
from tasklens.store.engine import StoreEngine
from tasklens.store.rows import parse_ts
from tasklens.store.schema import (
    DELIVERY_STATES,
    alerts_table,
    deliveries_table,
    events_table,
    meta_table,
    occurrences_table,
)

__all__ = ["Reads"]


class Reads(StoreEngine):
    """The read-only queries of :class:`~tasklens.store.Store`."""

    def recent_durations(self, dag_id: str, task_id: str, *, limit: int = 50) -> tuple[float, ...]:
        """Durations (s) of the last ``limit`` successful attempts of a task, newest first."""
        try:
            return self._recent_durations(dag_id, task_id, limit)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not read durations from the tasklens store: {exc}") from exc

    def _recent_durations(self, dag_id: str, task_id: str, limit: int) -> tuple[float, ...]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(events_table.c.duration_s)
                .where(
                    events_table.c.dag_id == dag_id,
                    events_table.c.task_id == task_id,
                    events_table.c.event == "success",
                    events_table.c.duration_s.is_not(None),
                )
                .order_by(events_table.c.id.desc())
                .limit(limit)
            ).scalars()
            return tuple(float(v) for v in rows)

    def snapshots(self, alert_ids: Iterable[int], *, base_url: str | None = None) -> dict[int, AlertSnapshot]:
        """The stored state of alerts, as messages show them."""
        ids = sorted(set(alert_ids))
        if not ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(sa.select(alerts_table).where(alerts_table.c.id.in_(ids))).mappings().all()
        return {row["id"]: self._snapshot(row, base_url) for row in rows}

    @staticmethod
    def _snapshot(row: Mapping[str, Any], base_url: str | None) -> AlertSnapshot:
        alert = Alert(
            fingerprint=row["fingerprint"],
            rule=row["rule"],
            kind=AlertKind(row["kind"]),
            severity=Severity(row["severity"]),
            title=row["title"],
            summary=row["summary"] or "",
            dag_id=row["dag_id"],
            task_id=row["task_id"],
            run_id=row["run_id"],
            map_index=row["map_index"],
            try_number=row["try_number"],
            max_tries=row["max_tries"],
            exception_type=row["exception_type"],
            exception_message=row["exception_message"],
            log_url=row["log_url"],
            template=row["template"],
            labels=dict(row["labels"] or {}),
            data=dict(row["data"] or {}),
            occurred_at=row["last_seen"].isoformat(),
        )
        return AlertSnapshot(
            id=row["id"],
            alert=alert,
            status=Status(row["status"]),
            occurrences=row["occurrences"],
            first_seen=row["first_seen"].isoformat(),
            last_seen=row["last_seen"].isoformat(),
            alert_url=f"{base_url.rstrip('/')}/tasklens/alerts/{row['id']}" if base_url else None,
        )

    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        """One alert record as a dict (every column), or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(alerts_table).where(alerts_table.c.id == alert_id)).mappings().first()
        return dict(row) if row else None

    def list_alerts(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        dag_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Alerts newest first (``last_seen``), optionally filtered; served by the indexes above."""
        a = alerts_table.c
        query = sa.select(alerts_table).order_by(a.last_seen.desc(), a.id.desc()).limit(limit).offset(offset)
        if status:
            query = query.where(a.status == status)
        if severity:
            query = query.where(a.severity == severity)
        if dag_id:
            query = query.where(a.dag_id == dag_id)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def deliveries(self, alert_id: int | None = None) -> list[dict[str, Any]]:
        """Outbox rows (of one alert, or all), oldest first."""
        query = sa.select(deliveries_table).order_by(deliveries_table.c.id)
        if alert_id is not None:
            query = query.where(deliveries_table.c.alert_id == alert_id)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def occurrence_count(self, alert_id: int | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(occurrences_table)
        if alert_id is not None:
            query = query.where(occurrences_table.c.alert_id == alert_id)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def events_for(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Stored terminal events of one task instance (every try), oldest first."""
        e = events_table.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(events_table)
                .where(e.dag_id == dag_id, e.run_id == run_id, e.task_id == task_id, e.map_index == map_index)
                .order_by(e.id)
            ).mappings()
            return [dict(r) for r in rows]

    def reported_failure_attempts(self, since: datetime) -> set[tuple[str, str, str, int, int]]:
        """Attempts whose failure (failed / up_for_retry / killed) is stored, for those reported since ``since``."""
        e = events_table.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(e.dag_id, e.task_id, e.run_id, e.map_index, e.try_number).where(
                    e.outcome == "failure", e.ts >= since
                )
            )
            return {(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows}

    def unresolved_tasks(self) -> set[tuple[str, str]]:
        """(dag_id, task_id) of every task with an unresolved alert: the successes worth reading from Airflow."""
        a = alerts_table.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(a.dag_id, a.task_id).where(a.open_key.is_not(None), a.task_id.is_not(None)).distinct()
            )
            return {(str(dag_id), str(task_id)) for dag_id, task_id in rows}

    def open_alerts_of(self, rules: Sequence[str]) -> list[dict[str, Any]]:
        """Unresolved alerts of ``rules``: the identity columns of each (the api-server's in-flight checks)."""
        a = alerts_table.c
        if not rules:
            return []
        with self._read() as conn:
            rows = conn.execute(
                sa.select(a.rule, a.dag_id, a.task_id, a.run_id, a.map_index, a.try_number, a.data).where(
                    a.open_key.is_not(None), a.rule.in_(list(rules))
                )
            ).mappings()
            return [dict(r) for r in rows]

    def watching_since(self) -> datetime | None:
        """When this store was created: the reconciler never reports failures from before it."""
        with self._read() as conn:
            value = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "watching_since")).scalar()
        return parse_ts(value)

    def outbox_stats(self) -> dict[str, Any]:
        """Outbox size by state and the last delivery error per channel (no alert content): for health checks."""
        d = deliveries_table.c
        with self._read() as conn:
            counts = dict(conn.execute(sa.select(d.state, sa.func.count()).group_by(d.state)).tuples().all())
            latest = (
                sa.select(d.channel, sa.func.max(d.last_attempt_at).label("at"))
                .where(d.state.in_(("failed", "dead")), d.last_error.is_not(None))
                .group_by(d.channel)
                .subquery()
            )
            errors = conn.execute(
                sa.select(d.channel, d.last_error, d.last_attempt_at).join(
                    latest, sa.and_(d.channel == latest.c.channel, d.last_attempt_at == latest.c.at)
                )
            ).all()
        return {
            "pending": int(counts.get("pending", 0)) + int(counts.get("failed", 0)),
            "by_state": {state: int(counts.get(state, 0)) for state in DELIVERY_STATES},
            "last_error_by_channel": {
                channel: {"error": error, "at": at.isoformat() if at else None} for channel, error, at in errors
            },
        }

    def next_due(self) -> datetime | None:
        """When the earliest unsent delivery is due (the dispatcher sleeps until then)."""
        d = deliveries_table.c
        with self._read() as conn:
            return conn.execute(
                sa.select(sa.func.min(d.next_attempt_at)).where(d.state.in_(("pending", "failed")))
            ).scalar()

"""Read-only queries of the UI beyond :class:`tasklens.store.Store`'s methods.

Every query takes ``dag_ids``: the DAGs the user may read (from the auth manager). ``None`` means "no
restriction" (only for trusted callers such as benchmarks); an empty set matches nothing. The list query is
served by the store's ``(status|severity|dag_id, last_seen)`` and ``(last_seen)`` indexes; the failures series by
the events table's ``(ts)`` index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tasklens.store import Store, alerts_table, deliveries_table, events_table, occurrences_table

__all__ = [
    "ALERT_FIELDS",
    "FAILED_EVENTS",
    "AlertFilter",
    "AlertPage",
    "alert_detail",
    "failures_per_hour",
    "list_alerts",
    "summary",
    "task_instance_view",
]

#: Terminal events counted as a failed attempt in the failures-per-hour series.
FAILED_EVENTS = ("failed", "up_for_retry", "killed")
#: The alert columns the UI shows (``routes`` and ``data`` are internal or potentially large: detail only).
ALERT_FIELDS = (
    "id", "fingerprint", "rule", "kind", "severity", "status", "title", "summary", "dag_id", "task_id", "run_id",
    "map_index", "try_number", "max_tries", "first_seen", "last_seen", "occurrences", "exception_type",
    "exception_message", "labels", "acked_by", "acked_at", "resolved_by", "resolved_at", "muted_until",
    "undelivered", "last_error",
)
UNRESOLVED = ("open", "acknowledged", "muted")
#: Counting stops here: "10,000+ alerts" is as useful as the exact number and keeps big stores fast.
COUNT_CAP = 10_000
_a = alerts_table.c


@dataclasses.dataclass(frozen=True)
class AlertFilter:
    """Filters of the alert list; every field is optional and they combine with AND."""

    status: Sequence[str] = ()
    severity: Sequence[str] = ()
    dag_id: str | None = None
    task_id: str | None = None
    since: datetime | None = None  # last_seen >= since
    until: datetime | None = None  # last_seen < until
    text: str | None = None  # case-insensitive substring of title, exception, dag_id, task_id or rule

    def conditions(self) -> list[Any]:
        where: list[Any] = []
        if self.status:
            where.append(_a.status.in_(list(self.status)))
        if self.severity:
            where.append(_a.severity.in_(list(self.severity)))
        if self.dag_id:
            where.append(_a.dag_id == self.dag_id)
        if self.task_id:
            where.append(_a.task_id == self.task_id)
        if self.since is not None:
            where.append(_a.last_seen >= self.since)
        if self.until is not None:
            where.append(_a.last_seen < self.until)
        text = (self.text or "").strip()
        if text:
            where.append(
                sa.or_(
                    *(
                        column.icontains(text, autoescape=True)
                        for column in (_a.title, _a.exception_message, _a.exception_type, _a.dag_id, _a.task_id,
                                       _a.rule)
                    )
                )
            )
        return where


def _read(store: Store) -> Any:
    """A read transaction with one snapshot for all its statements (SQLite WAL readers have one anyway)."""
    engine = store.engine.execution_options(tasklens_read_only=True)
    if store.dialect == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    return engine.begin()


def _distinct_dag_ids(conn: Any, column: Any) -> set[str]:
    """The DAG ids present in ``column``'s table, by a loose index scan (one index probe per DAG, not per row)."""
    seed = sa.select(sa.func.min(column).label("dag_id")).scalar_subquery()
    cte = sa.select(seed.label("dag_id")).cte("present", recursive=True)
    following = (
        sa.select(sa.select(sa.func.min(column)).where(column > cte.c.dag_id).scalar_subquery())
        .where(cte.c.dag_id.is_not(None))
    )
    cte = cte.union_all(following)
    return {row for row in conn.execute(sa.select(cte.c.dag_id)).scalars() if row is not None}


def _dag_condition(conn: Any, column: Any, dag_ids: Collection[str] | None) -> Any:
    """The per-DAG permission filter in its cheapest exact form, or None when it filters nothing.

    Evaluated against the DAG ids present in the table *in this transaction's snapshot*: "every DAG here is
    readable" drops the filter (an admin's list uses the plain ``last_seen`` index), and a short "not these" list
    replaces a long "only these" one (``IN`` over hundreds of ids makes SQLite sort every matching row).
    """
    if dag_ids is None:
        return None
    present = _distinct_dag_ids(conn, column)
    visible = present & set(dag_ids)
    hidden = present - visible
    if not visible:
        return sa.false()
    if not hidden:
        return None
    if len(hidden) <= len(visible):
        return column.not_in(sorted(hidden))
    return column.in_(sorted(visible))


@dataclasses.dataclass(frozen=True)
class AlertPage:
    """One page of the alert list; ``total`` stops counting at ``COUNT_CAP`` (then ``total_capped``)."""

    alerts: list[dict[str, Any]]
    total: int
    total_capped: bool
    limit: int
    offset: int


def _row(row: Mapping[str, Any] | Any) -> dict[str, Any]:
    return {name: row[name] for name in ALERT_FIELDS if name in row}


def list_alerts(
    store: Store, filters: AlertFilter, *, dag_ids: Collection[str] | None, limit: int = 50, offset: int = 0
) -> AlertPage:
    """Alerts matching ``filters`` among ``dag_ids``, newest ``last_seen`` first, with a (capped) total."""
    if dag_ids is not None and not dag_ids:
        return AlertPage([], 0, False, limit, offset)
    columns = [alerts_table.c[name] for name in ALERT_FIELDS]
    with _read(store) as conn:
        where = filters.conditions()
        permitted = _dag_condition(conn, _a.dag_id, dag_ids)
        if permitted is not None:
            where.append(permitted)
        query = (
            sa.select(*columns).where(*where).order_by(_a.last_seen.desc(), _a.id.desc()).limit(limit).offset(offset)
        )
        capped = sa.select(sa.literal(1)).select_from(alerts_table).where(*where).limit(COUNT_CAP + 1).subquery()
        rows = [_row(r) for r in conn.execute(query).mappings()]
        total = int(conn.execute(sa.select(sa.func.count()).select_from(capped)).scalar() or 0)
    return AlertPage(rows, min(total, COUNT_CAP), total > COUNT_CAP, limit, offset)


_HOUR_KEY = "%Y-%m-%d %H"


def _hour_bucket(store: Store, column: Any) -> Any:
    """SQL for an hour key like ``2026-01-01 10`` (``_HOUR_KEY``), or None to bucket in Python."""
    if store.dialect == "sqlite":
        # Datetimes are stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC): the prefix is the hour, twice as fast as strftime.
        return sa.func.substr(column, 1, 13)
    if store.dialect == "postgresql":
        return sa.func.to_char(sa.func.date_trunc("hour", column), "YYYY-MM-DD HH24")
    return None


def _hour_floor(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def failures_per_hour(
    store: Store, *, dag_ids: Collection[str] | None, hours: int = 168, now: datetime | None = None,
    dag_id: str | None = None,
) -> list[dict[str, Any]]:
    """Failed attempts (events ``failed``, ``up_for_retry``, ``killed``) per UTC hour over the last ``hours``
    hours, oldest first, zero-filled: ``[{"hour": "2026-01-01T10:00:00+00:00", "failures": 3}, ...]``."""
    end = _hour_floor(now or store.clock())
    start = end - timedelta(hours=hours - 1)
    counts: dict[str, int] = {}
    if dag_ids is None or dag_ids:
        e = events_table.c
        # One failed outcome per attempt whoever reported it (store migration 0002); older stores: the events.
        failed = e.outcome == "failure" if "outcome" in e else e.event.in_(FAILED_EVENTS)
        where = [failed, e.ts >= start]
        if dag_id:
            where.append(e.dag_id == dag_id)
        bucket = _hour_bucket(store, e.ts)
        with _read(store) as conn:
            permitted = _dag_condition(conn, e.dag_id, dag_ids)
            if permitted is not None:
                where.append(permitted)
            if bucket is not None:
                for hour, count in conn.execute(sa.select(bucket, sa.func.count()).where(*where).group_by(bucket)):
                    counts[str(hour)] = int(count)
            else:  # pragma: no cover - other backends: bucket in Python
                for (ts,) in conn.execute(sa.select(e.ts).where(*where)):
                    key = _hour_floor(ts).strftime(_HOUR_KEY)
                    counts[key] = counts.get(key, 0) + 1
    series = []
    for step in range(hours):
        hour = start + timedelta(hours=step)
        series.append({"hour": hour.isoformat(), "failures": counts.get(hour.strftime(_HOUR_KEY), 0)})
    return series


def summary(
    store: Store, *, dag_ids: Collection[str] | None, hours: int = 168, now: datetime | None = None,
    top_dags: int = 20,
) -> dict[str, Any]:
    """Counts by status, severity (all and unresolved) and DAG (top ``top_dags`` by unresolved alerts), and the
    failures-per-hour series."""
    result: dict[str, Any] = {
        "by_status": {}, "by_severity": {}, "unresolved_by_severity": {}, "by_dag": [], "total": 0,
    }
    if dag_ids is None or dag_ids:
        # Three narrow GROUP BYs answered from indexes alone — (status, severity, dag_id) and (dag_id, last_seen) —
        # even under the per-DAG filter, rather than scans of the table.
        with _read(store) as conn:
            permitted = _dag_condition(conn, _a.dag_id, dag_ids)
            where = [] if permitted is None else [permitted]

            def grouped(*columns: Any, extra: Sequence[Any] = ()) -> list[Any]:
                query = sa.select(*columns, sa.func.count()).where(*where, *extra).group_by(*columns)
                return list(conn.execute(query).all())

            by_status_severity = grouped(_a.status, _a.severity)
            by_dag = grouped(_a.dag_id)
            open_by_dag = {dag: int(n) for dag, n in grouped(_a.dag_id, extra=[_a.status.in_(UNRESOLVED)])}
        for status, severity, n in by_status_severity:
            result["by_status"][status] = result["by_status"].get(status, 0) + int(n)
            result["by_severity"][severity] = result["by_severity"].get(severity, 0) + int(n)
            if status in UNRESOLVED:
                result["unresolved_by_severity"][severity] = result["unresolved_by_severity"].get(severity, 0) + int(n)
        result["total"] = sum(result["by_status"].values())
        ranked = sorted(by_dag, key=lambda row: (-open_by_dag.get(row[0], 0), -int(row[1]), row[0]))
        result["by_dag"] = [
            {"dag_id": dag, "alerts": int(n), "unresolved": open_by_dag.get(dag, 0)} for dag, n in ranked[:top_dags]
        ]
    result["failures_per_hour"] = failures_per_hour(store, dag_ids=dag_ids, hours=hours, now=now)
    return result


def occurrences(store: Store, alert_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` occurrences of an alert, newest first."""
    o = occurrences_table.c
    query = sa.select(occurrences_table).where(o.alert_id == alert_id).order_by(o.id.desc()).limit(limit)
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


_DELIVERY_FIELDS = (
    "id", "kind", "route", "channel", "channel_type", "state", "attempts", "created_at", "next_attempt_at",
    "last_attempt_at", "last_error", "sent_at",
)


def _deliveries(store: Store, alert_ids: Sequence[int]) -> list[dict[str, Any]]:
    if not alert_ids:
        return []
    d = deliveries_table.c
    query = (
        sa.select(d.alert_id, *(d[name] for name in _DELIVERY_FIELDS))
        .where(d.alert_id.in_(list(alert_ids)))
        .order_by(d.id)
    )
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def alert_detail(store: Store, alert_id: int) -> dict[str, Any] | None:
    """An alert with its occurrences and delivery attempts, or None."""
    row = store.get_alert(alert_id)
    if row is None:
        return None
    alert = _row(row)
    alert["data"] = row.get("data") or {}
    alert["routes"] = [
        {k: r.get(k) for k in ("route", "channel", "channel_type")} for r in (row.get("routes") or ())
    ]
    alert["occurrence_list"] = occurrences(store, alert_id)
    alert["deliveries"] = _deliveries(store, [alert_id])
    return alert


def task_instance_view(store: Store, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """What tasklens knows about one task instance: its stored events (every try), the alerts its attempts
    raised (through their occurrences) and those alerts' deliveries."""
    events = store.events_for(dag_id, run_id, task_id, map_index)
    o = occurrences_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        occurrence_rows = [
            dict(r)
            for r in conn.execute(
                sa.select(o.alert_id, o.try_number, o.rule, o.kind, o.severity, o.recorded_at, o.exception_type,
                          o.exception_message)
                .where(o.dag_id == dag_id, o.task_id == task_id, o.run_id == run_id, o.map_index == map_index)
                .order_by(o.id)
            ).mappings()
        ]
        alert_ids = sorted({r["alert_id"] for r in occurrence_rows})
        alerts = (
            [_row(r) for r in conn.execute(
                sa.select(*(alerts_table.c[n] for n in ALERT_FIELDS)).where(_a.id.in_(alert_ids)).order_by(_a.id)
            ).mappings()]
            if alert_ids else []
        )
    return {
        "events": events,
        "occurrences": occurrence_rows,
        "alerts": alerts,
        "deliveries": _deliveries(store, alert_ids),
    }

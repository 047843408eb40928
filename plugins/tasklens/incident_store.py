"""The store's incident tables (migration 0006) and the reads and writes on them.

Correlation runs in the dispatcher (the api-server), never on a task's path: before it groups what it claimed, the
dispatcher hands the failure alerts to :func:`correlate`, which puts each one in an open incident of the same
signature or dependency seen within the window, or opens a new one. Correlators serialise on one row of
``tasklens_leases`` (PostgreSQL) or the database's write lock (SQLite), so two dispatchers never open two incidents
for one cause.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tasklens.alerts import PostedMessage, Status
from tasklens.incidents import Correlation, correlation_of, headline, title_of, unreachable_parts
from tasklens.store import Store, alerts_table, leases_table, metadata
from tasklens.store.engine import _insert_or_skip
from tasklens.store.schema import UTCDateTime

__all__ = [
    "Incident",
    "acknowledge",
    "correlate",
    "get_incident",
    "incident_members_table",
    "incidents_of",
    "incidents_table",
    "list_incidents",
    "mark_resolved",
    "member_alert_ids",
    "note_sent",
    "open_member_count",
    "resolve",
]

incidents_table = sa.Table(
    "tasklens_incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("signature_hash", sa.String(32), nullable=False),
    sa.Column("signature", sa.String(400), nullable=False),
    sa.Column("dependency", sa.String(260), nullable=True),
    sa.Column("failure_class", sa.String(16), nullable=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("members", sa.Integer, nullable=False),
    sa.Column("dags", sa.Integer, nullable=False),
    sa.Column("acked_by", sa.String(250), nullable=True),
    sa.Column("acked_at", UTCDateTime, nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    # {channel: {"ts": Slack message ts or None, "channel": Slack channel id or None, "members": members when last
    #  sent, "at": ISO time}}
    sa.Column("messages", sa.JSON, nullable=False, default=dict),
    sa.Index(None, "status", "last_seen"),
    sa.Index(None, "signature_hash", "last_seen"),
    sa.Index(None, "dependency", "last_seen"),
    sa.Index(None, "last_seen"),
)

incident_members_table = sa.Table(
    "tasklens_incident_members",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("tasklens_incidents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False,
              unique=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("joined_at", UTCDateTime, nullable=False),
    sa.Index(None, "incident_id", "id"),
    sa.Index(None, "dag_id", "incident_id"),
)

_LOCK_NAME = "incident-correlation"
_UNRESOLVED = (Status.OPEN.value, Status.ACKNOWLEDGED.value, Status.MUTED.value)


@dataclasses.dataclass(frozen=True)
class Incident:
    """One incident: failures across DAGs that share a cause."""

    id: int
    title: str
    status: str
    signature: str
    dependency: str | None
    failure_class: str | None
    first_seen: datetime
    last_seen: datetime
    members: int
    dags: int
    acked_by: str | None = None
    acked_at: datetime | None = None
    resolved_at: datetime | None = None
    messages: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def headline(self) -> str:
        return headline(self.title, self.members, self.dags, self.first_seen, self.last_seen)

    def view(self, unlisted: int = 0, *, update: bool = False) -> dict[str, Any]:
        """What a message shows of the incident; ``unlisted`` members are counted, not listed ("and 3,912 more")."""
        host, cause = unreachable_parts(self.title, self.dependency, self.failure_class) or (None, None)
        return {
            "unreachable": host, "cause": cause, "acked_by": self.acked_by,
            "id": self.id, "title": self.title, "headline": self.headline, "members": self.members,
            "dags": self.dags, "first_seen": self.first_seen.strftime("%H:%M"),
            "last_seen": self.last_seen.strftime("%H:%M"), "more": max(0, unlisted),
            "is_update": update, "failure_class": self.failure_class, "dependency": self.dependency,
            "members_text": f"{self.members:,}", "dags_text": f"{self.dags:,}",
            "more_text": f"{max(0, unlisted):,}",
        }


def _incident(row: Any) -> Incident:
    return Incident(
        id=row["id"], title=row["title"], status=row["status"], signature=row["signature"],
        dependency=row["dependency"], failure_class=row["failure_class"], first_seen=row["first_seen"],
        last_seen=row["last_seen"], members=row["members"], dags=row["dags"], acked_by=row["acked_by"],
        acked_at=row["acked_at"], resolved_at=row["resolved_at"], messages=dict(row["messages"] or {}),
    )


def _serialise_correlators(conn: sa.Connection, dialect: str) -> None:
    """Take the correlation lock for this transaction (a row lock on PostgreSQL; SQLite's writes are serial)."""
    conn.execute(_insert_or_skip(dialect, leases_table), {"name": _LOCK_NAME, "holder": "-", "expires_at": 0.0})
    conn.execute(leases_table.update().where(leases_table.c.name == _LOCK_NAME)
                 .values(holder=leases_table.c.holder))


def correlate(store: Store, alert_ids: Iterable[int], *, window_s: float,
              now: datetime | None = None) -> dict[int, Incident]:
    """Put each failure alert of ``alert_ids`` in its incident (an open one sharing its signature or dependency,
    last seen within ``window_s``, else a new one). Returns ``{alert_id: incident}`` for those that are in one."""
    ids = sorted(set(alert_ids))
    if not ids:
        return {}
    now = now or store.clock()
    m, i, a = incident_members_table.c, incidents_table.c, alerts_table.c
    with store.engine.begin() as conn:
        known = dict(conn.execute(sa.select(m.alert_id, m.incident_id).where(m.alert_id.in_(ids))).tuples().all())
        new_ids = [alert_id for alert_id in ids if alert_id not in known]
        if new_ids:
            _serialise_correlators(conn, store.dialect)
            rows = conn.execute(
                sa.select(a.id, a.kind, a.dag_id, a.task_id, a.run_id, a.first_seen, a.exception_type,
                          a.exception_message, a.labels, a.data)
                .where(a.id.in_(new_ids)).order_by(a.first_seen, a.id)
            ).mappings().all()
            known.update(_Joiner(conn, timedelta(seconds=window_s), now).join_all(rows))
        if not known:
            return {}
        found = {r["id"]: _incident(r) for r in conn.execute(
            sa.select(incidents_table).where(i.id.in_(set(known.values())))).mappings()}
    return {alert_id: found[incident_id] for alert_id, incident_id in known.items() if incident_id in found}


@dataclasses.dataclass
class _Touched:
    """An incident that gains members in this correlation pass."""

    first_seen: datetime
    last_seen: datetime
    dags: set[str]
    members: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class _Joiner:
    """One correlation pass: a storm of thousands of alerts of one cause costs one lookup, one batch insert and one
    update, not a query per alert."""

    def __init__(self, conn: sa.Connection, window: timedelta, now: datetime) -> None:
        self.conn, self.window, self.now = conn, window, now
        self.by_cause: dict[str, int] = {}  # "sig:<hash>" / "dep:<dependency>" -> incident id
        self.touched: dict[int, _Touched] = {}

    def join_all(self, rows: Sequence[Any]) -> dict[int, int]:
        joined: dict[int, int] = {}
        for row in rows:
            correlation = correlation_of(row["kind"], row["exception_type"], row["exception_message"],
                                         row["labels"] or {}, row["data"] or {})
            if correlation is not None:
                joined[row["id"]] = self._join(row, correlation)
        self._write()
        return joined

    def _join(self, row: Any, correlation: Correlation) -> int:
        seen = row["first_seen"] or self.now
        causes = [f"sig:{correlation.signature_hash}"]
        if correlation.dependency:
            causes.append(f"dep:{correlation.dependency}")
        incident_id = next((self.by_cause[c] for c in causes if c in self.by_cause
                            and self.touched[self.by_cause[c]].last_seen >= seen - self.window), None)
        if incident_id is None:
            incident_id = self._find_or_open(row, correlation, seen)
        for cause in causes:
            self.by_cause.setdefault(cause, incident_id)
        touched = self.touched[incident_id]
        touched.first_seen, touched.last_seen = min(touched.first_seen, seen), max(touched.last_seen, seen)
        touched.members.append({"incident_id": incident_id, "alert_id": row["id"], "dag_id": row["dag_id"],
                                "task_id": row["task_id"], "run_id": row["run_id"], "joined_at": self.now})
        return incident_id

    def _find_or_open(self, row: Any, correlation: Correlation, seen: datetime) -> int:
        i, m = incidents_table.c, incident_members_table.c
        same_cause = [i.signature_hash == correlation.signature_hash]
        if correlation.dependency:
            same_cause.append(i.dependency == correlation.dependency)
        found = self.conn.execute(
            sa.select(i.id, i.first_seen, i.last_seen)
            .where(i.status.in_(_UNRESOLVED), i.last_seen >= seen - self.window, sa.or_(*same_cause))
            .order_by(i.id).limit(1)
        ).first()
        if found is not None:
            incident_id = int(found[0])
            if incident_id not in self.touched:
                dags = set(self.conn.execute(sa.select(m.dag_id).where(m.incident_id == incident_id).distinct())
                           .scalars())
                self.touched[incident_id] = _Touched(found[1], found[2], dags)
            return incident_id
        title = title_of(correlation, row["exception_type"], row["exception_message"],
                         str((row["data"] or {}).get("reason") or ""))
        inserted = self.conn.execute(incidents_table.insert().values(
            signature_hash=correlation.signature_hash, signature=correlation.signature,
            dependency=correlation.dependency, failure_class=correlation.failure_class, title=title[:500],
            status=Status.OPEN.value, first_seen=seen, last_seen=seen, members=0, dags=0, messages={},
        ))
        incident_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        self.touched[incident_id] = _Touched(seen, seen, set())
        return incident_id

    def _write(self) -> None:
        i = incidents_table.c
        for incident_id, touched in self.touched.items():
            if not touched.members:
                continue
            self.conn.execute(incident_members_table.insert(), touched.members)
            dags = touched.dags | {member["dag_id"] for member in touched.members}
            self.conn.execute(incidents_table.update().where(i.id == incident_id).values(
                members=i.members + len(touched.members), dags=len(dags), first_seen=touched.first_seen,
                last_seen=touched.last_seen))


def incidents_of(store: Store, alert_ids: Iterable[int]) -> dict[int, Incident]:
    """``{alert_id: incident}`` of the alerts that are in an incident (no correlation)."""
    ids = sorted(set(alert_ids))
    if not ids:
        return {}
    m = incident_members_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        rows = conn.execute(
            sa.select(m.alert_id, incidents_table).join(incidents_table, incidents_table.c.id == m.incident_id)
            .where(m.alert_id.in_(ids))
        ).mappings().all()
    return {row["alert_id"]: _incident(row) for row in rows}


def note_sent(store: Store, incident_id: int, channel: str, *, members: int, at: datetime,
              message: PostedMessage | None = None) -> None:
    """Remember that ``channel`` got a message of the incident showing ``members`` (and where Slack put it: later
    messages update it, or reply in its thread)."""
    i = incidents_table.c
    with store.engine.begin() as conn:
        messages = dict(conn.execute(sa.select(i.messages).where(i.id == incident_id)).scalar() or {})
        previous = messages.get(channel) or {}
        ts, slack_channel = previous.get("ts"), previous.get("channel")
        if message is not None:  # the latest: a deleted message was posted anew
            ts, slack_channel = message.ts, message.channel
        messages[channel] = {"ts": ts, "channel": slack_channel, "members": members, "at": at.isoformat()}
        conn.execute(incidents_table.update().where(i.id == incident_id).values(messages=messages))


def open_member_count(store: Store, incident_id: int) -> int:
    """Members of the incident whose alert is not resolved yet."""
    m, a = incident_members_table.c, alerts_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(incident_members_table.join(alerts_table, a.id == m.alert_id))
            .where(m.incident_id == incident_id, a.status.in_(_UNRESOLVED))
        ).scalar() or 0)


def mark_resolved(store: Store, incident_id: int, *, at: datetime) -> None:
    """The incident's members are all resolved: so is the incident."""
    i = incidents_table.c
    with store.engine.begin() as conn:
        conn.execute(incidents_table.update().where(i.id == incident_id, i.status.in_(_UNRESOLVED))
                     .values(status=Status.RESOLVED.value, resolved_at=at))


def list_incidents(store: Store, *, dag_ids: Sequence[str] | None = None, status: str | None = None,
                   limit: int = 50, offset: int = 0) -> list[Incident]:
    """Incidents newest first; with ``dag_ids``, only those with a member in one of those DAGs."""
    i, m = incidents_table.c, incident_members_table.c
    query = sa.select(incidents_table).order_by(i.last_seen.desc(), i.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(i.status == status)
    if dag_ids is not None:
        query = query.where(i.id.in_(sa.select(m.incident_id).where(m.dag_id.in_(list(dag_ids)))))
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return [_incident(r) for r in conn.execute(query).mappings()]


def get_incident(store: Store, incident_id: int, *, member_limit: int = 100,
                 member_offset: int = 0) -> tuple[Incident, list[dict[str, Any]]] | None:
    """One incident and a page of its members (each with its alert's status, acknowledgement and times)."""
    i, m, a = incidents_table.c, incident_members_table.c, alerts_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        row = conn.execute(sa.select(incidents_table).where(i.id == incident_id)).mappings().first()
        if row is None:
            return None
        members = conn.execute(
            sa.select(m.alert_id, m.dag_id, m.task_id, m.run_id, m.joined_at, a.status, a.title, a.summary,
                      a.first_seen, a.last_seen, a.acked_by, a.acked_at, a.resolved_by, a.resolved_at)
            .join(alerts_table, a.id == m.alert_id).where(m.incident_id == incident_id)
            .order_by(a.first_seen, m.id).limit(member_limit).offset(member_offset)
        ).mappings().all()
    return _incident(row), [dict(member) for member in members]


def member_alert_ids(store: Store, incident_id: int, *, limit: int | None = None) -> list[int]:
    """The incident's member alerts, first joined first (the first ``limit`` of them)."""
    m = incident_members_table.c
    query = sa.select(m.alert_id).where(m.incident_id == incident_id).order_by(m.id)
    if limit is not None:
        query = query.limit(limit)
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return list(conn.execute(query).scalars())


def acknowledge(store: Store, incident_id: int, *, by: str) -> int:
    """Acknowledge the incident and every open member alert; returns how many members changed."""
    changed = sum(1 for alert_id in member_alert_ids(store, incident_id) if store.acknowledge(alert_id, by=by))
    i = incidents_table.c
    with store.engine.begin() as conn:
        conn.execute(incidents_table.update().where(i.id == incident_id, i.status == Status.OPEN.value)
                     .values(status=Status.ACKNOWLEDGED.value, acked_by=by[:250], acked_at=store.clock()))
    return changed


def resolve(store: Store, incident_id: int, *, by: str) -> int:
    """Resolve every unresolved member alert (and so the incident); returns how many members changed."""
    changed = sum(1 for alert_id in member_alert_ids(store, incident_id) if store.resolve(alert_id, by=by))
    mark_resolved(store, incident_id, at=store.clock())
    return changed


def trends(store: Store, *, dag_ids: Sequence[str] | None, since: datetime, limit: int = 20_000) -> dict[str, Any]:
    """MTTA and MTTR (seconds) per DAG and per owner, the noisiest fingerprints and failures by class per day, over
    the alerts first seen since ``since`` (at most ``limit`` of the newest; ``dag_ids`` = the readable DAGs)."""
    a = alerts_table.c
    query = (sa.select(a.dag_id, a.fingerprint, a.title, a.kind, a.occurrences, a.first_seen, a.acked_at,
                       a.resolved_at, a.labels)
             .where(a.first_seen >= since).order_by(a.first_seen.desc()).limit(limit))
    if dag_ids is not None:
        query = query.where(a.dag_id.in_(list(dag_ids)))
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        rows = conn.execute(query).mappings().all()
    by_dag: dict[str, dict[str, list[float]]] = {}
    by_owner: dict[str, dict[str, list[float]]] = {}
    noisy: dict[str, dict[str, Any]] = {}
    classes: dict[str, dict[str, int]] = {}
    for row in rows:
        labels = row["labels"] or {}
        for bucket in (by_dag.setdefault(row["dag_id"], {"tta": [], "ttr": []}),
                       *(by_owner.setdefault(owner.strip(), {"tta": [], "ttr": []})
                         for owner in str(labels.get("owner") or "unknown").split(",") if owner.strip())):
            if row["acked_at"] is not None:
                bucket["tta"].append((row["acked_at"] - row["first_seen"]).total_seconds())
            if row["resolved_at"] is not None:
                bucket["ttr"].append((row["resolved_at"] - row["first_seen"]).total_seconds())
        entry = noisy.setdefault(row["fingerprint"], {"fingerprint": row["fingerprint"], "title": row["title"],
                                                      "dag_id": row["dag_id"], "occurrences": 0})
        entry["occurrences"] += int(row["occurrences"] or 0)
        if row["kind"] in ("failure", "killed"):
            day = classes.setdefault(row["first_seen"].date().isoformat(), {})
            failure_class = str(labels.get("failure_class") or "unclassified")
            day[failure_class] = day.get(failure_class, 0) + 1

    def means(groups: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 1) if values else None
        return [{"name": name, "alerts_acknowledged": len(v["tta"]), "mtta_s": mean(v["tta"]),
                 "alerts_resolved": len(v["ttr"]), "mttr_s": mean(v["ttr"])} for name, v in sorted(groups.items())]

    return {
        "by_dag": means(by_dag),
        "by_owner": means(by_owner),
        "noisiest": sorted(noisy.values(), key=lambda e: (-e["occurrences"], e["title"]))[:10],
        "failures_by_class": [{"day": day, "classes": counts} for day, counts in sorted(classes.items())],
        "alerts": len(rows),
    }


def member_dags(store: Store, incident_id: int) -> set[str]:
    """The DAGs of an incident's members."""
    m = incident_members_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return set(conn.execute(sa.select(m.dag_id).where(m.incident_id == incident_id).distinct()).scalars())


def touches_dags(store: Store, incident_id: int, dag_ids: Iterable[str]) -> bool:
    """Whether the incident has a member in one of ``dag_ids``."""
    m = incident_members_table.c
    with store.engine.execution_options(tasklens_read_only=True).begin() as conn:
        return conn.execute(sa.select(m.id).where(m.incident_id == incident_id, m.dag_id.in_(list(dag_ids)))
                            .limit(1)).first() is not None

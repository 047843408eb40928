"""The alert store and its outbox: tasklens's own database (SQLAlchemy 2; SQLite by default, PostgreSQL in production).

Every alert is committed here before any delivery is tried; the dispatcher (:mod:`tasklens.dispatch`) drains the
outbox. Nothing here touches Airflow's metadata database, so task processes may write it.

Tables (all prefixed ``tasklens_``; migrations under ``tasklens/migrations`` are applied on first use):

- ``alerts``: one record per problem (fingerprint) while it is open; later occurrences fold into it.
- ``occurrences``: one row per (rule, dag_id, task_id, run_id, map_index, try_number): whoever reports an attempt
  (worker listener, scheduler listener, the dag-processor's double callback, the reconciler), it counts once.
- ``deliveries``: the outbox, one row per alert per channel per message kind, with its delivery state.
- ``events``: terminal TaskEvents (for the UI tab and the recent durations of the duration rule).

Resolve semantics: an alert of kind ``RESOLVE`` closes every unresolved alert with the same fingerprint, or with the
same ``dag_id``, ``task_id`` and ``rule`` (a success cannot know the exception type a failure fingerprint includes),
and queues a resolve notice to each channel that got (or is about to get) the alert.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from tasklens import config
from tasklens.alerts import Alert, AlertKind, AlertSnapshot, Delivery, Severity, Status
from tasklens.exceptions import StoreError, StoreNotReady
from tasklens.text import bounded as _bounded
from tasklens.text import fit_key, safe_text

__all__ = [
    "DELIVERY_STATES",
    "HEAD_REVISION",
    "ClaimedDelivery",
    "MarkResult",
    "RecordResult",
    "Store",
    "get_store",
    "metadata",
    "reset_stores",
]

log = logging.getLogger(__name__)

#: The newest migration in ``tasklens/migrations/versions``; a unit test keeps the two in step.
HEAD_REVISION = "0005"
VERSION_TABLE = "tasklens_alembic_version"
DELIVERY_STATES = ("pending", "sent", "failed", "dead")
#: Seconds one store call may wait for a lock, a connection or a statement (``[tasklens] store_timeout_s``).
DEFAULT_TIMEOUT_S = 3.0
MIGRATION_TIMEOUT_S = 600.0
#: Delivery states that still lead to a message (the channel "got or will get" the alert).
_LIVE_STATES = ("pending", "sent", "failed")
_UNRESOLVED = (Status.OPEN.value, Status.ACKNOWLEDGED.value, Status.MUTED.value)
TERMINAL_EVENTS = ("success", "failed", "up_for_retry", "skipped", "killed")
#: Events that end an attempt in failure; only the first report of an attempt among them raises alerts.
FAILURE_EVENTS = ("failed", "up_for_retry", "killed")
_FAILURE_ALERT_KINDS = frozenset({AlertKind.FAILURE, AlertKind.RETRY, AlertKind.KILLED})

MAX_TITLE = 500
MAX_SUMMARY = 4_000
MAX_EXCEPTION_MESSAGE = 2_000
MAX_ERROR = 2_000


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones): stored naive UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

alerts_table = sa.Table(
    "tasklens_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # The fingerprint while the alert is unresolved, NULL after: UNIQUE makes "one open alert per fingerprint"
    # hold across processes (NULLs are distinct on SQLite and PostgreSQL).
    sa.Column("open_key", sa.String(64), nullable=True, unique=True),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("title", sa.String(MAX_TITLE), nullable=False),
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("template", sa.String(200), nullable=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("map_index", sa.Integer, nullable=False, default=-1),
    sa.Column("try_number", sa.Integer, nullable=True),
    sa.Column("max_tries", sa.Integer, nullable=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False, default=1),
    sa.Column("exception_type", sa.String(250), nullable=True),
    sa.Column("exception_message", sa.String(MAX_EXCEPTION_MESSAGE), nullable=True),
    sa.Column("log_url", sa.Text, nullable=True),
    sa.Column("labels", sa.JSON, nullable=False, default=dict),
    sa.Column("data", sa.JSON, nullable=False, default=dict),
    sa.Column("routes", sa.JSON, nullable=False, default=list),
    sa.Column("acked_by", sa.String(250), nullable=True),
    sa.Column("acked_at", UTCDateTime, nullable=True),
    sa.Column("resolved_by", sa.String(250), nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("muted_until", UTCDateTime, nullable=True),
    sa.Column("undelivered", sa.Boolean, nullable=False, default=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_notified_at", UTCDateTime, nullable=True),
    sa.Column("escalate_at", UTCDateTime, nullable=True),
    sa.Column("escalated_at", UTCDateTime, nullable=True),
    sa.Index(None, "status", "last_seen"),
    sa.Index(None, "severity", "last_seen"),
    sa.Index(None, "dag_id", "last_seen"),
    sa.Index(None, "last_seen"),
    sa.Index(None, "fingerprint"),
    sa.Index(None, "dag_id", "task_id", "rule"),
    sa.Index(None, "escalate_at"),
    sa.Index(None, "status", "severity", "dag_id"),  # the UI's counts, index-only (migration 0003)
)

occurrences_table = sa.Table(
    "tasklens_occurrences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=True),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=True),
    sa.Column("occurred_at", sa.String(40), nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("exception_type", sa.String(250), nullable=True),
    sa.Column("exception_message", sa.String(MAX_EXCEPTION_MESSAGE), nullable=True),
    # "" for rule-raised alerts; the fingerprint for custom alerts, so two different alerts raised by one attempt
    # both count while the same one reported twice (a notifier in the doubled callback) counts once.
    sa.Column("discriminator", sa.String(80), nullable=False, default=""),
    sa.UniqueConstraint(
        "rule", "dag_id", "task_id", "run_id", "map_index", "try_number", "discriminator",
        name="uq_tasklens_occurrences_attempt",  # explicit: PostgreSQL truncates names past 63 characters
    ),
    sa.Index(None, "alert_id"),
    sa.Index(None, "dag_id", "task_id", "run_id", "map_index"),  # the UI's task-instance tab (migration 0003)
)

deliveries_table = sa.Table(
    "tasklens_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("tasklens_alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # alert | repeat | escalation | fallback | resolve
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("channel_type", sa.String(20), nullable=False),
    sa.Column("group_key", sa.String(500), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("batch_id", sa.String(40), nullable=True),  # deliveries sent together as one message (a digest)
    sa.Column("fallback_channels", sa.JSON, nullable=False, default=list),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "alert_id"),
    sa.Index(None, "channel", "group_key", "state"),
)

events_table = sa.Table(
    "tasklens_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    # "failure" for failed / up_for_retry / killed, NULL otherwise: one failure outcome per attempt (0002).
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.UniqueConstraint(
        "dag_id", "task_id", "run_id", "map_index", "try_number", "event", name="uq_tasklens_events_attempt"
    ),
    sa.Index(None, "dag_id", "task_id", "event", "id"),
    sa.Index(None, "ts"),
    sa.Index(
        "uq_tasklens_events_attempt_outcome",
        "dag_id", "task_id", "run_id", "map_index", "try_number", "outcome",
        unique=True,
    ),
    sa.Index("ix_tasklens_events_outcome_ts", "outcome", "ts"),
    sa.Index(None, "outcome", "ts", "dag_id"),  # the UI's failures-per-hour chart, index-only (migration 0003)
)


meta_table = sa.Table(
    "tasklens_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)


channel_slots_table = sa.Table(
    "tasklens_channel_slots",
    metadata,
    sa.Column("channel", sa.String(250), primary_key=True),
    sa.Column("next_allowed_at", UTCDateTime, nullable=False),  # no dispatcher sends to the channel before
)


leases_table = sa.Table(
    "tasklens_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # what is led ("reconciler")
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds by the database's clock (migration 0005)
)


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


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """An outbox row claimed by one dispatcher until ``claimed_until``; ``claim_token`` proves the claim (every
    mark and renewal checks that the row's ``claimed_by`` is still this token)."""

    id: int
    alert_id: int
    kind: str
    route: str
    channel: str
    channel_type: str
    group_key: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    fallback_channels: tuple[str, ...]
    claim_token: str


@dataclasses.dataclass(frozen=True)
class MarkResult:
    """What a mark (sent, failed, dead, cancelled) or a release wrote: ``marked`` rows were still this claim's;
    ``lost`` rows were not (their lease ran out and another dispatcher claimed them) and were left untouched."""

    marked: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()
    queued: tuple[int, ...] = ()  # mark_dead: deliveries queued to fallback channels


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so arbitrary task data (datetimes, sets, objects) never breaks a write, with every
    string valid UTF-8 (PostgreSQL's json type rejects lone surrogates)."""
    text = json.dumps(value, default=safe_text, ensure_ascii=False)
    try:
        text.encode("utf-8")  # lone surrogates stay raw without ensure_ascii: this finds them
    except UnicodeEncodeError:
        return _clean_strings(json.loads(text))
    # The common case costs one check; NULs are escaped, so they are looked for as text.
    return _clean_strings(json.loads(text)) if "\\u0000" in text else json.loads(text)


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(key): _clean_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean_strings(item) for item in value]
    return value


def _column_chars(table: sa.Table, *names: str) -> dict[str, int]:
    return {name: int(table.c[name].type.length) for name in names}  # type: ignore[attr-defined]


_ALERT_KEY_CHARS = _column_chars(alerts_table, "fingerprint", "rule", "dag_id", "task_id", "run_id", "template")
_EVENT_KEY_CHARS = _column_chars(events_table, "dag_id", "task_id", "run_id")
_DELIVERY_KEY_CHARS = _column_chars(deliveries_table, "route", "channel", "channel_type", "group_key")
_DISCRIMINATOR_CHARS = int(occurrences_table.c.discriminator.type.length)  # type: ignore[attr-defined]
_OCCURRED_AT_CHARS = int(occurrences_table.c.occurred_at.type.length)  # type: ignore[attr-defined]


def _fitted_alert(alert: Alert) -> Alert:
    """``alert`` with every key fitted to its column (PostgreSQL's VARCHAR(n) rejects longer values): too long a
    key keeps its head plus a hash, so distinct ids stay distinct and the same id always maps to the same key."""
    keys = {name: fit_key(getattr(alert, name), limit) for name, limit in _ALERT_KEY_CHARS.items()}
    if all(value is getattr(alert, name) for name, value in keys.items()):
        return alert  # the common case: nothing to change
    return dataclasses.replace(alert, **keys)


def _fitted_delivery(delivery: Delivery) -> Delivery:
    keys = {name: fit_key(getattr(delivery, name), limit) for name, limit in _DELIVERY_KEY_CHARS.items()}
    if all(value is getattr(delivery, name) for name, value in keys.items()):
        return delivery
    return dataclasses.replace(delivery, **keys)


def _parse_ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _discriminator(alert: Alert) -> str:
    if alert.kind != AlertKind.CUSTOM:
        return ""
    if alert.run_id in (None, "unknown"):  # raised outside a task: no attempt identity, every call counts
        return fit_key(f"{alert.fingerprint}@{alert.occurred_at}", _DISCRIMINATOR_CHARS)
    return fit_key(alert.fingerprint, _DISCRIMINATOR_CHARS)


def _delivery_to_json(delivery: Delivery) -> dict[str, Any]:
    data = dataclasses.asdict(delivery)
    data["escalation_channels"] = list(delivery.escalation_channels)
    data["fallback_channels"] = list(delivery.fallback_channels)
    return data


def _delivery_from_json(data: Mapping[str, Any]) -> Delivery:
    names = {f.name for f in dataclasses.fields(Delivery)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["escalation_channels"] = tuple(kwargs.get("escalation_channels") or ())
    kwargs["fallback_channels"] = tuple(kwargs.get("fallback_channels") or ())
    return Delivery(**kwargs)


def _postgres_timeouts(url: sa.URL, timeout_s: float) -> dict[str, Any]:
    """libpq settings that bound every step of a PostgreSQL call to ``timeout_s``: connecting, waiting for a
    lock, running a statement, and a server that stops answering (keepalives, ``tcp_user_timeout``)."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg2", "psycopg"):
        return {}
    timeout_ms = max(1, int(timeout_s * 1000))
    return {
        "connect_timeout": max(2, math.ceil(timeout_s)),  # libpq's minimum is 2 s
        "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": timeout_ms,
    }


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


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


@functools.cache
def _insert_or_skip(dialect: str, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for ``table``, built once per dialect and reused."""
    dialect_insert: Any
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # noqa: PLC0415 - Alembic and the dialect's insert load only when used
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # noqa: PLC0415 - Alembic and the dialect's insert load only when used
    return dialect_insert(table).on_conflict_do_nothing()


class Store:
    """The alert store. Thread-safe; one per process via :func:`get_store`.

    ``clock`` returns the current aware UTC datetime (tests inject a fake one).
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        clock: Callable[[], datetime] = _utcnow,
        migrate: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = sa.make_url(url)
        self.clock = clock
        self.dialect = self.url.get_backend_name()
        self.timeout_s = timeout_s
        self.engine = self._create_engine()
        self._migrated = False
        self._migrate_lock = threading.Lock()
        if migrate:
            self.migrate()

    # -- engine --------------------------------------------------------------------------------------------

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            path = _sqlite_path(self.url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                self.url, connect_args={"timeout": self.timeout_s, "check_same_thread": False}
            )
            busy_timeout_ms = int(self.timeout_s * 1000)

            @sa_event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
                # We issue BEGIN ourselves (below); pysqlite's implicit transactions would defer the write lock
                # and turn concurrent writers into "database is locked" instead of waiting.
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                # A locked store makes a writer wait this long, then fail (and spool): never past the time budget.
                cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            @sa_event.listens_for(engine, "begin")
            def _sqlite_begin(conn: Connection) -> None:
                # Writers take the lock up front (IMMEDIATE) so read-then-write never deadlocks; readers do not.
                read_only = conn.get_execution_options().get("tasklens_read_only", False)
                conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

            return engine
        return sa.create_engine(
            self.url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=self.timeout_s,
            connect_args=_postgres_timeouts(self.url, self.timeout_s),
        )

    def _write(self) -> Any:
        return self.engine.begin()

    def _read(self) -> Any:
        return self.engine.execution_options(tasklens_read_only=True).begin()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- migrations ----------------------------------------------------------------------------------------

    def schema_revision(self) -> str | None:
        """The applied migration revision, or None when the store was never migrated."""
        try:
            with self._read() as conn:
                return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()  # noqa: S608
        except sa.exc.OperationalError:
            return None
        except sa.exc.ProgrammingError:
            return None

    def ensure_schema(self) -> None:
        """Check once per store that the schema is at :data:`HEAD_REVISION`; raise :class:`StoreNotReady` if not.

        Processes on a task's or the scheduler's path call this instead of :meth:`migrate`: a migration may
        rewrite a table, which must never happen inside a task's time budget (``tasklens db upgrade`` and the
        api-server's start migrate).
        """
        if self._migrated:
            return
        try:
            revision = self.schema_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not read the tasklens store's schema version: {exc}") from exc
        if revision != HEAD_REVISION:
            raise StoreNotReady(
                f"the tasklens store is at schema {revision or 'none'}, this tasklens needs {HEAD_REVISION}; "
                "run `tasklens db upgrade` (the api-server also migrates when it starts)"
            )
        self._migrated = True

    def migrate(self) -> None:
        """Bring the schema to :data:`HEAD_REVISION`. Safe when several processes call it at once."""
        if self._migrated:
            return
        with self._migrate_lock:
            if self._migrated:
                return
            try:
                if self.schema_revision() != HEAD_REVISION:
                    self._upgrade_locked()
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(f"could not migrate the tasklens store at {self.url!r}: {exc}") from exc
            self._migrated = True

    def _upgrade_locked(self) -> None:
        from alembic.config import Config  # noqa: PLC0415 - Alembic and the dialect's insert load only when used

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        # Migrating is not on a task's path: wait as long as another migrator or a long table rewrite needs.
        migrator = Store(self.url, clock=self.clock, migrate=False, timeout_s=MIGRATION_TIMEOUT_S)
        try:
            self._upgrade_with(migrator, cfg)
        finally:
            migrator.dispose()

    def _upgrade_with(self, migrator: Store, cfg: Any) -> None:
        from alembic import command  # noqa: PLC0415 - Alembic and the dialect's insert load only when used

        with migrator._write() as conn:
            # One migrator at a time: SQLite's BEGIN IMMEDIATE holds the write lock for this whole transaction;
            # PostgreSQL takes a transaction-scoped advisory lock. Everyone else waits, then finds head applied.
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(b"tasklens-store")})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- writes from the pipeline ----------------------------------------------------------------------------

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
            batch: list[Any] = [(_fitted_alert(item[0]), *item[1:]) for item in items]
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

    def _insert(self, conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING; returns the number of rows inserted (0 = duplicate)."""
        if self.dialect not in ("sqlite", "postgresql"):  # pragma: no cover - a savepoint turns it into "duplicate"
            try:
                with conn.begin_nested():
                    return conn.execute(table.insert(), dict(values)).rowcount
            except sa.exc.IntegrityError:
                return 0
        return conn.execute(_insert_or_skip(self.dialect, table), dict(values)).rowcount

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
                **{name: fit_key(event[name], limit) for name, limit in _EVENT_KEY_CHARS.items()},
                "map_index": int(event.get("map_index", -1)),
                "try_number": int(event.get("try_number") or 1),
                "event": str(event["event"]),
                "ts": _parse_ts(event.get("ts")) or now,
                "duration_s": float(duration) if isinstance(duration, (int, float)) else None,
                "payload": _json_safe(dict(event)),
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
            "labels": _json_safe(dict(alert.labels)),
            "data": _json_safe(dict(alert.data)),
            "last_seen": now,
        }
        queue: tuple[Delivery, ...] = ()
        if existing is None:
            routes = [_delivery_to_json(d) for d in deliveries]
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
            status = existing["status"]
            muted_until = existing["muted_until"]
            if status == Status.MUTED.value and not muted and (muted_until is None or muted_until <= now):
                status = Status.OPEN.value  # a silence ended (or a timed mute expired): notify again
                updates.update(status=status, muted_until=None)
                queue = deliveries or tuple(_delivery_from_json(r) for r in existing["routes"] or ())
            elif status == Status.OPEN.value:
                known = deliveries or tuple(_delivery_from_json(r) for r in existing["routes"] or ())
                last = existing["last_notified_at"]
                queue = tuple(
                    d for d in known if last is None or (now - last).total_seconds() >= d.repeat_interval_s
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
                "occurred_at": _bounded(alert.occurred_at, _OCCURRED_AT_CHARS, marker=""),
                "recorded_at": now,
                "exception_type": _bounded(alert.exception_type, 250),
                "exception_message": _bounded(alert.exception_message, MAX_EXCEPTION_MESSAGE),
                "discriminator": _discriminator(alert),
            },
        )
        if not inserted:
            return None
        if existing is None:
            result.new_alerts += 1
        else:
            result.folded += 1
        result.alert_ids.append(alert_id)
        kind = "alert" if existing is None or existing["status"] == Status.MUTED.value else "repeat"
        for delivery in queue:
            result.queued_delivery_ids.append(self._queue(conn, alert_id, kind, delivery, now))
        return int(alert_id)

    def _queue(
        self,
        conn: Connection,
        alert_id: int,
        kind: str,
        delivery: Delivery,
        now: datetime,
        *,
        not_before: datetime | None = None,
    ) -> int:
        """Add one outbox row. A fresh row joins the pending batch of its (channel, group_key) if one is waiting."""
        delivery = _fitted_delivery(delivery)
        due = now + timedelta(seconds=max(0.0, delivery.group_wait_s))
        if delivery.group_wait_s > 0:
            waiting = conn.execute(
                sa.select(sa.func.min(deliveries_table.c.next_attempt_at)).where(
                    deliveries_table.c.channel == delivery.channel,
                    deliveries_table.c.group_key == delivery.group_key,
                    deliveries_table.c.kind == kind,
                    deliveries_table.c.state == "pending",
                    deliveries_table.c.attempts == 0,
                    deliveries_table.c.next_attempt_at > now,
                )
            ).scalar()
            if waiting is not None:
                due = min(due, waiting)
        if not_before is not None:
            due = max(due, not_before)
        return int(
            conn.execute(
                deliveries_table.insert().values(
                    alert_id=alert_id,
                    kind=kind,
                    route=delivery.route,
                    channel=delivery.channel,
                    channel_type=delivery.channel_type,
                    group_key=delivery.group_key,
                    state="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=due,
                    fallback_channels=list(delivery.fallback_channels),
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )

    @staticmethod
    def _resolve_match(alert: Alert) -> Any:
        """The open alerts a RESOLVE closes: its fingerprint, or the same rule on the same task; in both cases only
        alerts last seen before it happened (a success read later must not close a newer failure's alert)."""
        match = sa.or_(
            alerts_table.c.open_key == alert.fingerprint,
            sa.and_(
                alerts_table.c.dag_id == alert.dag_id,
                alerts_table.c.task_id.is_not_distinct_from(alert.task_id),
                alerts_table.c.rule == alert.rule,
                alerts_table.c.open_key.is_not(None),
            ),
        )
        happened = _parse_ts(alert.occurred_at)
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
        query = sa.select(alerts_table.c.id, alerts_table.c.routes).where(self._resolve_match(alert))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        for row in conn.execute(query).mappings().all():
            self._close(conn, row["id"], row["routes"], now, by, result)

    def _close(
        self, conn: Connection, alert_id: int, routes: Any, now: datetime, by: str, result: RecordResult
    ) -> None:
        conn.execute(
            alerts_table.update()
            .where(alerts_table.c.id == alert_id)
            .values(status=Status.RESOLVED.value, open_key=None, resolved_at=now, resolved_by=_bounded(by, 250),
                    last_seen=now)
        )
        result.resolved += 1
        result.alert_ids.append(alert_id)
        for delivery, due in self._notified_channels(conn, alert_id, routes):
            result.queued_delivery_ids.append(self._queue(conn, alert_id, "resolve", delivery, now, not_before=due))

    def _notified_channels(
        self, conn: Connection, alert_id: int, routes: Any, *, channel_types: Callable[[str], bool] | None = None
    ) -> list[tuple[Delivery, datetime]]:
        """One delivery per channel that got (or is about to get) the alert, with when its last message is due: a
        follow-up (resolve notice, acknowledgement) goes after the alert itself. ``channel_types`` filters by type."""
        by_channel = {r.get("channel"): _delivery_from_json(r) for r in routes or ()}
        d = deliveries_table.c
        rows = conn.execute(
            sa.select(d.channel, d.channel_type, d.route, d.group_key, sa.func.max(d.next_attempt_at).label("due"))
            .where(d.alert_id == alert_id, d.kind.not_in(("resolve", "ack")), d.state.in_(_LIVE_STATES))
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

    # -- channel send slots (rate limits shared by every dispatcher) ----------------------------------------------

    def take_send_slot(self, channel: str, *, now: datetime, interval_s: float) -> float:
        """Take ``channel``'s send slot: 0.0 when it is free now (the next one opens ``interval_s`` later), else the
        seconds until it opens (nothing taken). Atomic across processes, so dispatchers together keep the rate."""
        slot = channel_slots_table.c
        with self._write() as conn:
            self._insert(conn, channel_slots_table, {"channel": channel, "next_allowed_at": now})
            query = sa.select(slot.next_allowed_at).where(slot.channel == channel)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            allowed = conn.execute(query).scalar_one()
            if allowed > now:
                return (allowed - now).total_seconds()
            conn.execute(
                channel_slots_table.update()
                .where(slot.channel == channel)
                .values(next_allowed_at=now + timedelta(seconds=max(0.0, interval_s)))
            )
            return 0.0

    def block_channel(self, channel: str, *, until: datetime) -> None:
        """No dispatcher sends to ``channel`` before ``until`` (a 429's Retry-After); never moves a block earlier."""
        slot = channel_slots_table.c
        with self._write() as conn:
            self._insert(conn, channel_slots_table, {"channel": channel, "next_allowed_at": until})
            conn.execute(
                channel_slots_table.update()
                .where(slot.channel == channel, slot.next_allowed_at < until)
                .values(next_allowed_at=until)
            )

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

    # -- the outbox (dispatcher side) ------------------------------------------------------------------------

    def claim(
        self, worker: str, *, limit: int = 200, lease_s: float = 60.0, now: datetime | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[ClaimedDelivery]:
        """Claim deliveries due at ``now`` for ``worker``, leased for ``lease_s`` on the database's clock; other
        dispatchers skip them meanwhile. Each call has its own claim token (:attr:`ClaimedDelivery.claim_token`).

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: one atomic UPDATE under the write lock.
        """
        now = now or self.clock()
        d = deliveries_table.c
        token = f"{worker}#{uuid.uuid4().hex[:12]}"
        try:
            with self._write() as conn:
                lease_now = self._lease_now(conn)
                until = lease_now + timedelta(seconds=lease_s)
                due = sa.and_(
                    d.state.in_(("pending", "failed")),
                    d.next_attempt_at <= now,
                    sa.or_(d.claimed_until.is_(None), d.claimed_until < lease_now),
                )
                if ids is not None:
                    due = sa.and_(due, d.id.in_(list(ids)))
                candidates = sa.select(d.id).where(due).order_by(d.next_attempt_at, d.id).limit(limit)
                if self.dialect == "postgresql":
                    claimed_ids = list(conn.execute(candidates.with_for_update(skip_locked=True)).scalars())
                    if not claimed_ids:
                        return []
                    conn.execute(
                        deliveries_table.update()
                        .where(d.id.in_(claimed_ids))
                        .values(claimed_by=token, claimed_until=until)
                    )
                else:
                    conn.execute(
                        deliveries_table.update()
                        .where(d.id.in_(candidates.scalar_subquery()))
                        .values(claimed_by=token, claimed_until=until)
                    )
                rows = conn.execute(
                    sa.select(deliveries_table).where(d.claimed_by == token).order_by(d.id)
                ).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not claim from the tasklens outbox: {exc}") from exc
        return [
            ClaimedDelivery(
                id=r["id"],
                alert_id=r["alert_id"],
                kind=r["kind"],
                route=r["route"],
                channel=r["channel"],
                channel_type=r["channel_type"],
                group_key=r["group_key"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                next_attempt_at=r["next_attempt_at"],
                fallback_channels=tuple(r["fallback_channels"] or ()),
                claim_token=token,
            )
            for r in rows
        ]

    def _lease_now(self, conn: Connection) -> datetime:
        """Now on the database server's clock, which leases are measured on, so dispatchers on hosts whose clocks
        disagree still agree on when a lease ends. A test's injected ``clock`` stands in for it."""
        if self.clock is not _utcnow:
            return self.clock()
        if self.dialect == "postgresql":
            value = conn.execute(sa.text("SELECT timezone('UTC', clock_timestamp())")).scalar_one()
        elif self.dialect == "sqlite":
            text = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
            value = datetime.fromisoformat(text)
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            value = conn.execute(sa.select(sa.func.current_timestamp())).scalar_one()
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def _owned(self, conn: Connection, ids: Sequence[int], token: str) -> list[int]:
        """The rows of ``ids`` still claimed with ``token`` (locked until the transaction ends on PostgreSQL)."""
        d = deliveries_table.c
        query = sa.select(d.id).where(d.id.in_(list(ids)), d.claimed_by == token).order_by(d.id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return list(conn.execute(query).scalars())

    @staticmethod
    def _result(ids: Sequence[int], owned: Sequence[int], queued: Sequence[int] = ()) -> MarkResult:
        mine = set(owned)
        return MarkResult(
            marked=tuple(owned), lost=tuple(i for i in ids if i not in mine), queued=tuple(queued)
        )

    def renew(self, ids: Sequence[int], *, token: str, lease_s: float) -> list[int]:
        """Extend the lease of the rows of ``ids`` still claimed with ``token`` to ``lease_s`` from now (database
        clock). Returns those rows: the dispatcher sends only them, since another one owns the rest."""
        if not ids:
            return []
        with self._write() as conn:
            owned = self._owned(conn, ids, token)
            if owned:
                until = self._lease_now(conn) + timedelta(seconds=lease_s)
                conn.execute(
                    deliveries_table.update().where(deliveries_table.c.id.in_(owned)).values(claimed_until=until)
                )
        return owned

    def release(self, ids: Sequence[int], *, token: str, next_attempt_at: datetime) -> MarkResult:
        """Give claimed deliveries back untried (rate limit, ordering): no attempt is counted."""
        return self._update_owned(ids, token, claimed_by=None, claimed_until=None, next_attempt_at=next_attempt_at)

    def _update_owned(self, ids: Sequence[int], token: str, **values: Any) -> MarkResult:
        """Set ``values`` on the rows of ``ids`` this dispatcher (``token``) still owns; others are reported lost."""
        if not ids:
            return MarkResult()
        with self._write() as conn:
            owned = self._owned(conn, ids, token)
            if owned:
                conn.execute(deliveries_table.update().where(deliveries_table.c.id.in_(owned)).values(**values))
        return self._result(ids, owned)

    def _end_attempt(
        self, conn: Connection, ids: Sequence[int], token: str, now: datetime, **values: Any
    ) -> MarkResult:
        """Record one delivery attempt of the rows ``token`` still owns and release the claim on them."""
        owned = self._owned(conn, ids, token)
        if owned:
            conn.execute(
                deliveries_table.update()
                .where(deliveries_table.c.id.in_(owned))
                .values(
                    last_attempt_at=now,
                    attempts=deliveries_table.c.attempts + 1,
                    claimed_by=None,
                    claimed_until=None,
                    **values,
                )
            )
        return self._result(ids, owned)

    def mark_sent(self, ids: Sequence[int], *, token: str, now: datetime | None = None) -> MarkResult:
        """These deliveries went out (as one message)."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        batch = uuid.uuid4().hex
        with self._write() as conn:
            return self._end_attempt(conn, ids, token, now, state="sent", sent_at=now, batch_id=batch)

    def mark_failed(
        self, ids: Sequence[int], *, token: str, error: str, next_attempt_at: datetime, now: datetime | None = None
    ) -> MarkResult:
        """A retryable failure: try again at ``next_attempt_at``."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        with self._write() as conn:
            return self._end_attempt(
                conn, ids, token, now, state="failed", last_error=_bounded(error, MAX_ERROR),
                next_attempt_at=next_attempt_at,
            )

    def mark_cancelled(
        self, ids: Sequence[int], *, token: str, reason: str, now: datetime | None = None
    ) -> MarkResult:
        """Never send these deliveries (a resolve notice for an alert that never reached its channel). They are
        kept as ``dead`` with ``reason``, the alert is not flagged, and ``tasklens replay`` brings them back with
        the alert's own dead delivery."""
        return self._update_owned(ids, token, state="dead", last_error=_bounded(reason, MAX_ERROR), claimed_by=None,
                                  claimed_until=None)

    def mark_dead(
        self,
        ids: Sequence[int],
        *,
        token: str,
        error: str,
        fallback: Sequence[tuple[str, str]] = (),
        now: datetime | None = None,
    ) -> MarkResult:
        """Give up on these deliveries: flag their alerts undelivered and queue them to ``fallback`` channels
        (``(name, type)`` pairs; channels that already had them are skipped). A fallback channel that gets an
        alert already resolved gets its resolve notice too; a resolve notice itself has no fallback (it goes only
        where the alert went). ``MarkResult.queued`` holds the new delivery ids."""
        if not ids:
            return MarkResult()
        now = now or self.clock()
        error = _bounded(error, MAX_ERROR) or "unknown error"
        d = deliveries_table.c
        queued: list[int] = []
        with self._write() as conn:
            ended = self._end_attempt(conn, ids, token, now, state="dead", last_error=error)
            if not ended.marked:
                return ended
            rows = conn.execute(
                sa.select(deliveries_table).where(d.id.in_(ended.marked)).order_by(d.id)
            ).mappings().all()
            alert_ids = sorted({r["alert_id"] for r in rows})
            conn.execute(
                alerts_table.update()
                .where(alerts_table.c.id.in_(alert_ids))
                .values(undelivered=True, last_error=f"{rows[0]['channel']}: {error}")
            )
            resolved = set(
                conn.execute(
                    sa.select(alerts_table.c.id).where(
                        alerts_table.c.id.in_(alert_ids), alerts_table.c.status == Status.RESOLVED.value
                    )
                ).scalars()
            )
            for row in rows:
                if row["kind"] == "resolve":
                    continue
                for name, channel_type in fallback:
                    if name == row["channel"] or self._has_delivery(conn, row["alert_id"], name, row["kind"]):
                        continue
                    delivery = Delivery(
                        route=row["route"], channel=name, channel_type=channel_type, group_key=row["group_key"]
                    )
                    queued.append(self._queue(conn, row["alert_id"], row["kind"], delivery, now))
                    if row["alert_id"] in resolved and not self._has_delivery(
                        conn, row["alert_id"], name, "resolve"
                    ):
                        queued.append(self._queue(conn, row["alert_id"], "resolve", delivery, now))
        return dataclasses.replace(ended, queued=tuple(queued))

    @staticmethod
    def _has_delivery(conn: Connection, alert_id: int, channel: str, kind: str) -> bool:
        d = deliveries_table.c
        query = sa.select(d.id).where(d.alert_id == alert_id, d.channel == channel, d.kind == kind).limit(1)
        return conn.execute(query).first() is not None

    def pending_delivery_before(self, alert_id: int, channel: str, delivery_id: int) -> datetime | None:
        """When an earlier, unsent message of ``alert_id`` to ``channel`` is due (resolve notices wait for it)."""
        d = deliveries_table.c
        with self._read() as conn:
            return conn.execute(
                sa.select(sa.func.max(d.next_attempt_at)).where(
                    d.alert_id == alert_id,
                    d.channel == channel,
                    d.id < delivery_id,
                    d.kind != "resolve",
                    d.state.in_(("pending", "failed")),
                )
            ).scalar()

    def delivered_before(self, alert_id: int, channel: str, delivery_id: int) -> bool:
        """Whether an earlier message of ``alert_id`` (not a resolve notice) went out to ``channel``."""
        d = deliveries_table.c
        query = sa.select(d.id).where(
            d.alert_id == alert_id, d.channel == channel, d.id < delivery_id, d.kind != "resolve", d.state == "sent"
        )
        with self._read() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def queue_escalations(
        self, *, now: datetime | None = None, channel_types: Callable[[str], str] | None = None
    ) -> list[int]:
        """Alerts still open past a route's ``escalate_after`` go to that route's escalation channels, once per
        channel; each route escalates at its own time.

        Safe with several dispatchers: each due alert is taken by one of them (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, the write lock on SQLite) and its update is conditional on it being still due and unchanged.
        """
        now = now or self.clock()
        a, d = alerts_table.c, deliveries_table.c
        queued: list[int] = []
        with self._write() as conn:
            query = (
                sa.select(a.id, a.routes, a.first_seen, a.escalate_at)
                .where(a.status == Status.OPEN.value, a.escalate_at <= now, a.escalated_at.is_(None))
                .order_by(a.id)
            )
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(query).mappings().all():
                escalated = set(
                    conn.execute(sa.select(d.channel).where(d.alert_id == row["id"], d.kind == "escalation")).scalars()
                )
                due: list[Delivery] = []
                later: list[datetime] = []
                for route in (_delivery_from_json(r) for r in row["routes"] or ()):
                    if route.escalate_after_s is None or set(route.escalation_channels) <= escalated:
                        continue
                    at = row["first_seen"] + timedelta(seconds=route.escalate_after_s)
                    if at <= now:
                        due.append(route)
                    else:
                        later.append(at)
                next_at = min(later, default=None)
                taken = conn.execute(
                    alerts_table.update()
                    .where(a.id == row["id"], a.escalated_at.is_(None), a.escalate_at == row["escalate_at"])
                    .values(escalate_at=next_at or row["escalate_at"], escalated_at=None if next_at else now)
                ).rowcount
                if not taken:  # another dispatcher escalated it first
                    continue
                for route in due:
                    for name in route.escalation_channels:
                        if name in escalated:
                            continue
                        escalated.add(name)
                        delivery = Delivery(
                            route=route.route,
                            channel=name,
                            channel_type=channel_types(name) if channel_types else route.channel_type,
                            group_key=f"escalation:{row['id']}",
                            fallback_channels=route.fallback_channels,
                        )
                        queued.append(self._queue(conn, row["id"], "escalation", delivery, now))
        return queued

    def replay(self, *, now: datetime | None = None) -> int:
        """Re-queue every dead delivery and clear the undelivered flags. Returns how many were re-queued."""
        now = now or self.clock()
        d = deliveries_table.c
        with self._write() as conn:
            alert_ids = list(conn.execute(sa.select(d.alert_id).where(d.state == "dead").distinct()).scalars())
            count = conn.execute(
                deliveries_table.update()
                .where(d.state == "dead")
                .values(state="pending", attempts=0, created_at=now, next_attempt_at=now, claimed_by=None,
                        claimed_until=None)
            ).rowcount
            if alert_ids:
                conn.execute(
                    alerts_table.update().where(alerts_table.c.id.in_(alert_ids)).values(undelivered=False)
                )
        return int(count)

    # -- reads -------------------------------------------------------------------------------------------------

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
        return _parse_ts(value)

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
                    self._queue(conn, alert_id, "ack", delivery, now, not_before=due)
            return changed

    def resolve(self, alert_id: int, *, by: str) -> bool:
        """Close an alert by hand; channels that got it get a resolve notice."""
        now = self.clock()
        with self._write() as conn:
            row = conn.execute(
                sa.select(alerts_table.c.id, alerts_table.c.routes).where(
                    alerts_table.c.id == alert_id, alerts_table.c.open_key.is_not(None)
                )
            ).mappings().first()
            if row is None:
                return False
            self._close(conn, row["id"], row["routes"], now, by, RecordResult())
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

    def prune(self, *, older_than: timedelta, now: datetime | None = None) -> int:
        """Delete what is older than ``older_than``: events, sent deliveries, and resolved alerts with their
        occurrences and deliveries (the dispatcher's housekeeping, ``retention_days``). Returns the rows deleted.

        Nothing an unresolved (open, acknowledged, muted) alert still needs goes, however old: the alert, its
        occurrences, its deliveries (its resolve notice goes where they went) and the events of the task instances
        it counts. A resolved alert with a message still to send (its resolve notice, say) stays too: pruning never
        loses a delivery.
        """
        cutoff = (now or self.clock()) - older_than
        a, d, e, o = alerts_table.c, deliveries_table.c, events_table.c, occurrences_table.c
        unsent = sa.select(d.alert_id).where(d.state.in_(("pending", "failed")))
        unresolved = sa.select(a.id).where(a.status.in_(_UNRESOLVED))
        old_resolved = sa.select(a.id).where(
            a.status == Status.RESOLVED.value, a.last_seen < cutoff, a.id.not_in(unsent)
        )
        counted_by_unresolved = (
            sa.select(o.id)
            .where(
                o.alert_id.in_(unresolved),
                o.dag_id == e.dag_id,
                o.task_id == e.task_id,
                o.run_id == e.run_id,
                o.map_index == e.map_index,
            )
            .exists()
        )
        with self._write() as conn:
            alert_ids = list(conn.execute(old_resolved).scalars())
            removed = conn.execute(
                events_table.delete().where(e.ts < cutoff, ~counted_by_unresolved)
            ).rowcount
            removed += conn.execute(
                deliveries_table.delete().where(d.state == "sent", d.sent_at < cutoff, d.alert_id.not_in(unresolved))
            ).rowcount
            for start in range(0, len(alert_ids), 500):  # bounded IN lists; children first, explicitly
                chunk = alert_ids[start : start + 500]
                occurrences = occurrences_table.delete().where(occurrences_table.c.alert_id.in_(chunk))
                removed += conn.execute(occurrences).rowcount
                removed += conn.execute(deliveries_table.delete().where(d.alert_id.in_(chunk))).rowcount
                removed += conn.execute(alerts_table.delete().where(a.id.in_(chunk))).rowcount
        return int(removed)

    def optimize(self) -> None:
        """Refresh the query planner's statistics (SQLite ``PRAGMA optimize``; PostgreSQL autovacuum does it)."""
        if self.dialect == "sqlite":
            with self._write() as conn:  # committed: the ANALYZE it may run must not be rolled back
                conn.exec_driver_sql("PRAGMA optimize")


_stores: dict[tuple[str, int], Store] = {}
_stores_lock = threading.Lock()


def get_store(url: str | None = None, *, migrate: bool = False) -> Store:
    """The process's store for ``url`` (default ``config.store_url()``) with ``[tasklens] store_timeout_s``.

    It is not migrated unless ``migrate`` (the CLI and the api-server's start); writes check the schema instead.
    """

    if url is None:
        url = config.store_url()
    key = (url, os.getpid())  # a forked child must not share its parent's connections
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                try:
                    store = Store(url, migrate=False, timeout_s=config.store_timeout_s())
                except Exception as exc:  # a missing driver, a malformed URL: unavailable until fixed
                    raise StoreError(f"could not open the tasklens store: {type(exc).__name__}: {exc}") from exc
                _stores[key] = store
    if migrate:
        store.migrate()
    return store


def reset_stores() -> None:
    """Dispose of every cached store (tests, after changing ``store_url``)."""
    with _stores_lock:
        for store in _stores.values():
            store.dispose()
        _stores.clear()


def worker_name() -> str:
    """Identity of this dispatcher process in ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}"

"""The store's engine: connecting (SQLite pragmas, PostgreSQL timeouts), transactions, the schema check and the
migrations (Alembic, under ``tasklens/migrations``), and the statements every part of the store shares."""

from __future__ import annotations

import functools
import math
import threading
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from tasklens.exceptions import StoreError, StoreNotReady
from tasklens.store.schema import HEAD_REVISION, VERSION_TABLE

__all__ = ["DEFAULT_TIMEOUT_S", "MIGRATIONS_DIR", "MIGRATION_TIMEOUT_S", "StoreEngine", "utcnow"]

#: Seconds one store call may wait for a lock, a connection or a statement (``[tasklens] store_timeout_s``).
DEFAULT_TIMEOUT_S = 3.0
MIGRATION_TIMEOUT_S = 600.0
MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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


@functools.cache
def _insert_or_skip(dialect: str, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for ``table``, built once per dialect and reused."""
    dialect_insert: Any
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # noqa: PLC0415 - Alembic and the dialect's insert load only when used
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # noqa: PLC0415 - Alembic and the dialect's insert load only when used
    return dialect_insert(table).on_conflict_do_nothing()


class StoreEngine:
    """One database: its engine, transactions and schema. The parts of :class:`~tasklens.store.Store` build on it.

    ``clock`` returns the current aware UTC datetime (tests inject a fake one).
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        clock: Callable[[], datetime] = utcnow,
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
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        # Migrating is not on a task's path: wait as long as another migrator or a long table rewrite needs.
        migrator = type(self)(self.url, clock=self.clock, migrate=False, timeout_s=MIGRATION_TIMEOUT_S)
        try:
            self._upgrade_with(migrator, cfg)
        finally:
            migrator.dispose()

    def _upgrade_with(self, migrator: StoreEngine, cfg: Any) -> None:
        from alembic import command  # noqa: PLC0415 - Alembic and the dialect's insert load only when used

        with migrator._write() as conn:
            # One migrator at a time: SQLite's BEGIN IMMEDIATE holds the write lock for this whole transaction;
            # PostgreSQL takes a transaction-scoped advisory lock. Everyone else waits, then finds head applied.
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(b"tasklens-store")})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def _insert(self, conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING; returns the number of rows inserted (0 = duplicate)."""
        if self.dialect not in ("sqlite", "postgresql"):  # pragma: no cover - a savepoint turns it into "duplicate"
            try:
                with conn.begin_nested():
                    return conn.execute(table.insert(), dict(values)).rowcount
            except sa.exc.IntegrityError:
                return 0
        return conn.execute(_insert_or_skip(self.dialect, table), dict(values)).rowcount

    def _lease_now(self, conn: Connection) -> datetime:
        """Now on the database server's clock, which leases are measured on, so dispatchers on hosts whose clocks
        disagree still agree on when a lease ends. A test's injected ``clock`` stands in for it."""
        if self.clock is not utcnow:
            return self.clock()
        if self.dialect == "postgresql":
            value = conn.execute(sa.text("SELECT timezone('UTC', clock_timestamp())")).scalar_one()
        elif self.dialect == "sqlite":
            text = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
            value = datetime.fromisoformat(text)
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            value = conn.execute(sa.select(sa.func.current_timestamp())).scalar_one()
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

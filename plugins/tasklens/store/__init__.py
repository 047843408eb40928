"""The alert store and its outbox: tasklens's own database (SQLAlchemy 2; SQLite by default, PostgreSQL in production).

Every alert is committed here before any delivery is tried; the dispatcher (:mod:`tasklens.dispatch`) drains the
outbox. Nothing here touches Airflow's metadata database, so task processes may write it.

One job per module: :mod:`~tasklens.store.schema` (tables, column types, limits), :mod:`~tasklens.store.engine`
(connecting, transactions, schema check and migrations), :mod:`~tasklens.store.lifecycle` (record, fold or open,
resolve, acknowledge, mute), :mod:`~tasklens.store.outbox` (claims, leases, marks, send slots, escalation, replay),
:mod:`~tasklens.store.reads` (UI, CLI, reconciler and health reads) and :mod:`~tasklens.store.retention` (prune,
optimize); :mod:`~tasklens.store.rows` converts between values and rows. :class:`Store` is all of them on one
database; the migrations stay under ``tasklens/migrations``.
"""

from __future__ import annotations

import os
import socket
import threading

from tasklens import config
from tasklens.exceptions import StoreError
from tasklens.store.engine import DEFAULT_TIMEOUT_S, MIGRATION_TIMEOUT_S, MIGRATIONS_DIR
from tasklens.store.lifecycle import AlertLifecycle, RecordResult
from tasklens.store.outbox import ClaimedDelivery, MarkResult, Outbox
from tasklens.store.reads import Reads
from tasklens.store.retention import Retention
from tasklens.store.schema import (
    DELIVERY_STATES,
    FAILURE_EVENTS,
    HEAD_REVISION,
    MAX_ERROR,
    MAX_EXCEPTION_MESSAGE,
    MAX_SUMMARY,
    MAX_TITLE,
    TERMINAL_EVENTS,
    VERSION_TABLE,
    alerts_table,
    channel_slots_table,
    deliveries_table,
    events_table,
    leases_table,
    meta_table,
    metadata,
    occurrences_table,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DELIVERY_STATES",
    "FAILURE_EVENTS",
    "HEAD_REVISION",
    "MAX_ERROR",
    "MAX_EXCEPTION_MESSAGE",
    "MAX_SUMMARY",
    "MAX_TITLE",
    "MIGRATIONS_DIR",
    "MIGRATION_TIMEOUT_S",
    "TERMINAL_EVENTS",
    "VERSION_TABLE",
    "ClaimedDelivery",
    "MarkResult",
    "RecordResult",
    "Store",
    "alerts_table",
    "channel_slots_table",
    "deliveries_table",
    "events_table",
    "get_store",
    "leases_table",
    "meta_table",
    "metadata",
    "occurrences_table",
    "reset_stores",
    "worker_name",
]


class Store(AlertLifecycle, Outbox, Reads, Retention):
    """The alert store. Thread-safe; one per process via :func:`get_store`.

    ``clock`` returns the current aware UTC datetime (tests inject a fake one).
    """


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

"""Keeping the store small: pruning what retention no longer needs, and the query planner's statistics."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from tasklens.alerts import Status
from tasklens.store.engine import StoreEngine
from tasklens.store.schema import UNRESOLVED, alerts_table, deliveries_table, events_table, occurrences_table

__all__ = ["Retention"]


class Retention(StoreEngine):
    """Housekeeping on :class:`~tasklens.store.Store` (the dispatcher runs it, ``retention_days``)."""

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
        unresolved = sa.select(a.id).where(a.status.in_(UNRESOLVED))
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

"""Reconciler: report task attempts that ended failed / up_for_retry without any tasklens event.

When only the task process is killed (SIGKILL, the OOM killer), its supervisor reports the
failure through the execution API and no callback or listener runs anywhere. The reconciler
reads Airflow's metadata DB (it runs in the api-server, where that is allowed), finds attempts
that ended in a failure state with no terminal event in the tasklens store, and raises a
``killed`` event for each. That event then takes the normal path: logs, metrics, rules, store.

Several reconcilers (api-server workers, replicas) may run at once: the store records one
terminal failure event per attempt, and whichever process inserts it first raises the alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from tasklens import config, events, pipeline

__all__ = ["KILLED_REASON", "Reconciler", "reconcile_once", "start_background_reconciler", "stop_background_reconciler"]

log = logging.getLogger(__name__)

KILLED_REASON = (
    "the task process ended without reporting (killed by a signal such as SIGKILL, the OOM killer, or a crash); "
    "see the task log"
)
DEFAULT_LOOKBACK = timedelta(hours=6)
FAILURE_STATES = ("failed", "up_for_retry")


def _ended_attempts(since: datetime, until: datetime) -> list[Any]:
    """Task attempts that ended in a failure state between ``since`` and ``until``, newest tries and history."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: list[Any] = []
    with create_session() as session:
        for model in (TaskInstance, TaskInstanceHistory):
            query = select(model).where(
                model.state.in_(FAILURE_STATES), model.end_date >= since, model.end_date <= until
            )
            found.extend(session.scalars(query).all())
        for row in found:
            session.expunge(row)
    return found


def _attempt_key(row: Any) -> tuple[str, str, str, int, int]:
    map_index = -1 if row.map_index is None else int(row.map_index)
    return (row.dag_id, row.task_id, row.run_id, map_index, int(row.try_number or 1))


def _killed_event(row: Any) -> events.TaskEvent:
    state = events.state_name(row.state)
    event = events.from_task_instance(
        "killed", row, previous_state="running", source="reconciler", reason=KILLED_REASON
    )
    # Keep Airflow's own verdict: a retry is still scheduled when the state is up_for_retry.
    return events.TaskEvent.from_dict({**event.to_dict(), "state": state, "end_date": event.end_date})


def unreported(rows: Iterable[Any], reported: set[tuple[str, str, str, int, int]]) -> list[Any]:
    """Rows whose attempt has no terminal failure event in the store (one per attempt)."""
    seen: set[tuple[str, str, str, int, int]] = set()
    result = []
    for row in rows:
        key = _attempt_key(row)
        if key in reported or key in seen:
            continue
        seen.add(key)
        result.append(row)
    return result


def reconcile_once(
    *, now: datetime | None = None, grace: timedelta | None = None, lookback: timedelta = DEFAULT_LOOKBACK
) -> int:
    """One pass; returns how many ``killed`` events were raised. Raises on store/DB errors (callers isolate).

    ``grace`` (``[tasklens] reconcile_grace_s``): a task process reports its own failure shortly after Airflow
    records the state; attempts that ended more recently than this are left for the next pass.
    """
    from tasklens import store

    if not config.enabled():
        return 0  # with tasklens off nothing reports, and every failure would look killed
    now = now or datetime.now(timezone.utc)
    grace = grace if grace is not None else timedelta(seconds=config.reconcile_grace_s())
    # Reports spooled while the store was away come first: they are the tasks' own words, not kills.
    pipeline.ingest_spool()
    alert_store = store.get_store()
    # Never look before the store existed: older failures predate tasklens and are not "killed".
    watching_since = alert_store.watching_since() or now
    since, until = max(now - lookback, watching_since), now - grace
    if since >= until:
        return 0
    rows = _ended_attempts(since, until)
    if not rows:
        return 0
    reported = alert_store.reported_failure_attempts(since - lookback)
    raised = 0
    for row in unreported(rows, reported):
        event = _killed_event(row)
        pipeline.handle(event)
        raised += 1
    return raised


class Reconciler(threading.Thread):
    """Background thread running :func:`reconcile_once` every ``[tasklens] reconcile_interval_s``."""

    def __init__(self, interval_s: float | None = None) -> None:
        super().__init__(name="tasklens-reconciler", daemon=True)
        self.interval_s = interval_s if interval_s is not None else config.reconcile_interval_s()
        self._stop_event = threading.Event()
        self.passes = 0
        self.last_error: str | None = None

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                reconcile_once()
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                pipeline.run_stage("reconcile", _reraise, exc)
            self.passes += 1

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)


def _reraise(exc: BaseException) -> None:
    raise exc


_background: Reconciler | None = None
_lock = threading.Lock()


def start_background_reconciler() -> Reconciler | None:
    """Start the reconciler once per process (the api-server app lifespan calls this)."""
    global _background
    if not config.reconcile_enabled():
        return None
    with _lock:
        if _background is None or not _background.is_alive():
            _background = Reconciler()
            _background.start()
        return _background


def stop_background_reconciler() -> None:
    global _background
    with _lock:
        if _background is not None:
            _background.stop()
            _background = None

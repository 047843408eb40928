"""The in-flight checks' reads of Airflow's metadata DB: columns only, each on an index Airflow 3.3.2 has.

* attempts in flight: ``task_instance`` by state (``ti_state``);
* a task's recent successes: ``ti_state_lkp`` (dag_id, task_id, run_id, state), newest first, bounded;
* how an attempt ended: its TI row (``ti_state_lkp``), or its archived try (the history table's unique key).

Airflow's ORM loads only in the api-server (task processes may not touch the metadata DB), so each function
imports it locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from tasklens.foresight.history import Sample
from tasklens.foresight.overrun import Attempt

__all__ = [
    "HISTORY_SIZE",
    "attempt_end",
    "attempts_in_flight",
    "component_heartbeats",
    "dag_structure",
    "dag_tags",
    "known_dag_ids",
    "overdue_dags",
    "run_end",
    "run_first_start",
    "run_tasks",
    "runs_in_flight",
    "success_history",
    "unstarted_runs",
]

#: Successes of a task read for its baseline: enough for an hour-of-week band of daily runs over ~6 months.
HISTORY_SIZE = 200
_WAITING = ("queued", "scheduled")


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def attempts_in_flight(session: Any, *, waiting: bool) -> list[Attempt]:
    """Running attempts, plus queued / scheduled ones when ``waiting`` (``since`` = when each entered its state)."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    ti = TaskInstance.__table__.c
    states = ("running", *_WAITING) if waiting else ("running",)
    rows = session.execute(
        sa.select(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number, ti.state, ti.start_date,
                  ti.queued_dttm, ti.scheduled_dttm, ti.operator, ti.pool, ti.queue, ti.hostname)
        .where(ti.state.in_(states))
    ).all()
    attempts = []
    for row in rows:
        since = {"running": row.start_date, "queued": row.queued_dttm, "scheduled": row.scheduled_dttm}[row.state]
        if since is None:
            continue
        attempts.append(Attempt(
            dag_id=row.dag_id, task_id=row.task_id, run_id=row.run_id,
            map_index=-1 if row.map_index is None else int(row.map_index), try_number=int(row.try_number or 1),
            state=str(row.state), since=_aware(since) or since, operator=row.operator, pool=row.pool,
            queue=row.queue, hostname=row.hostname,
        ))
    return attempts


def success_history(session: Any, dag_id: str, task_id: str, *, limit: int = HISTORY_SIZE) -> list[Sample]:
    """The task's latest successful attempts (every map index), newest first."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    ti = TaskInstance.__table__.c
    rows = session.execute(
        sa.select(ti.start_date, ti.duration, ti.queued_dttm)
        .where(ti.dag_id == dag_id, ti.task_id == task_id, ti.state == "success", ti.duration.is_not(None))
        .order_by(ti.end_date.desc())
        .limit(limit)
    ).all()
    return [Sample(start=_aware(row.start_date), duration_s=float(row.duration), wait_s=_wait(row)) for row in rows]


def _wait(row: Any) -> float | None:
    start, queued = _aware(row.start_date), _aware(row.queued_dttm)
    if start is None or queued is None:
        return None
    return max((start - queued).total_seconds(), 0.0)


def attempt_end(session: Any, dag_id: str, task_id: str, run_id: str, map_index: int,
                try_number: int) -> tuple[str | None, float | None, datetime | None]:
    """(state, duration_s, end_date) of one attempt: the TI row while it is the current try, else its archived
    try. State None when neither has it (the run was deleted)."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server
    from airflow.models.taskinstancehistory import TaskInstanceHistory  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    for table in (TaskInstance.__table__, TaskInstanceHistory.__table__):
        c = table.c
        row = session.execute(
            sa.select(c.state, c.duration, c.end_date).where(
                c.dag_id == dag_id, c.task_id == task_id, c.run_id == run_id, c.map_index == map_index,
                c.try_number == try_number,
            )
        ).first()
        if row is not None:
            return (None if row.state is None else str(row.state), row.duration, _aware(row.end_date))
    return (None, None, None)



def runs_in_flight(session: Any) -> list[Any]:
    """Running DAG runs (``idx_dag_run_running_dags``): dag_id, run_id, run_after, start_date, data_interval_end."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    dr = DagRun.__table__.c
    return list(session.execute(
        sa.select(dr.dag_id, dr.run_id, dr.run_after, dr.start_date, dr.data_interval_end).where(dr.state == "running")
    ).all())


def run_end(session: Any, dag_id: str, run_id: str) -> tuple[str | None, datetime | None]:
    """(state, end_date) of one DAG run (its unique dag_id, run_id key); (None, None) when it is gone."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    dr = DagRun.__table__.c
    row = session.execute(sa.select(dr.state, dr.end_date).where(dr.dag_id == dag_id, dr.run_id == run_id)).first()
    return (None, None) if row is None else (str(row.state), _aware(row.end_date))


def run_first_start(session: Any, dag_id: str, run_id: str) -> datetime | None:
    """When the run's first task instance started (``ti_dag_run``); None when none has."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    ti = TaskInstance.__table__.c
    started = session.scalar(sa.select(sa.func.min(ti.start_date)).where(ti.dag_id == dag_id, ti.run_id == run_id))
    return _aware(started)


def dag_tags(session: Any, dag_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The tags of each DAG (the ``dag_tag`` table's (name, dag_id) key)."""
    from airflow.models.dag import DagTag  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    if not dag_ids:
        return {}
    tag = DagTag.__table__.c
    tags: dict[str, list[str]] = {}
    for dag_id, name in session.execute(sa.select(tag.dag_id, tag.name).where(tag.dag_id.in_(list(dag_ids)))):
        tags.setdefault(dag_id, []).append(name)
    return {dag_id: tuple(sorted(names)) for dag_id, names in tags.items()}


def run_tasks(session: Any, dag_id: str, run_id: str) -> list[Any]:
    """Every task instance of one run (``ti_dag_run``): task_id, map_index, state, start_date, queued_dttm."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    ti = TaskInstance.__table__.c
    return list(session.execute(
        sa.select(ti.task_id, ti.map_index, ti.state, ti.start_date, ti.queued_dttm).where(
            ti.dag_id == dag_id, ti.run_id == run_id
        )
    ).all())


def dag_structure(session: Any, dag_id: str) -> dict[str, tuple[str, ...]] | None:
    """Each task id of the DAG's latest serialized version with its upstream task ids; None when not serialized."""
    from airflow.models.serialized_dag import SerializedDagModel  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    dag = SerializedDagModel.get_dag(dag_id, session=session)
    if dag is None:
        return None
    return {task.task_id: tuple(sorted(task.upstream_task_ids)) for task in dag.tasks}


def known_dag_ids(session: Any) -> list[str]:
    """Every DAG id Airflow knows (the ``dag`` table's primary key)."""
    from airflow.models.dag import DagModel  # noqa: PLC0415 - Airflow's ORM loads only where the metadata DB is read

    return [str(dag_id) for dag_id in session.scalars(sa.select(DagModel.dag_id))]


def unstarted_runs(session: Any, due_before: datetime) -> list[Any]:
    """Scheduled runs due before ``due_before`` still queued, or running with no task instance started yet
    (``idx_dag_run_queued_dags`` / ``idx_dag_run_running_dags``, then ``ti_dag_run`` per run): dag_id, run_id,
    run_after."""
    from airflow.models.dagrun import DagRun  # noqa: PLC0415 - Airflow's ORM loads only in the api-server
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    dr = DagRun.__table__.c
    ti = TaskInstance.__table__.c
    started = sa.exists().where(ti.dag_id == dr.dag_id, ti.run_id == dr.run_id, ti.start_date.is_not(None))
    return list(session.execute(
        sa.select(dr.dag_id, dr.run_id, dr.run_after).where(
            dr.state.in_(("queued", "running")), dr.run_type == "scheduled", dr.run_after < due_before, ~started
        )
    ).all())


def overdue_dags(session: Any, due_before: datetime) -> list[Any]:
    """Active, unpaused DAGs whose next run should have been created before ``due_before``: dag_id,
    next_dagrun_create_after."""
    from airflow.models.dag import DagModel  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    dag = DagModel.__table__.c
    return list(session.execute(
        sa.select(dag.dag_id, dag.next_dagrun_create_after).where(
            dag.is_paused.is_(False), dag.is_stale.is_(False), dag.next_dagrun_create_after < due_before
        )
    ).all())


def component_heartbeats(session: Any, job_types: Sequence[str]) -> list[Any]:
    """The newest heartbeat of each component type and the host it came from (``job_type_heart``):
    job_type, latest_heartbeat, hostname."""
    from airflow.jobs.job import Job  # noqa: PLC0415 - Airflow's ORM loads only in the api-server

    job = Job.__table__.c
    per_host = session.execute(
        sa.select(job.job_type, job.hostname, sa.func.max(job.latest_heartbeat).label("latest_heartbeat"))
        .where(job.job_type.in_(list(job_types)))
        .group_by(job.job_type, job.hostname)
    ).all()
    newest: dict[str, Any] = {}
    for row in per_host:
        if row.latest_heartbeat is None:
            continue
        if row.job_type not in newest or row.latest_heartbeat > newest[row.job_type].latest_heartbeat:
            newest[row.job_type] = row
    return list(newest.values())

"""Upstream cascades, attributed: what a failure stopped from running, named in its alert.

Tasks that end ``upstream_failed`` never run, so Airflow calls no listener and tasklens raises no alert of their
own. Right before an alert goes out, the dispatcher (in the api-server, which may read Airflow's metadata
database) adds to it:

- ``data["upstream_failed"]``: the tasks of the same DAG run downstream of the failed task that ended
  ``upstream_failed`` (at most :data:`MAX_LISTED`, with ``data["upstream_failed_count"]``);
- ``data["will_not_run"]``: the asset-triggered DAGs scheduled on an asset that the failed task or those tasks
  would have produced ("lakehouse_datamart and lakehouse_ml will not run").

The scheduler marks a failed task's downstream ``upstream_failed`` one level per loop, a second or so after the
failure: until those tasks have settled (or ``[tasklens] cascade_wait_s`` after the alert was queued) the
dispatcher holds the message, so it names them.

Never raises: without Airflow's database (``tasklens dispatch`` somewhere else, a test) alerts go out as they are.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from tasklens._once import WarnOnce
from tasklens.alerts import AlertKind, AlertSnapshot

__all__ = ["MAX_LISTED", "Attribution", "attribute"]

log = logging.getLogger(__name__)
_warnings = WarnOnce(log)
MAX_LISTED = 20
_FAILURE_KINDS = frozenset({AlertKind.FAILURE, AlertKind.KILLED})
#: Task states after which a task will not turn ``upstream_failed`` any more.
_SETTLED = frozenset({"success", "failed", "upstream_failed", "skipped", "removed", "running", "deferred",
                      "up_for_retry", "up_for_reschedule", "restarting"})


@dataclasses.dataclass(frozen=True)
class Attribution:
    """The items with their cascades; ``settled`` is False while a failure's downstream may still change."""

    items: tuple[AlertSnapshot, ...]
    settled: bool = True


def attribute(items: Sequence[AlertSnapshot]) -> Attribution:
    """``items`` with their cascades added (failure alerts only). Never raises."""
    if not any(_attributable(item) for item in items):
        return Attribution(tuple(items))
    try:
        return _attributed(items)
    except Exception:
        if _warnings.first("cascades"):
            log.warning("tasklens: could not read Airflow's metadata DB for upstream_failed tasks; alerts go out "
                        "without them", exc_info=True)
        return Attribution(tuple(items))


def _attributable(item: AlertSnapshot) -> bool:
    alert = item.alert
    return alert.kind in _FAILURE_KINDS and bool(alert.task_id and alert.run_id)


def _attributed(items: Sequence[AlertSnapshot]) -> Attribution:
    # Airflow's ORM loads only in the api-server's dispatcher, never in a task.
    import sqlalchemy as sa  # noqa: PLC0415 - see above
    from airflow.models.asset import DagScheduleAssetReference, TaskOutletAssetReference  # noqa: PLC0415 - see above
    from airflow.models.serialized_dag import SerializedDagModel  # noqa: PLC0415 - see above
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - see above
    from airflow.utils.session import create_session  # noqa: PLC0415 - see above

    out = []
    settled = True
    with create_session() as session:
        for item in items:
            if not _attributable(item):
                out.append(item)
                continue
            alert = item.alert
            dag = SerializedDagModel.get_dag(alert.dag_id, session=session)
            downstream: set[str] = set()
            if dag is not None and alert.task_id in dag.task_dict:
                downstream = set(dag.get_task(alert.task_id).get_flat_relative_ids(upstream=False))
            states = dict(session.execute(
                sa.select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_id == alert.dag_id, TaskInstance.run_id == alert.run_id,
                    TaskInstance.task_id.in_(downstream),
                )
            ).tuples().all())
            settled = settled and all(str(state) in _SETTLED for state in states.values())
            not_run = sorted(task for task, state in states.items() if str(state) == "upstream_failed")
            producers = [alert.task_id, *not_run]
            assets = sa.select(TaskOutletAssetReference.asset_id).where(
                TaskOutletAssetReference.dag_id == alert.dag_id, TaskOutletAssetReference.task_id.in_(producers))
            consumers = sorted(set(session.execute(
                sa.select(DagScheduleAssetReference.dag_id).where(
                    DagScheduleAssetReference.asset_id.in_(assets), DagScheduleAssetReference.dag_id != alert.dag_id)
            ).scalars()))
            out.append(_with(item, not_run, consumers))
    return Attribution(tuple(out), settled)


def _with(item: AlertSnapshot, not_run: list[str], consumers: list[str]) -> AlertSnapshot:
    if not not_run and not consumers:
        return item
    data: dict[str, Any] = dict(item.alert.data or {})
    if not_run:
        data.update(upstream_failed=not_run[:MAX_LISTED], upstream_failed_count=len(not_run))
    if consumers:
        data["will_not_run"] = consumers[:MAX_LISTED]
    return dataclasses.replace(item, alert=dataclasses.replace(item.alert, data=data))

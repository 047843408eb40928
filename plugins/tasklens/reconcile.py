"""Reconciler: report task attempts that ended failed / up_for_retry without any tasklens report.

It runs in the api-server (which may read Airflow's metadata DB), finds attempts that ended in a failure state with
no failure event in the tasklens store, and decides from evidence what happened to each:

* **killed**: the task process died before it reported its failure (SIGKILL, the OOM killer, a crash).
* **failure report lost**: the task failed and knew it (or nothing shows it died), but its report never reached the
  store: a store write that failed, or a listener that never ran because a slow ``on_retry_callback`` /
  ``on_failure_callback`` used up Airflow's ``[core] task_success_overtime`` and the supervisor stopped the process.
  It raises the normal ``failed`` / ``up_for_retry`` event, with the real exception when the task log has it.

The evidence is the task log, read with Airflow's own log reader (local file, worker log server or remote logging,
as the UI reads it). Airflow 3.3.2 records a death nowhere else: when the task process exits without having reported
a state, the supervisor sends ``PATCH /execution/task-instances/{id}/state`` with ``failed`` (``finish()``; with
retries left it sends nothing and the scheduler's executor-event check fails the attempt), the API adds an audit
``log`` row with the bare state name, and no TI / TI-history column, note or executor event keeps the exit code or
signal. Only the task log gets it, written by the supervisor before the state is sent
(``ActivitySubprocess._check_subprocess_exit`` in ``airflow/sdk/execution_time/supervisor.py``)::

    self.process_log.log(level, "Process terminated by signal. ...", signal=int(self._exit_code), signal_name=name)
    self.process_log.critical(SIGSEGV_MESSAGE)                       # SIGSEGV
    self.process_log.warning("Process exited abnormally", exit_code=self._exit_code)

A process the supervisor stops itself (``task_success_overtime`` reached: ``kill(SIGTERM, force=True)``, then
SIGKILL) exits with the signal it expected, which ``_check_subprocess_exit`` does not log: a slow report is never
taken for a kill. The task runner logs ``"Task failed with exception"`` (with ``error_detail``) or ``"Task exited"``
before it reports a failure (``task_runner._run_task_and_map_outcome``); a death after that line is a lost report.

Timing: a death is judged on the first pass ``reconcile_grace_s`` after the attempt ended (the evidence is in the log
before the state is in the DB). Without evidence of a death, a ``failed`` attempt is judged at once too (the
supervisor sends ``failed`` only after the process exited, listeners included), while an ``up_for_retry`` attempt
(sent before callbacks and listeners run) waits ``task_success_overtime`` plus the supervisor's 10 s SIGTERM/SIGKILL
escalation for a report that may still come.

One reconciler runs across api-server workers and replicas: each pass first takes or renews the ``reconciler`` lease
in the tasklens store (:class:`LeaderLease`). Overlapping passes still count each attempt once: the store records one
failure outcome per attempt and only that first report is alerted and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tasklens import config, events, pipeline, rules, store
from tasklens.background import BackgroundLoop
from tasklens.foresight import checks as foresight
from tasklens.store import leases_table

__all__ = [
    "KILLED_REASON",
    "LOST_REPORT_REASON",
    "Evidence",
    "LeaderLease",
    "PassResult",
    "Reconciler",
    "ended_attempts_query",
    "read_evidence",
    "reconcile_once",
    "settle_successes",
    "start_background_reconciler",
    "stop_background_reconciler",
    "succeeded_attempts_query",
]

log = logging.getLogger(__name__)

KILLED_REASON = "the task process ended ({cause}) before it reported its failure; see the task log"
LOST_REPORT_REASON = (
    "the failure report was lost: the task failed, but its tasklens report never reached the store ({cause})"
)
DEFAULT_LOOKBACK = timedelta(hours=6)
FAILURE_STATES = ("failed", "up_for_retry")
#: The supervisor stops a task past ``task_success_overtime`` with SIGTERM, then SIGKILL 5 s later, then waits 5 s.
OVERTIME_ESCALATION_S = 10.0
#: An attempt's last heartbeat precedes its end by at most the overtime, the escalation and one heartbeat interval
#: (about 40 s at Airflow's defaults); the rest covers clock skew between workers and the api-server.
HEARTBEAT_SLACK = timedelta(minutes=10)
#: Passes after the first look back this much before the previous pass's end: late rows (a worker's clock behind
#: the api-server's) and up_for_retry attempts still waiting for their report are seen again.
REVISIT = timedelta(minutes=5)
LEASE_NAME = "reconciler"
#: Reading one task log stops after this long (a huge log, a slow worker log server): no evidence then.
LOG_READ_BUDGET_S = 5.0

_SIGNAL_EVENT = "Process terminated by signal"
_SIGSEGV_EVENT = "Received SIGSEGV"
_ABNORMAL_EXIT_EVENT = "Process exited abnormally"
_TASK_FAILED_EVENTS = ("Task failed with exception", "Task exited")

AttemptKey = tuple[str, str, str, int, int]


# -- the metadata DB query ------------------------------------------------------------------------------------------


def ended_attempts_query(since: datetime, until: datetime) -> Any:
    """The one query of a pass: attempts (TI and TI history) that ended in a failure state in ``[since, until]``.

    Columns only, no ORM objects. Airflow 3.3.2 indexes neither ``end_date`` (task_instance, task_instance_history)
    nor ``state`` on the history table, so filtering on them alone scans every failed TI (``ti_state``) and the whole
    history table. ``ti_heartbeat`` (``last_heartbeat_at``) bounds it: every attempt that ran heartbeats from its
    start (``ti_run``) until it stops, never more than :data:`HEARTBEAT_SLACK` before its end, and the TI row's
    heartbeat only moves forward with later tries. So a range scan of recently heartbeating TIs finds every recent
    attempt, and each one's history rows come through the history table's unique (dag_id, task_id, run_id,
    map_index, try_number) index.
    """
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler
    from airflow.models.taskinstancehistory import TaskInstanceHistory  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    ti = TaskInstance.__table__
    tih = TaskInstanceHistory.__table__
    heartbeat_since = since - HEARTBEAT_SLACK
    # Only a TI past its first try has archived tries: a few percent of the recent ones, so the history rows are
    # reached by that many lookups on its unique index, however large the history table grows.
    recent = sa.select(ti.c.dag_id, ti.c.task_id, ti.c.run_id, ti.c.map_index).where(
        ti.c.last_heartbeat_at >= heartbeat_since, ti.c.try_number > 1
    )
    current = sa.select(
        ti.c.dag_id, ti.c.task_id, ti.c.run_id, ti.c.map_index, ti.c.try_number, ti.c.state, ti.c.end_date
    ).where(
        ti.c.last_heartbeat_at >= heartbeat_since,
        ti.c.state.in_(FAILURE_STATES),
        ti.c.end_date >= since,
        ti.c.end_date <= until,
    )
    recent_keys = recent.subquery("recent")
    history = (
        sa.select(
            tih.c.dag_id, tih.c.task_id, tih.c.run_id, tih.c.map_index, tih.c.try_number, tih.c.state, tih.c.end_date
        )
        .join(
            recent_keys,
            sa.and_(
                tih.c.dag_id == recent_keys.c.dag_id,
                tih.c.task_id == recent_keys.c.task_id,
                tih.c.run_id == recent_keys.c.run_id,
                tih.c.map_index == recent_keys.c.map_index,
            ),
        )
        .where(tih.c.state.in_(FAILURE_STATES), tih.c.end_date >= since, tih.c.end_date <= until)
    )
    return sa.union_all(current, history)


def _ended_attempts(since: datetime, until: datetime) -> list[Any]:
    # Airflow's session is for the api-server only (task processes may not touch the metadata DB).
    from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    with create_session() as session:
        return list(session.execute(ended_attempts_query(since, until)).all())


def _attempt_key(row: Any) -> AttemptKey:
    map_index = -1 if row.map_index is None else int(row.map_index)
    return (row.dag_id, row.task_id, row.run_id, map_index, int(row.try_number or 1))


def unreported(rows: Iterable[Any], reported: set[AttemptKey]) -> list[Any]:
    """Rows whose attempt has no failure event in the store, one per attempt."""
    seen: set[AttemptKey] = set()
    result = []
    for row in rows:
        key = _attempt_key(row)
        if key in reported or key in seen:
            continue
        seen.add(key)
        result.append(row)
    return result


# -- evidence from the task log -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What an attempt's task log says about how it ended."""

    readable: bool = False  # any line of the attempt's own log was read
    death: str | None = None  # how the process died, from the supervisor ("SIGKILL, signal 9, ..."), else None
    task_saw_failure: bool = False  # the task runner logged the failure before reporting it
    exception_type: str | None = None
    exception_message: str | None = None

    @property
    def killed(self) -> bool:
        """The process died before the task runner got to report a failure."""
        return self.death is not None and not self.task_saw_failure


def _field(message: Any, name: str) -> Any:
    extra = getattr(message, "model_extra", None) or {}
    return extra.get(name, getattr(message, name, None)) if isinstance(extra, Mapping) else getattr(message, name, None)


def _death(message: Any, event: str) -> str | None:
    if event.startswith(_SIGNAL_EVENT):
        name, number = _field(message, "signal_name"), _field(message, "signal")
        if name is None:
            return None  # not the supervisor's record (it always names the signal)
        hint = ", often the out-of-memory killer" if name == "SIGKILL" else ""
        try:
            return f"{name}, signal {abs(int(number))}{hint}"
        except (TypeError, ValueError):
            return str(name)
    if _SIGSEGV_EVENT in event and _field(message, "level") == "critical":
        return "SIGSEGV, a segmentation fault"
    if event.startswith(_ABNORMAL_EXIT_EVENT) and _field(message, "exit_code") is not None:
        return f"exit code {_field(message, 'exit_code')}"
    return None


def evidence_from_log(messages: Iterable[Any], *, budget_s: float = LOG_READ_BUDGET_S) -> Evidence:
    """Read the supervisor's and the task runner's records out of an attempt's structured log messages."""
    deadline = time.monotonic() + budget_s
    readable = False
    death: str | None = None
    saw_failure = False
    exc_type: str | None = None
    exc_message: str | None = None
    for message in messages:
        event = str(getattr(message, "event", "") or "")
        if getattr(message, "timestamp", None) is not None:
            readable = True  # the reader's own notes ("No logs available", sources) carry no timestamp
        if event in _TASK_FAILED_EVENTS:
            saw_failure = True
            detail = _field(message, "error_detail")
            if isinstance(detail, list) and detail and isinstance(detail[0], Mapping):  # [raised, its causes...]
                exc_type = str(detail[0].get("exc_type") or "") or exc_type
                exc_message = str(detail[0].get("exc_value") or "") or exc_message
            elif event == "Task exited":
                exc_type, exc_message = "SystemExit", str(_field(message, "exit_code"))
        else:
            death = _death(message, event) or death
        if time.monotonic() > deadline:
            break
    return Evidence(readable, death, saw_failure, exc_type, exc_message)


def read_evidence(ti: Any, try_number: int) -> Evidence:
    """The evidence in one attempt's log, read with Airflow's configured task log reader (as the UI does)."""
    # Airflow's log reader is for the api-server only.
    from airflow.utils.log.log_reader import TaskLogReader  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    reader = TaskLogReader()
    if not reader.supports_read:
        return Evidence()
    metadata: Any = {}  # a first read: the whole log of the attempt
    messages, _ = reader.read_log_chunks(ti, try_number, metadata)
    return evidence_from_log(messages)


def _load_attempt(session: Any, key: AttemptKey) -> Any:
    """The attempt's TaskInstance (or, for an earlier try, TaskInstanceHistory) row with its dag_run."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler
    from airflow.models.taskinstancehistory import TaskInstanceHistory  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler
    from sqlalchemy.orm import joinedload  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    dag_id, task_id, run_id, map_index, try_number = key
    for model in (TaskInstance, TaskInstanceHistory):
        found = session.scalars(
            sa.select(model)
            .where(
                model.dag_id == dag_id,
                model.task_id == task_id,
                model.run_id == run_id,
                model.map_index == map_index,
                model.try_number == try_number,
            )
            .options(joinedload(model.dag_run))
        ).first()
        if found is not None:
            return found
    return None


def _attempt_state(session: Any, key: AttemptKey, recorded: str) -> str:
    """How the attempt ended. Airflow archives a retried try in task_instance_history as ``failed`` (``record_ti``
    runs before the ``up_for_retry`` update); the audit ``log`` row the execution API adds with each state change
    keeps ``up_for_retry`` (one lookup on its ``idx_log_task_instance`` index)."""
    if recorded != "failed":
        return recorded
    from airflow.models.log import Log  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    dag_id, task_id, run_id, map_index, try_number = key
    logged = session.scalar(
        sa.select(Log.event)
        .where(
            Log.dag_id == dag_id,
            Log.task_id == task_id,
            Log.run_id == run_id,
            Log.map_index == map_index,
            Log.try_number == try_number,
            Log.event.in_(FAILURE_STATES),
        )
        .order_by(Log.id.desc())
        .limit(1)
    )
    return str(logged) if logged else recorded


# -- verdicts -------------------------------------------------------------------------------------------------------


def _task_success_overtime_s() -> float:
    # Airflow's config object: the api-server has it loaded already.
    from airflow.configuration import conf  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    return conf.getfloat("core", "task_success_overtime", fallback=20.0)


def _report_deadline(state: str, end_date: datetime, grace: timedelta) -> datetime:
    """When a report of an attempt without evidence of a death can no longer come."""
    if state == "up_for_retry":  # sent before callbacks and listeners ran: they get the overtime, then a kill
        return end_date + grace + timedelta(seconds=_task_success_overtime_s() + OVERTIME_ESCALATION_S)
    return end_date + grace  # failed is sent after the process exited, listeners included


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def killed_event(ti: Any, state: str, evidence: Evidence) -> events.TaskEvent:
    """The ``killed`` event of an attempt whose process died before reporting; ``state`` is how Airflow ended it."""
    reason = KILLED_REASON.format(cause=evidence.death)
    event = events.from_task_instance("killed", ti, previous_state="running", source="reconciler", reason=reason)
    # A retry is still scheduled when the state is up_for_retry: the rule makes that a warning.
    return events.TaskEvent.from_dict({**event.to_dict(), "state": state})


def lost_report_event(ti: Any, state: str, evidence: Evidence) -> events.TaskEvent:
    """The normal ``failed`` / ``up_for_retry`` event (``state``) of an attempt whose own report never arrived."""
    if evidence.death is not None:
        cause = f"the process ended ({evidence.death}) after the task failed"
    elif not evidence.readable:
        cause = "the task log could not be read"
    else:
        cause = "a store write failed or the report ran out of [core] task_success_overtime"
    event = events.from_task_instance(
        state, ti, previous_state="running", source="reconciler", reason=LOST_REPORT_REASON.format(cause=cause)
    )
    fields: dict[str, Any] = {"state": state}
    if evidence.exception_type or evidence.exception_message:
        fields.update(exception_type=evidence.exception_type, exception_message=evidence.exception_message)
    return events.TaskEvent.from_dict({**event.to_dict(), **fields})


@dataclasses.dataclass
class PassResult:
    """What one :func:`reconcile_once` pass did."""

    killed: int = 0
    lost_reports: int = 0
    waiting: int = 0  # unreported attempts whose report may still come
    settled: int = 0  # successes that resolved alerts or faced the median-based duration rules
    until: datetime | None = None  # the newest end_date the pass looked at


# -- successes: resolves and median-based duration rules -------------------------------------------------------------

#: Durations of this many recent successes of a task make its history (the median duration rules).
HISTORY_SIZE = 50
#: Open alerts' tasks looked up per query (bounded IN lists).
_OPEN_TASKS_PER_QUERY = 500


def succeeded_attempts_query(since: datetime, until: datetime, tasks: Iterable[tuple[str, str]],
                             min_duration_s: float | None) -> Any:
    """Attempts that succeeded in ``[since, until]`` of ``tasks`` (dag_id, task_id), or that ran at least
    ``min_duration_s``. Bounded by the ``ti_heartbeat`` index like :func:`ended_attempts_query`."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    wanted: list[sa.ColumnElement[bool]] = []
    pairs = list(tasks)
    if pairs:
        wanted.append(sa.tuple_(TaskInstance.dag_id, TaskInstance.task_id).in_(pairs))
    if min_duration_s is not None:
        wanted.append(TaskInstance.duration >= min_duration_s)
    return sa.select(TaskInstance).where(
        TaskInstance.last_heartbeat_at >= since - HEARTBEAT_SLACK,
        TaskInstance.state == "success",
        TaskInstance.end_date >= since,
        TaskInstance.end_date <= until,
        sa.or_(*wanted),
    )


def _recent_success_durations(session: Any, ti: Any) -> tuple[float, ...]:
    """Durations of the task's latest successes before this one, newest first (mapped tasks pooled)."""
    from airflow.models.taskinstance import TaskInstance  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    rows = session.scalars(
        sa.select(TaskInstance.duration)
        .where(
            TaskInstance.dag_id == ti.dag_id,
            TaskInstance.task_id == ti.task_id,
            TaskInstance.state == "success",
            TaskInstance.run_id != ti.run_id,
            TaskInstance.duration.is_not(None),
        )
        .order_by(TaskInstance.end_date.desc())
        .limit(HISTORY_SIZE)
    )
    return tuple(float(value) for value in rows)


def settle_successes(alert_store: Any, since: datetime, until: datetime) -> int:
    """Successes Airflow recorded in ``[since, until]`` that matter to tasklens: those of tasks with an unresolved
    alert (they resolve it) and those long enough for a median-based duration rule (history from Airflow's own
    records). Task processes write nothing for a success; this is where it counts. Returns how many were settled."""
    from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    ruleset = config.ruleset()
    medians = [rule for rule in ruleset.rules_of_type("duration") if rule.enabled and rule.median_factor]
    min_duration = min((rule.min_duration_s for rule in medians), default=None)
    open_tasks = sorted(alert_store.unresolved_tasks())
    if not open_tasks and min_duration is None:
        return 0
    settled = 0
    chunks = [open_tasks[i : i + _OPEN_TASKS_PER_QUERY] for i in range(0, len(open_tasks), _OPEN_TASKS_PER_QUERY)]
    with create_session() as session:
        seen: set[AttemptKey] = set()
        for index, chunk in enumerate(chunks or [[]]):
            slow = min_duration if index == 0 else None  # the slow ones once, with the first chunk
            if not chunk and slow is None:
                continue
            for ti in session.scalars(succeeded_attempts_query(since, until, chunk, slow)):
                key = _attempt_key(ti)
                if key in seen:
                    continue
                seen.add(key)
                event = events.from_task_instance("success", ti, previous_state="running", source="reconciler")
                could_fire = any(
                    (event.duration_s or 0.0) >= rule.min_duration_s and rules.rule_condition(rule)(event)
                    for rule in medians
                )
                history = _recent_success_durations(session, ti) if could_fire else ()
                pipeline.record_settled_success(event, history)
                settled += 1
    return settled


def _judge(row: Any, now: datetime, grace: timedelta) -> events.TaskEvent | None:
    """The event an unreported attempt gets now, or None while its own report may still come."""
    from airflow.utils.session import create_session  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler

    key = _attempt_key(row)
    with create_session() as session:  # the log reader and the event read the ORM row inside its session
        ti = _load_attempt(session, key)
        if ti is None:
            return None
        try:
            evidence = read_evidence(ti, key[4])
        except Exception:
            log.warning("tasklens: could not read the task log of %s", key, exc_info=True)
            evidence = Evidence()
        state = _attempt_state(session, key, events.state_name(row.state) or "failed")
        if evidence.killed:
            return killed_event(ti, state, evidence)
        if evidence.death is None and now < _report_deadline(state, _aware(row.end_date), grace):
            return None
        return lost_report_event(ti, state, evidence)


def reconcile_once(
    *,
    now: datetime | None = None,
    grace: timedelta | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    since: datetime | None = None,
) -> PassResult:
    """One pass over attempts that ended since ``since`` (default: ``lookback`` ago). Raises on store/DB errors
    (callers isolate).

    ``grace`` (``[tasklens] reconcile_grace_s``): attempts that ended more recently are left for the next pass.
    """

    result = PassResult()
    if not config.enabled():
        return result  # with tasklens off nothing reports, and every failure would look unreported
    now = now or datetime.now(timezone.utc)
    grace = grace if grace is not None else timedelta(seconds=config.reconcile_grace_s())
    # Reports spooled while the store was away come first: they are the tasks' own words, not kills.
    pipeline.ingest_spool()
    alert_store = store.get_store()
    # Attempts still in flight (running too long, stuck waiting): isolated, so the checks below always run.
    pipeline.run_stage("foresight", foresight.run_checks, alert_store, now)
    # Never look before the store existed: older failures predate tasklens.
    watching_since = alert_store.watching_since() or now
    since = max(since or now - lookback, now - lookback, watching_since)
    until = now - grace
    if since >= until:
        return result
    result.until = until
    result.settled = settle_successes(alert_store, since, until)
    rows = _ended_attempts(since, until)
    if not rows:
        return result
    reported = alert_store.reported_failure_attempts(since - HEARTBEAT_SLACK)
    for row in unreported(rows, reported):
        event = _judge(row, now, grace)
        if event is None:
            result.waiting += 1
            continue
        pipeline.handle(event)
        if event.event == "killed":
            result.killed += 1
        else:
            result.lost_reports += 1
    return result


# -- one reconciler across processes --------------------------------------------------------------------------------


def _db_clock(dialect: str) -> Any:
    """The database's current time in epoch seconds, as a SQL expression (hosts' clocks may disagree)."""
    if dialect == "postgresql":
        return sa.literal_column("extract(epoch from clock_timestamp())", sa.Float)
    return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)


class LeaderLease:
    """A named lease in the tasklens store: one holder at a time, taken over once it expires (database clock)."""

    def __init__(self, alert_store: Any, name: str = LEASE_NAME, *, ttl_s: float, holder: str | None = None) -> None:
        self.store = alert_store
        self.name = name
        self.ttl_s = ttl_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def acquire(self) -> bool:
        """Take the lease, or renew it when held: True when this holder has it until ``ttl_s`` from now.

        One atomic upsert: it inserts the lease, or updates it only where this holder has it or it has expired.
        """

        dialect = self.store.dialect
        now = _db_clock(dialect)
        insert: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler
        else:
            from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415 - Airflow's ORM loads only in the api-server's reconciler
        lease = leases_table.c
        statement = insert(leases_table).values(name=self.name, holder=self.holder, expires_at=now + self.ttl_s)
        statement = statement.on_conflict_do_update(
            index_elements=[lease.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=sa.or_(lease.holder == self.holder, lease.expires_at < now),
        )
        with self.store.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    def release(self) -> None:
        """Give the lease up now (a clean shutdown): another process takes it on its next pass."""

        with self.store.engine.begin() as conn:
            conn.execute(
                leases_table.update()
                .where(leases_table.c.name == self.name, leases_table.c.holder == self.holder)
                .values(expires_at=0.0)
            )


class Reconciler:
    """The background reconciler: every ``[tasklens] reconcile_interval_s``, if it holds the lease, runs a pass.

    A new leader's first pass looks back the full lookback (6 h, never before the store existed); later passes
    look back only :data:`REVISIT` before the previous pass's end.
    """

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s if interval_s is not None else config.reconcile_interval_s()
        self._loop = BackgroundLoop("tasklens-reconciler", self._background_pass, interval_s=self.interval_s,
                                    wait_first=True)
        self._lease: LeaderLease | None = None
        self._covered_until: datetime | None = None
        self.passes = 0
        self.last_error: str | None = None

    def _lease_for(self, alert_store: Any) -> LeaderLease:
        if self._lease is None or self._lease.store is not alert_store:
            # Held across a few missed passes; a dead leader's lease is taken over after this.
            self._lease = LeaderLease(alert_store, ttl_s=max(3 * self.interval_s, 5.0))
        return self._lease

    def run_pass(self) -> PassResult | None:
        """One pass if this process leads; None when another process holds the lease. Raises on errors."""

        if not self._lease_for(store.get_store()).acquire():
            self._covered_until = None  # another process leads: catch up fully if this one leads again
            return None
        since = self._covered_until - REVISIT if self._covered_until else None
        result = reconcile_once(since=since)
        if result.until is not None:
            self._covered_until = result.until
        return result

    def _background_pass(self) -> None:
        try:
            self.run_pass()
            self.last_error = None
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            pipeline.run_stage("reconcile", _reraise, exc)
        self.passes += 1

    def start(self) -> None:
        self._loop.start()

    def is_alive(self) -> bool:
        return self._loop.running

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)
        if self._lease is not None:
            pipeline.run_stage("reconcile", self._lease.release)


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

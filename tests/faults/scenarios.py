"""Fault scenarios against a real Airflow stack: each injects one fault and returns a :class:`FaultOutcome`.

The tests in this folder assert on the outcome; ``benchmarks/faults.py`` runs the same scenarios and prints the
table. Expectations are recorded as violations rather than raised, so that the benchmark reports every column.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasklens.testing import SlackSink
from tests.faults.harness import (
    FaultOutcome,
    SqliteWriteLock,
    StallingProxy,
    count_per_needle,
    messages_naming,
    spool_records,
    wait_until,
    worst_wait_before_spooling,
)
from tests.integration.stack import AirflowStack, dags_test, migrate

DAGS = Path(__file__).parent / "dags"
FAILING_TASKS = ("fault_extract", "fault_transform", "fault_load")
EXPECTED_FAILURE_RUN = {**{task: ("failed", 1) for task in FAILING_TASKS}, "succeeds": ("success", 1)}
#: Scenario defaults: the fault lasts longer than Airflow's task_success_overtime (20 s), as the issue asks.
LOCK_HOLD_S = 60.0


def stack_env(slack: SlackSink, markers: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a fault-suite stack: Slack to ``slack``, a fast dispatcher, group_wait as shipped."""
    return {
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
        "TASKLENS_TEST_MARKERS": str(markers),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
        "AIRFLOW__TASKLENS__RECONCILE_INTERVAL_S": "2",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        **(extra or {}),
    }


def spool_dir(stack: AirflowStack) -> Path:
    return stack.home / "logs" / "tasklens" / "spool"


def _store(stack: AirflowStack) -> Any:
    from tasklens.store import Store

    url = stack.env.get("AIRFLOW__TASKLENS__STORE_URL") or f"sqlite:///{stack.home / 'tasklens.db'}"
    return Store(url, migrate=False)


def _task_log_text(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    root = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(path.read_text(errors="replace") for path in root.rglob("*.log")) if root.is_dir() else ""


def _tasks_changed(stack: AirflowStack, dag_id: str, run_id: str, expected: Mapping[str, tuple[str, int]]) -> int:
    actual = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in stack.task_instances(dag_id, run_id)}
    return sum(1 for task_id, want in expected.items() if actual.get(task_id) != want)


def _count_alert_messages(slack: SlackSink, needles: Mapping[str, str], outcome: FaultOutcome) -> None:
    """Each failure must be named by exactly one message: fewer is a lost alert, more a duplicate page."""
    texts = slack.texts()
    count_per_needle(texts, needles, outcome)
    outcome.messages_delivered = sum(1 for text in texts if any(needle in text for needle in needles.values()))


def _wait_for_messages(slack: SlackSink, needles: Mapping[str, str], timeout: float) -> float | None:
    started = time.monotonic()
    try:
        wait_until(lambda: all(messages_naming(slack.texts(), n) for n in needles.values()), timeout,
                   "messages for every failure")
    except TimeoutError:
        return None
    return time.monotonic() - started


def _check_failure_alerts(stack: AirflowStack, run_id: str, outcome: FaultOutcome) -> None:
    store = _store(stack)
    try:
        alerts = [a for a in store.list_alerts(dag_id="tl_fault_failures", limit=500) if a["run_id"] == run_id]
    finally:
        store.dispose()
    outcome.alerts_stored = len(alerts)
    by_task = {a["task_id"]: a for a in alerts}
    for task_id in FAILING_TASKS:
        alert = by_task.get(task_id)
        outcome.expect(alert is not None, f"no alert stored for {task_id}")
        if alert is not None:
            outcome.expect(alert["kind"] == "failure", f"{task_id} alerted as {alert['kind']}, not failure")
            outcome.expect(alert["occurrences"] == 1, f"{task_id} counted {alert['occurrences']} times")
    outcome.expect(len(alerts) == len(FAILING_TASKS), f"{len(alerts)} alerts for {len(FAILING_TASKS)} failures")


def _expect_each_failure_alerted_once(stack: AirflowStack, slack: SlackSink, run_id: str,
                                      outcome: FaultOutcome) -> None:
    """Once the fault is over: every failure messaged (time to the last one), stored, counted once, spool empty."""
    needles = {task: task for task in FAILING_TASKS}
    outcome.time_to_alert_s = _wait_for_messages(slack, needles, timeout=120)
    time.sleep(3)  # later dispatcher passes and spool ingestions must not add anything
    _count_alert_messages(slack, needles, outcome)
    _check_failure_alerts(stack, run_id, outcome)
    outcome.expect(not list(spool_dir(stack).glob("*.json")), "records left in the spool")


def _run_failures_during_fault(stack: AirflowStack, outcome: FaultOutcome) -> str:
    """Trigger the failing DAG and a control DAG while the fault is on; both must finish as without the fault."""
    run_id = stack.trigger("tl_fault_failures")
    control = stack.trigger("tl_fault_control")
    outcome.failures_injected = len(FAILING_TASKS)
    outcome.expect(stack.wait_for_run("tl_fault_failures", run_id, timeout=240) == "failed",
                   "the failing DAG run did not end failed")
    outcome.expect(stack.wait_for_run("tl_fault_control", control, timeout=240) == "success",
                   "the scheduler did not run the control DAG during the fault")
    outcome.tasks_changed = _tasks_changed(stack, "tl_fault_failures", run_id, EXPECTED_FAILURE_RUN)
    logs = _task_log_text(stack, "tl_fault_failures", run_id)
    outcome.expect("SIGTERM" not in logs, "a task process was SIGTERMed (tasklens held it past the overtime)")
    return run_id


def _spooled_failures(stack: AirflowStack, run_id: str) -> list[dict[str, Any]]:
    return [r for r in spool_records(spool_dir(stack))
            if r["op"] == "event" and r["payload"].get("run_id") == run_id and r["payload"].get("event") == "failed"]


def _at_least(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return records if len(records) >= count else None


def sqlite_store_locked(stack: AirflowStack, slack: SlackSink, *, hold_s: float = LOCK_HOLD_S) -> FaultOutcome:
    """Fault 1: another writer holds the SQLite store's lock for ``hold_s`` while tasks fail."""
    slack.messages.clear()
    outcome = FaultOutcome(f"SQLite store locked {hold_s:.0f} s")
    with SqliteWriteLock(stack.home / "tasklens.db") as lock:
        locked_at = time.monotonic()
        run_id = _run_failures_during_fault(stack, outcome)
        try:
            spooled = wait_until(lambda: _at_least(_spooled_failures(stack, run_id), len(FAILING_TASKS)), 60,
                                 "spooled failures")
        except TimeoutError:
            spooled = _spooled_failures(stack, run_id)
            outcome.violations.append(f"{len(spooled)} of {len(FAILING_TASKS)} failures spooled during the lock")
        outcome.worst_added_s = worst_wait_before_spooling(spooled)
        time.sleep(max(0.0, hold_s - (time.monotonic() - locked_at)))
        lock.release()
    _expect_each_failure_alerted_once(stack, slack, run_id, outcome)
    return outcome


def postgres_store_unreachable(stack: AirflowStack, slack: SlackSink, postgres: Any, proxy: StallingProxy,
                               *, mode: str, hold_s: float = 30.0) -> FaultOutcome:
    """Fault 2: the PostgreSQL store is stopped (``mode="stopped"``) or its port stops answering (``"stalled"``)."""
    outcome = FaultOutcome(f"PostgreSQL store {'stopped' if mode == 'stopped' else 'not answering'}")
    slack.messages.clear()
    start, end = (postgres.pause, postgres.resume) if mode == "stopped" else (proxy.stall, proxy.flow)
    start()
    began = time.monotonic()
    try:
        run_id = _run_failures_during_fault(stack, outcome)
        spooled = _spooled_failures(stack, run_id)
        outcome.expect(len(spooled) == len(FAILING_TASKS),
                       f"{len(spooled)} of {len(FAILING_TASKS)} failures spooled while the store was away")
        outcome.worst_added_s = worst_wait_before_spooling(spooled)
        time.sleep(max(0.0, hold_s - (time.monotonic() - began)))
    finally:
        end()
    _expect_each_failure_alerted_once(stack, slack, run_id, outcome)
    return outcome


def _supervisor_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def scheduler_path_with_store_locked(stack: AirflowStack, slack: SlackSink, markers: Path, statsd: Any,
                                     *, hold_s: float = LOCK_HOLD_S) -> FaultOutcome:
    """Fault 3: a heartbeat timeout (worker lost) is reported by the scheduler and the dag-processor while the
    store is locked; neither may be held up, and the failure alerts once when the store is back."""
    outcome = FaultOutcome(f"scheduler + dag-processor reports, store locked {hold_s:.0f} s")
    slack.messages.clear()
    run_id = stack.trigger("tl_fault_hang")
    marker_glob = f"tl_fault_hang.{run_id.replace(':', '_')}.1.pid"
    marker = wait_until(lambda: next(iter(markers.glob(marker_glob)), None), 120, "the task's PID marker")
    task_pid = int(marker.read_text())
    baseline = _loop_durations_ms(statsd)
    with SqliteWriteLock(stack.home / "tasklens.db") as lock:
        locked_at = time.monotonic()
        supervisor = _supervisor_of(task_pid)
        for pid in (task_pid, supervisor):  # the worker is lost: no listener, no callback in the task's process
            os.kill(pid, signal.SIGKILL)
        outcome.failures_injected = 1
        outcome.expect(stack.wait_for_run("tl_fault_hang", run_id, timeout=180) == "failed",
                       "the killed task's run did not end failed")
        control = stack.trigger("tl_fault_control")
        outcome.expect(stack.wait_for_run("tl_fault_control", control, timeout=120) == "success",
                       "the scheduler did not run the control DAG during the fault")
        during = _loop_durations_ms(statsd)[len(baseline):]
        if baseline and during:
            outcome.worst_added_s = max(0.0, (max(during) - max(baseline)) / 1000.0)
        time.sleep(max(0.0, hold_s - (time.monotonic() - locked_at)))
        lock.release()
    needles = {"the lost task": "tl_fault_hang"}
    outcome.time_to_alert_s = _wait_for_messages(slack, needles, timeout=120)
    time.sleep(5)
    _count_alert_messages(slack, needles, outcome)
    store = _store(stack)
    try:
        alerts = [a for a in store.list_alerts(dag_id="tl_fault_hang", limit=50) if a["run_id"] == run_id]
    finally:
        store.dispose()
    outcome.alerts_stored = len(alerts)
    outcome.expect(len(alerts) == 1 and alerts[0]["occurrences"] == 1,
                   f"the lost task gave {[(a['kind'], a['occurrences']) for a in alerts]}, not one alert")
    states = {ti["task_id"]: ti["state"] for ti in stack.task_instances("tl_fault_hang", run_id)}
    outcome.tasks_changed = 0 if states == {"sleeper": "failed"} else 1
    outcome.expect(not list(spool_dir(stack).glob("*.json")), "records left in the spool")
    return outcome


def _loop_durations_ms(statsd: Any) -> list[float]:
    values = []
    for line in statsd.drain():
        name, _, rest = line.partition(":")
        if name.endswith("scheduler.scheduler_loop_duration"):
            values.append(float(rest.split("|", 1)[0]))
    return values


def old_schema_until_api_server_starts(home: Path, slack: SlackSink, markers: Path) -> FaultOutcome:
    """Fault 4: the store is at an old schema while tasks fail (tasklens upgraded on the workers first). Tasks spool
    and never migrate; the api-server migrates when it starts, and its dispatcher delivers each failure once."""
    from tasklens.store import Store

    outcome = FaultOutcome("store schema older than tasklens")
    slack.messages.clear()  # the sink is shared with the earlier faults, which messaged the same task ids
    env = stack_env(slack, markers)
    stack = AirflowStack(home, DAGS, env, migrate_store=False)
    migrate(stack.env, store=False)
    store_url = stack.env["AIRFLOW__TASKLENS__STORE_URL"]
    _migrate_to(store_url, "0001")
    done = dags_test("tl_fault_failures", home=home, dags_folder=DAGS, env=env, migrate_first=False)
    outcome.failures_injected = len(FAILING_TASKS)
    tries = _task_tries(home / "airflow.db", "tl_fault_failures")
    outcome.tasks_changed = sum(1 for task, want in EXPECTED_FAILURE_RUN.items() if tries.get(task) != want)
    outcome.expect("SIGTERM" not in done.stdout + done.stderr, "a task was SIGTERMed")
    revision = Store(store_url, migrate=False).schema_revision()
    outcome.expect(revision == "0001", f"a task migrated the store (now at {revision})")
    spooled = [r for r in spool_records(spool_dir(stack)) if r["payload"].get("event") == "failed"]
    outcome.expect(len(spooled) == len(FAILING_TASKS), f"{len(spooled)} failures spooled")
    outcome.worst_added_s = worst_wait_before_spooling(spooled)
    run_id = spooled[0]["payload"]["run_id"] if spooled else "?"
    with stack:  # the api-server starts: it migrates the store, its dispatcher ingests the spool and delivers
        _expect_each_failure_alerted_once(stack, slack, run_id, outcome)
    return outcome


def _task_tries(metadata_db: Path, dag_id: str) -> dict[str, tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(metadata_db)) as db:
        rows = db.execute("SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (dag_id,))
        return {task_id: (state, try_number) for task_id, state, try_number in rows}


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    import tasklens.store

    cfg = Config()
    cfg.set_main_option("script_location", str(tasklens.store.MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _migrate_to(url: str, revision: str) -> None:
    _run_alembic(url, "upgrade", revision)


def _run_alembic(url: str, action: str, revision: str) -> None:
    from alembic import command

    from tasklens.store import Store

    store = Store(url, migrate=False, timeout_s=60)
    try:
        cfg = _alembic_config(url)
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    finally:
        store.dispose()

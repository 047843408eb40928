"""The real scheduler path (LocalExecutor, one process per task): events, task-log context and StatsD packets."""

from __future__ import annotations

import json

import pytest

from tests.integration.observability import DAGS, StatsdSink, read_stream
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration

DOTTED = "tl_obs.dag.with.dots"


@pytest.fixture(scope="module")
def sink():
    sink = StatsdSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sink):
    """Run the dotted DAG and the failures DAG through a real scheduler; return (stack home, events, run ids)."""
    home = tmp_path_factory.mktemp("obs-scheduler-home")
    events_path = home / "events.jsonl"
    env = {
        **sink.env(),
        "AIRFLOW__TASKLENS__EVENTS_PATH": str(events_path),
    }
    with AirflowStack(home, DAGS, env) as stack:
        runs = {dag_id: stack.trigger(dag_id) for dag_id in (DOTTED, "tl_obs_failures")}
        states = {dag_id: stack.wait_for_run(dag_id, run_id, timeout=300) for dag_id, run_id in runs.items()}
        task_states = {dag_id: stack.task_states(dag_id, run_id) for dag_id, run_id in runs.items()}
    return home, read_stream(events_path), runs, states, task_states


def test_runs_finish_with_the_states_their_tasks_dictate(finished):
    """tasklens does not change task outcomes: the dotted DAG succeeds, the failures DAG fails on one task only."""
    _, _, _, states, task_states = finished
    assert states == {DOTTED: "success", "tl_obs_failures": "failed"}
    assert task_states["tl_obs_failures"] == {"fails_for_good": "failed", "retries_once": "success"}


def test_each_task_process_writes_its_transitions(finished):
    """Every attempt, each in its own process, appends its transitions to the shared JSON Lines stream."""
    _, lines, runs, _, _ = finished
    task_lines = [line for line in lines if line["event"] != "business"]
    by_task = {}
    for line in task_lines:
        by_task.setdefault((line["dag_id"], line["task_id"]), []).append((line["event"], line["try_number"]))
    assert by_task[(DOTTED, "task-with-dash")] == [("running", 1), ("success", 1)]
    assert by_task[("tl_obs_failures", "fails_for_good")] == [("running", 1), ("failed", 1)]
    assert by_task[("tl_obs_failures", "retries_once")] == [
        ("running", 1),
        ("up_for_retry", 1),
        ("running", 2),
        ("success", 2),
    ]
    assert {line["run_id"] for line in task_lines if line["dag_id"] == DOTTED} == {runs[DOTTED]}
    assert all(line["source"] == "worker" for line in task_lines)
    [business] = [line for line in lines if line["event"] == "business"]
    assert (business["dag_id"], business["task_id"], business["run_id"]) == (DOTTED, "task-with-dash", runs[DOTTED])


def test_task_log_file_lines_carry_tasklens_context(finished):
    """The task's own JSON log file (shown in the UI) has dag_id/task_id/tasklens_event on lines after ``running``."""
    home, _, _, _, _ = finished
    [log_file] = list((home / "logs").glob(f"dag_id={DOTTED}/**/task_id=task-with-dash/attempt=1.log"))
    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    loading = [r for r in records if r.get("event") == "loading flights"]
    assert loading and loading[0]["dag_id"] == DOTTED and loading[0]["task_id"] == "task-with-dash"
    assert loading[0]["tasklens_event"] == "running" and loading[0]["table"] == "flights"
    business = [r for r in records if r.get("event") == "business_event"]
    assert business and business[0]["business_event"] == "rows_loaded"


def test_statsd_packets_from_task_processes(finished, sink):
    """Task processes send labelled counters, timers and custom metrics; labels survive dots and dashes."""
    parsed = sink.tasklens(DOTTED)
    names = {name for name, *_ in parsed}
    assert {
        "airflow.tasklens.task.running",
        "airflow.tasklens.task.success",
        "airflow.tasklens.task.duration",
        "airflow.tasklens.custom.records_processed",
    } <= names
    assert all(labels["task_id"] == "task-with-dash" for _, labels, _, _ in parsed)
    retries = [
        name.rsplit(".", 1)[1]
        for name, labels, _, kind in sink.tasklens("tl_obs_failures")
        if kind == "c" and labels["task_id"] == "retries_once"
    ]
    assert retries == ["running", "up_for_retry", "running", "success"]

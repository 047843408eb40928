"""Real DAGs through ``airflow dags test``: JSON event lines and StatsD packets from the task process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.observability import DAGS, StatsdSink, read_stream
from tests.integration.stack import dags_test

pytestmark = pytest.mark.integration

DOTTED = "tl_obs.dag.with.dots"


@pytest.fixture(scope="module")
def sink():
    sink = StatsdSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("obs-home")


def run(dag_id: str, home: Path, sink: StatsdSink, **extra_env: str):
    events_path = home / f"{dag_id}.events.jsonl"
    env = {**sink.env(), "AIRFLOW__TASKLENS__EVENTS_PATH": str(events_path), **extra_env}
    result = dags_test(dag_id, home=home, dags_folder=DAGS, env=env, timeout=300)
    return result, read_stream(events_path)


@pytest.fixture(scope="module")
def dotted(home, sink):
    return run(DOTTED, home, sink)


@pytest.fixture(scope="module")
def failures(home, sink):
    return run("tl_obs_failures", home, sink)


@pytest.fixture(scope="module")
def broken_metrics(home, sink):
    return run("tl_obs_stage_failure", home, sink, TL_OBS_BREAK_METRICS="1")


def test_dotted_ids_reach_the_event_stream_exactly(dotted):
    """A DAG id with dots and a task id with dashes appear unchanged in running/success lines with durations."""
    result, lines = dotted
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    task_lines = [line for line in lines if line["event"] in ("running", "success")]
    assert [(line["event"], line["dag_id"], line["task_id"]) for line in task_lines] == [
        ("running", DOTTED, "task-with-dash"),
        ("success", DOTTED, "task-with-dash"),
    ]
    success = task_lines[1]
    assert success["schema_version"] == 1 and success["source"] == "worker"
    assert success["duration_s"] > 0 and success["owner"] == "data-platform"
    assert success["run_id"].startswith("manual__") and success["dag_tags"] == ["tasklens-test"]


def test_business_event_line_names_the_task(dotted):
    """``log.business_event`` in task code writes an ``event: business`` line bound to the attempt."""
    _, lines = dotted
    [business] = [line for line in lines if line["event"] == "business"]
    assert business["name"] == "rows_loaded" and business["data"] == {"rows": 1200, "table": "flights"}
    assert (business["dag_id"], business["task_id"], business["try_number"]) == (DOTTED, "task-with-dash", 1)


def test_task_log_lines_carry_the_bound_task_identity(dotted):
    """Lines logged by task code after the running event carry dag_id/task_id/tasklens_event from contextvars."""
    result, _ = dotted
    [line] = [line for line in result.stdout.splitlines() if "loading flights" in line]
    assert f"dag_id={DOTTED}" in line and "task_id=task-with-dash" in line and "tasklens_event=running" in line


def test_statsd_packets_keep_dotted_and_dashed_labels(dotted, sink):
    """Transition counters, try gauge, duration timer and custom metrics arrive with exact dag_id/task_id labels."""
    parsed = sink.tasklens(DOTTED)
    names = [name for name, *_ in parsed]
    for expected in (
        "airflow.tasklens.task.running",
        "airflow.tasklens.task.success",
        "airflow.tasklens.task.try_number",
        "airflow.tasklens.task.duration",
        "airflow.tasklens.custom.records_processed",
        "airflow.tasklens.custom.data_quality_score",
        "airflow.tasklens.operation.duration",
    ):
        assert expected in names, (expected, names)
    for _name, labels, _value, _type in parsed:
        assert labels["task_id"] == "task-with-dash"
        assert "run_id" not in labels and "try_number" not in labels
    success = next(p for p in parsed if p[0] == "airflow.tasklens.task.success")
    assert success[1] == {
        "dag_id": DOTTED,
        "task_id": "task-with-dash",
        "state": "success",
        "operator": "_PythonDecoratedOperator",
        "owner": "data-platform",
    }
    records = next(p for p in parsed if p[0] == "airflow.tasklens.custom.records_processed")
    assert records[2:] == ("1200", "c")
    operation = next(p for p in parsed if p[0] == "airflow.tasklens.operation.duration")
    assert operation[1]["operation"] == "transform" and operation[1]["stage"] == "silver"


def test_failing_task_is_reported_with_its_exception(failures):
    """A task that raises produces a ``failed`` line with exception type, message and traceback tail."""
    result, lines = failures
    assert result.returncode != 0  # the DAG run failed
    [failed] = [line for line in lines if line["event"] == "failed"]
    assert failed["task_id"] == "fails_for_good" and failed["state"] == "failed"
    assert failed["exception_type"] == "ValueError"
    assert failed["exception_message"] == "schema drift: column 'dep_delay' is missing"
    assert failed["traceback"].rstrip().endswith("ValueError: schema drift: column 'dep_delay' is missing")


def test_retrying_task_reports_up_for_retry_then_success(failures, sink):
    """A task failing once shows running, up_for_retry (try 1), running, success (try 2), in lines and counters."""
    _, lines = failures
    retried = [(line["event"], line["try_number"]) for line in lines if line["task_id"] == "retries_once"]
    assert retried == [("running", 1), ("up_for_retry", 1), ("running", 2), ("success", 2)]
    up = next(line for line in lines if line["event"] == "up_for_retry")
    assert up["exception_type"] == "ConnectionError" and up["max_tries"] == 1
    parsed = [p for p in sink.tasklens("tl_obs_failures") if p[1]["task_id"] == "retries_once"]
    counters = [p[0].rsplit(".", 1)[1] for p in parsed if p[3] == "c"]
    assert counters == ["running", "up_for_retry", "running", "success"]
    gauges = [p[2] for p in parsed if p[0] == "airflow.tasklens.task.try_number"]
    assert gauges[-1] == "2"
    failed = [p for p in sink.tasklens("tl_obs_failures") if p[0] == "airflow.tasklens.task.failed"]
    assert [p[1]["task_id"] for p in failed] == ["fails_for_good"]


def test_a_raising_metrics_stage_leaves_the_task_successful(broken_metrics, sink):
    """With metrics.record_event raising, the task still succeeds, other stages run and the error is counted."""
    result, lines = broken_metrics
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [line["event"] for line in lines] == ["running", "success"]
    tasklens_lines = sink.tasklens()
    assert not any(p[1].get("dag_id") == "tl_obs_stage_failure" and ".task." in p[0] for p in tasklens_lines)
    errors = [p for p in tasklens_lines if p[0] == "airflow.tasklens.errors" and p[1] == {"stage": "metrics"}]
    assert len(errors) == 2  # one per event (running, success)
    output = result.stdout + result.stderr
    assert output.count("tasklens stage 'metrics' failed; the task state is not affected") == 1
    assert "metrics stage broken on purpose" in output

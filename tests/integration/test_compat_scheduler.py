"""The compatibility suite: what tasklens must do on every supported Airflow (3.1, 3.2, 3.3), through the real
scheduler path (LocalExecutor, one process per task). ``make test`` runs it on the project's Airflow 3.3;
``make test-compat`` runs it in a venv per older minor built from ``compat/constraints-<minor>.txt``."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import airflow
import airflow.providers.standard
import pytest
from airflow.serialization import serialized_objects

from tasklens import airflow_compat, config, retry
from tasklens.callbacks import FailureCallback
from tasklens.testing import SlackSink, StatsdSink
from tests.integration.observability import read_stream
from tests.integration.stack import AirflowStack

try:  # Airflow 3.2+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "dags_compat"
EXAMPLE_FOLDERS = [
    Path(airflow.__file__).parent / "example_dags",
    Path(airflow.providers.standard.__file__).parent / "example_dags",
]
SERIALIZER = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def slack():
    with SlackSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def statsd():
    sink = StatsdSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("compat-markers")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slack, statsd, markers):
    env = {
        **statsd.env(),
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
        "TASKLENS_TEST_MARKERS": str(markers),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
    }
    with AirflowStack(tmp_path_factory.mktemp("compat-home"), DAGS, env) as running:
        yield running


@pytest.fixture(scope="module")
def failed_run(stack):
    run_id = stack.trigger("tl_compat")
    return run_id, stack.wait_for_run("tl_compat", run_id, timeout=240)


def test_task_outcomes_are_airflows_own(stack, failed_run):
    """tasklens changes no outcome: the failing task fails, the other succeeds."""
    run_id, state = failed_run
    assert state == "failed"
    assert stack.task_states("tl_compat", run_id) == {"loads": "success", "fails": "failed"}


def test_each_task_process_writes_its_events(stack, failed_run):
    """The worker listener writes running and final events for each task to the JSON Lines stream."""
    run_id, _ = failed_run
    lines = read_stream(stack.home / "logs" / "tasklens" / "events.jsonl")
    mine = [(line["task_id"], line["event"]) for line in lines if line.get("run_id") == run_id
            and line["event"] != "business"]
    assert sorted(mine) == sorted([("loads", "running"), ("loads", "success"), ("fails", "running"),
                                   ("fails", "failed")])
    assert {line["source"] for line in lines if line.get("run_id") == run_id} == {"worker"}


def test_task_processes_send_labelled_metrics(statsd, failed_run):
    """StatsD gets tasklens's labelled task counters and the task's own custom metric."""
    wait_for(lambda: statsd.tasklens("tl_compat"), 30, "no tasklens StatsD packets")
    names = {(name, labels.get("task_id")) for name, labels, _, _ in statsd.tasklens("tl_compat")}
    assert {("airflow.tasklens.task.running", "loads"), ("airflow.tasklens.task.success", "loads"),
            ("airflow.tasklens.task.failed", "fails")} <= names
    assert any(name.endswith("custom.rows_loaded") for name, _ in names), names


def test_failure_alert_reaches_slack(slack, failed_run):
    """The failure is an alert delivered to Slack, naming the DAG, the task and the exception."""
    texts = wait_for(lambda: [t for t in slack.texts() if "tl_compat" in t and "fails" in t], 60,
                     "no Slack alert for tl_compat.fails")
    assert any("schema drift" in text for text in texts), texts


def test_sigkilled_task_is_a_killed_alert(stack, slack, markers):
    """SIGKILL of the task process (no listener, no callback runs): the reconciler raises a killed alert that
    reaches Slack."""
    run_id = stack.trigger("tl_compat_killed")
    marker = wait_for(lambda: next(iter(markers.glob("tl_compat_killed.sleeper.pid")), None), 180,
                      "the task never wrote its PID")
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert stack.wait_for_run("tl_compat_killed", run_id, timeout=180) == "failed"
    texts = wait_for(lambda: [t for t in slack.texts() if "tl_compat_killed" in t], 90,
                     "no Slack alert for the killed task")
    assert any("killed" in text.lower() for text in texts), texts


def test_alerts_list_needs_an_airflow_user(stack, failed_run, slack):
    """The UI's alert list answers 401 without a token and lists the failure alert for an admin."""
    wait_for(lambda: [t for t in slack.texts() if "tl_compat" in t], 60, "no alert yet")
    status, _ = stack.request("GET", "/tasklens/api/alerts", user=None)
    assert status == 401
    status, payload = stack.request("GET", "/tasklens/api/alerts?dag_id=tl_compat", user="admin")
    assert status == 200, payload
    assert ("tl_compat", "fails") in {(a["dag_id"], a["task_id"]) for a in payload["alerts"]}


@pytest.mark.parametrize("folder", EXAMPLE_FOLDERS, ids=["airflow", "providers-standard"])
def test_policy_on_the_bundled_examples(folder, monkeypatch, caplog):
    """With a default retry preset, every task of Airflow's bundled example DAGs that import on this version gets
    tasklens's failure callback once and the preset (backoff as this version takes it), and still serializes; on
    Airflow < 3.3 (no ``retry_policy``) one info line says what is off, on 3.3 none."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", "transient_network")
    monkeypatch.setattr(airflow_compat, "_noted", set())
    config.reset()
    try:
        with caplog.at_level(logging.INFO):
            bag = DagBag(dag_folder=str(folder))
    finally:
        config.reset()
    assert not [error for error in bag.import_errors.values() if "tasklens" in error]
    tasks = [task for dag in bag.dags.values() for task in dag.tasks]
    assert len(bag.dags) >= 20 and len(tasks) >= 100
    for task in tasks:
        callbacks = list(task.on_failure_callback or [])
        assert sum(isinstance(cb, FailureCallback) for cb in callbacks) == 1, (task.dag_id, task.task_id)
    preset = retry.preset("transient_network")
    with_preset = [task for task in tasks if task.retries == preset.retries]
    assert len(with_preset) >= len(tasks) // 2
    assert all(task.retry_exponential_backoff == preset["retry_exponential_backoff"] for task in with_preset)
    for dag in bag.dags.values():
        try:
            SERIALIZER.to_dict(dag)
        except Exception as error:  # classes of Airflow's example plugins, not loaded here (nothing of tasklens's)
            assert "airflow.example_dags.plugins." in str(error), error
    policy_failures = [r for r in caplog.records if r.name == "tasklens.policy" and r.levelno >= logging.WARNING]
    assert not policy_failures, policy_failures[0].getMessage()
    notes = [r for r in caplog.records if r.name == "tasklens.airflow_compat"]
    assert len(notes) == (0 if airflow_compat.RETRY_POLICY_SUPPORTED else 1), [r.getMessage() for r in notes]

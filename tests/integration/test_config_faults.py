"""Faults in tasklens's own configuration never break a DAG, installing tasklens changes no task's behaviour, and
explicit alert calls with bad arguments fail loudly: real ``airflow dags test`` runs in isolated homes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import airflow
import airflow.providers.standard
import pytest

from tests.integration.stack import airflow_env, dags_test

pytestmark = pytest.mark.integration

DAGS = Path(__file__).with_name("dags_config")
WITHOUT_TASKLENS = Path(__file__).with_name("without_tasklens")
CORE_EXAMPLES = Path(airflow.__file__).parent / "example_dags"
STANDARD_EXAMPLES = Path(airflow.providers.standard.__file__).parent / "example_dags"
QUIET = {"AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false"}

BAD_RULES = {
    "unknown-channel": "routes:\n  - name: r\n    channels: [slak]\n",
    "bad-regex": "routes:\n  - name: r\n    channels: [slack]\n    match: {regex: '('}\n",
    "invalid-yaml": "routes: [unclosed\n",
    "unknown-preset": "retry_policies:\n  spark_jobs:\n    preset: spark\n    match: {tags: [spark]}\n",
    "missing-file": None,
}


def task_instances(home: Path, dag_id: str) -> list[tuple[str, int, str, int]]:
    """``(task_id, map_index, state, try_number)`` of every task instance of ``dag_id`` in the metadata DB."""
    with closing(sqlite3.connect(home / "airflow.db")) as db:
        rows = db.execute(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? "
            "ORDER BY task_id, map_index", (dag_id,),
        ).fetchall()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("fault", list(BAD_RULES))
def test_a_bad_rules_file_breaks_no_dag(tmp_path: Path, fault: str) -> None:
    """With each kind of bad rules file (unknown channel, bad regex, invalid YAML, unknown preset, missing file), the
    DAG imports, its tasks run and succeed, tasklens still reports them (on its fallback rules), and the
    run's output names the file and the problem."""
    home = tmp_path / "home"
    rules = tmp_path / "rules.yml"
    if BAD_RULES[fault] is not None:
        rules.write_text(BAD_RULES[fault])
    done = dags_test("tl_config_fault", home=home, dags_folder=DAGS,
                     env={**QUIET, "AIRFLOW__TASKLENS__RULES_FILE": str(rules)})
    output = done.stdout + done.stderr
    assert task_instances(home, "tl_config_fault") == [("extract", -1, "success", 1), ("load", -1, "success", 1)], \
        output[-4000:]
    assert "AirflowClusterPolicyViolation" not in output and "Failed to import" not in output
    assert f"tasklens configuration error: {rules}" in output
    stream = [json.loads(line) for line in (home / "logs" / "tasklens" / "events.jsonl").read_text().splitlines()]
    assert {(e["task_id"], e["event"]) for e in stream} >= {("extract", "success"), ("load", "success")}


def test_alert_operator_with_an_unknown_severity_fails_its_task(tmp_path: Path) -> None:
    """An AlertOperator whose severity renders to an unknown one fails (no retry) with the problem and the fix in
    the task's log, instead of the alert being dropped silently."""
    home = tmp_path / "home"
    done = dags_test("tl_alert_operator_bad", home=home, dags_folder=DAGS, env=QUIET)
    output = done.stdout + done.stderr
    assert task_instances(home, "tl_alert_operator_bad") == [("drift_alert", -1, "failed", 1)], output[-4000:]
    assert ("AlertOperator 'drift_alert': severity: unknown severity 'urgent'. "
            "Fix: use one of: info, warning, critical") in output


def without_tasklens_env(tmp_path: Path) -> dict[str, str]:
    """An Airflow environment in which tasklens is absent: no plugin, no policy, not importable."""
    empty_plugins = tmp_path / "no-plugins"
    empty_plugins.mkdir(exist_ok=True)
    return {"PYTHONPATH": str(WITHOUT_TASKLENS), "AIRFLOW__CORE__PLUGINS_FOLDER": str(empty_plugins)}


DUMP_RETRY_SETTINGS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

def seconds(value):
    return value.total_seconds() if hasattr(value, "total_seconds") else value

out = {"tasklens_loaded": "tasklens" in sys.modules, "tasks": {}}
for folder in sys.argv[1:]:
    bag = DagBag(dag_folder=folder)
    for dag in bag.dags.values():
        for task in dag.tasks:
            policy = task.retry_policy
            out["tasks"][f"{dag.dag_id}.{task.task_id}"] = [
                task.retries, seconds(task.retry_delay), task.retry_exponential_backoff, seconds(task.max_retry_delay),
                None if policy is None else f"{type(policy).__module__}.{type(policy).__qualname__}",
            ]
out["tasklens_loaded"] = out["tasklens_loaded"] or "tasklens" in sys.modules
print(json.dumps(out))
"""


def test_installing_tasklens_changes_no_example_tasks_retry_settings(tmp_path: Path) -> None:
    """Compares, for every task of every Airflow and standard-provider example DAG, the retry settings the worker
    would use (retries, retry_delay, backoff, max_retry_delay, retry_policy class) after DAG parsing with tasklens
    installed (its cluster policy applied) and in a Python where tasklens is absent: they are identical."""
    results = {}
    for mode in ("with", "without"):
        home = tmp_path / mode
        env = airflow_env(home, CORE_EXAMPLES)
        if mode == "without":
            env.update(without_tasklens_env(tmp_path))
        done = subprocess.run([sys.executable, "-c", DUMP_RETRY_SETTINGS, str(CORE_EXAMPLES), str(STANDARD_EXAMPLES)],
                              env=env, capture_output=True, text=True, timeout=600, check=True, cwd=tmp_path)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["with"]["tasklens_loaded"] is True and results["without"]["tasklens_loaded"] is False
    assert len(results["with"]["tasks"]) >= 100
    assert results["with"]["tasks"] == results["without"]["tasks"]


@pytest.mark.parametrize(
    ("dag_id", "folder"),
    # The DAG's own file as the DAG folder: the core folder also holds DAGs that need Airflow's example plugins.
    [("example_failed_dag", CORE_EXAMPLES / "example_failed_dag.py"),
     ("example_bash_operator", STANDARD_EXAMPLES / "example_bash_operator.py")],
)
def test_example_dag_runs_end_the_same_with_and_without_tasklens(tmp_path: Path, dag_id: str, folder: Path) -> None:
    """Compares the final state and try number of every task instance of one ``airflow dags test`` run of an
    Airflow example DAG (one that fails, one with skips) with tasklens installed and in a Python where tasklens is
    absent (no plugin, no policy, not importable): identical. tasklens did run in the first (its event stream)."""
    outcomes = {}
    for mode in ("with", "without"):
        home = tmp_path / mode
        env = QUIET if mode == "with" else {**QUIET, **without_tasklens_env(tmp_path)}
        done = dags_test(dag_id, home=home, dags_folder=folder, env=env)
        outcomes[mode] = task_instances(home, dag_id)
        assert outcomes[mode], (done.stdout + done.stderr)[-4000:]
        assert (home / "logs" / "tasklens" / "events.jsonl").exists() == (mode == "with")
    assert outcomes["with"] == outcomes["without"]
    if dag_id == "example_failed_dag":
        assert outcomes["with"] == [("fail_task", -1, "failed", 1)]

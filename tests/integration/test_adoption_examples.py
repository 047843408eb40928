"""Zero-edit adoption on DAGs nobody here wrote: Airflow's own bundled example DAGs, unmodified and not copied."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import airflow.providers.standard
import pytest

from tasklens.callbacks import FailureCallback
from tasklens.retry import PresetRetryPolicy
from tests.integration.stack import dags_test

pytestmark = pytest.mark.integration

CORE_EXAMPLES = Path(airflow.__file__).parent / "example_dags"
STANDARD_EXAMPLES = Path(airflow.providers.standard.__file__).parent / "example_dags"


@pytest.mark.parametrize("folder", [CORE_EXAMPLES, STANDARD_EXAMPLES], ids=["airflow", "providers-standard"])
def test_every_example_task_gets_tasklens_callbacks_and_no_preset_by_default(folder):
    """Through a DagBag with the entry-point policy active, every task of every example DAG keeps its own
    callbacks and gains tasklens's failure callback once; with no rules file asking for one, no task gets a tasklens
    retry preset (installing tasklens changes no task's retries)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert not [error for error in bag.import_errors.values() if "tasklens" in error]
    tasks = [task for dag in bag.dags.values() for task in dag.tasks]
    assert len(bag.dags) >= 20 and len(tasks) >= 100
    for task in tasks:
        callbacks = list(task.on_failure_callback or [])
        assert sum(isinstance(cb, FailureCallback) for cb in callbacks) == 1, (task.dag_id, task.task_id)
        assert not isinstance(task.retry_policy, PresetRetryPolicy), (task.dag_id, task.task_id)


def test_examples_keep_their_own_retry_settings():
    """Example tasks that set retries keep them; Airflow's example_retry_policy keeps its own ExceptionRetryPolicy."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import ExceptionRetryPolicy

    bag = DagBag(dag_folder=str(CORE_EXAMPLES))
    own = bag.dags["example_retry_policy"].get_task("call_external_api")
    assert isinstance(own.retry_policy, ExceptionRetryPolicy)
    assert own.retries == 5
    untouched = bag.dags["example_simplest_dag"].get_task("my_task")
    assert untouched.retries == 0 and untouched.retry_policy is None


def test_example_dag_run_produces_tasklens_events(tmp_path):
    """``airflow dags test example_bash_operator`` straight from the standard provider's package folder writes a
    running event and a final (success or skipped) event for each of its tasks to the tasklens event stream."""
    home = tmp_path / "home"
    done = dags_test("example_bash_operator", home=home, dags_folder=STANDARD_EXAMPLES,
                     env={"AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false"})
    stream = home / "logs" / "tasklens" / "events.jsonl"
    assert stream.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in stream.read_text().splitlines() if line.strip()]
    mine = [(e["task_id"], e["event"]) for e in events if e["dag_id"] == "example_bash_operator"]
    task_ids = {task_id for task_id, _ in mine}
    assert {"runme_0", "runme_1", "runme_2", "run_after_loop", "also_run_this", "this_will_skip"} <= task_ids
    for task_id in task_ids:
        assert (task_id, "running") in mine, task_id
    assert ("this_will_skip", "skipped") in mine
    assert ("run_after_loop", "success") in mine

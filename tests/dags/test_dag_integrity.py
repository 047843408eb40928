"""DAG integrity: every file in dags/ imports, and every DAG is monitored, owned, tagged and retried."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def _dags(dagbag):
    return sorted(dagbag.dags.items())


def test_every_dag_file_imports(dagbag):
    """A DAG file that fails to import shows up as an import error in the UI: none may."""
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAGs found in dags/"


def test_every_dag_has_tags_and_an_owner(dagbag):
    """Users filter by tag and page by owner: both must be set."""
    for dag_id, dag in _dags(dagbag):
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_every_task_retries_or_fails_fast_on_purpose(dagbag):
    """retries >= 1 everywhere except tasks that set retries=0 to demonstrate a final failure."""
    for dag_id, dag in _dags(dagbag):
        retried = [t for t in dag.tasks if t.retries >= 1]
        assert retried, f"{dag_id}: no task retries"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id}: default_args must set retries >= 1"


def test_tasklens_failure_hook_in_effect(dagbag):
    """The cluster policy (entry point) attached tasklens's failure callback to every task."""
    from tasklens.callbacks import FailureCallback

    for dag_id, dag in _dags(dagbag):
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(cb, FailureCallback) for cb in callbacks), f"{dag_id}.{task.task_id}"

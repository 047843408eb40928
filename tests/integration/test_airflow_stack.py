"""The tasklens plugin under real Airflow components: api-server, scheduler and dag-processor."""

from __future__ import annotations

import pytest

from tests.integration.stack import REPO, AirflowStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with AirflowStack(tmp_path_factory.mktemp("stack-home"), REPO / "dags") as running:
        yield running


def test_plugin_listed_by_api_server(stack):
    """/api/v2/plugins (authenticated with a token from /auth/token) lists tasklens with its listener, once."""
    plugins = stack.api("GET", "/api/v2/plugins")["plugins"]
    tasklens = [p for p in plugins if p["name"] == "tasklens"]
    assert len(tasklens) == 1
    assert "tasklens.listener" in tasklens[0]["listeners"]


def test_demo_dag_runs_to_expected_states(stack):
    """The demo DAG runs through the scheduler: a success, a retry that recovers, a final failure."""
    run_id = stack.trigger("tasklens_demo")
    assert stack.wait_for_run("tasklens_demo", run_id, timeout=240) == "failed"
    states = stack.task_states("tasklens_demo", run_id)
    assert states == {"succeed": "success", "flaky": "success", "broken": "failed"}
    flaky = next(ti for ti in stack.task_instances("tasklens_demo", run_id) if ti["task_id"] == "flaky")
    assert flaky["try_number"] == 2

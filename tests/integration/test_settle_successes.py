"""The api-server settles successes from Airflow's records, so task processes write nothing for them.

Real scheduler, dag-processor and api-server (LocalExecutor), a local Slack server. A retry that recovers has its
warning resolved (and a resolve notice sent) by the api-server's reconciler pass; a task that runs far longer than
its recent successes gets a 'ran long' alert from history read in Airflow's metadata DB.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tasklens.store import Store
from tasklens.testing import SlackSink
from tests.faults.harness import wait_until
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags_settle"
RULES = """
rules:
  task_retry:
    notify: true
  task_duration:
    min_duration: 2s
    median_factor: 3
    min_history: 3
routes:
  - name: all
    channels: [slack]
    group_wait: 0s
"""


@pytest.fixture(scope="module")
def slack():
    with SlackSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slack):
    rules = tmp_path_factory.mktemp("rules") / "rules.yml"
    rules.write_text(RULES)
    env = {
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
        "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
    }
    with AirflowStack(tmp_path_factory.mktemp("settle-home"), DAGS, env) as running:
        yield running


def _alerts(stack, dag_id: str) -> list[dict]:
    store = Store(f"sqlite:///{stack.home / 'tasklens.db'}", migrate=False)
    try:
        return [a for a in store.list_alerts(limit=100) if a["dag_id"] == dag_id]
    finally:
        store.dispose()


def test_recovered_retry_is_resolved_by_the_api_server(stack, slack):
    """The worker stores the retry warning; the success writes nothing; the api-server's pass resolves the alert
    and sends the resolve notice."""
    run_id = stack.trigger("tl_settle_retry")
    assert stack.wait_for_run("tl_settle_retry", run_id, timeout=180) == "success"
    resolved = wait_until(lambda: [a for a in _alerts(stack, "tl_settle_retry") if a["status"] == "resolved"], 60,
                          "the retry warning was not resolved")
    (alert,) = resolved
    assert alert["severity"] == "warning" and alert["resolved_by"] == "task_recovered"
    wait_until(lambda: sum("flaky_extract" in t for t in slack.texts()) >= 2, 30, "no resolve notice")
    assert len(_alerts(stack, "tl_settle_retry")) == 1


def test_a_run_far_longer_than_its_history_alerts_from_airflows_records(stack):
    """Three 2.5 s runs make the history; a 9 s run (over 3x the median) raises 'ran long' from the api-server."""
    for _ in range(3):
        run_id = stack.trigger("tl_settle_duration", conf={"sleep_s": 2.5})
        assert stack.wait_for_run("tl_settle_duration", run_id, timeout=180) == "success"
    time.sleep(6)  # a reconciler pass sees the short runs: none of them is long against its history
    assert _alerts(stack, "tl_settle_duration") == []
    run_id = stack.trigger("tl_settle_duration", conf={"sleep_s": 9})
    assert stack.wait_for_run("tl_settle_duration", run_id, timeout=180) == "success"
    (alert,) = wait_until(lambda: _alerts(stack, "tl_settle_duration"), 60, "no ran-long alert")
    assert alert["rule"] == "task_duration" and alert["run_id"] == run_id
    assert alert["data"]["median_s"] == pytest.approx(2.5, abs=1.0) and alert["data"]["history_size"] == 3

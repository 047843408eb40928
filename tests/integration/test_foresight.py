"""The api-server sees trouble before it lands: checks of attempts still in flight, from Airflow's metadata DB.

Real scheduler, dag-processor and api-server (LocalExecutor), a local Slack server. Short runs make a task's
history; a run far past it gets a "running long" alert while it still runs, resolved ("finished after ...") once
it ends. A scheduled run blocked by a full pool is late. A run whose first task is slow is forecast to miss its
``within:`` deadline before the deadline, and the alert resolves when the run makes it after all. A triggerer whose
``job`` row stopped heartbeating is reported silent, and resolved once it beats again.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tasklens.store import Store
from tasklens.testing import SlackSink
from tests.faults.harness import wait_until
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags_foresight"
RULES = """
rules:
  task_overrun:
    factor: 2
    min_history: 3
    min_duration: 4s
  dag_late:
    max_delay: 20s
    match: {dag_id: "tl_foresight_*"}
  component_heartbeat:
    max_silence: 30s
deadlines:
  tl_deadline:
    match: {tags: [deadline]}
    within: 60s
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
        "AIRFLOW__TASKLENS__RECONCILE_INTERVAL_S": "2",
    }
    with AirflowStack(tmp_path_factory.mktemp("foresight-home"), DAGS, env) as running:
        running.api("POST", "/api/v2/pools", {"name": "tl_full", "slots": 0, "include_deferred": False})
        run_id = running.trigger("tl_foresight_warmup")
        assert running.wait_for_run("tl_foresight_warmup", run_id, timeout=180) == "success"
        yield running


def _alerts(stack, dag_id: str) -> list[dict]:
    store = Store(f"sqlite:///{stack.home / 'tasklens.db'}", migrate=False)
    try:
        return [a for a in store.list_alerts(limit=100) if a["dag_id"] == dag_id]
    finally:
        store.dispose()


def _task_tab(stack, dag_id: str, task_id: str) -> str:
    status, page = stack.request("GET", f"/tasklens/ti?dag_id={dag_id}&run_id=any&task_id={task_id}")
    assert status == 200
    return " ".join(page.split())


def test_a_task_running_past_its_history_alerts_while_it_runs_and_resolves_when_it_finishes(stack, slack):
    """Three 1 s runs make the history (the task tab says "learning" before, its usual duration after); a 30 s run
    gets 'running long' while it is still running, sent to Slack, and the alert resolves saying it finished once
    the attempt ends."""
    dag_id = "tl_foresight_overrun"
    assert "<strong>learning</strong>: 0 of 3 successful attempts" in _task_tab(stack, dag_id, "train")
    for _ in range(3):
        run_id = stack.trigger(dag_id, conf={"sleep_s": 1})
        assert stack.wait_for_run(dag_id, run_id, timeout=180) == "success"
    tab = _task_tab(stack, dag_id, "train")
    assert "learning" not in tab and "3 recent successes); alerts past " in tab
    run_id = stack.trigger(dag_id, conf={"sleep_s": 30})
    (alert,) = wait_until(lambda: [a for a in _alerts(stack, dag_id) if a["status"] == "open"], 60,
                          "no running-long alert")
    assert stack.run_state(dag_id, run_id) == "running"  # alerted before the attempt ended
    assert alert["rule"] == "task_overrun" and alert["kind"] == "overrun" and alert["run_id"] == run_id
    assert alert["data"]["history_size"] == 3 and alert["data"]["baseline"] == "recent"
    assert alert["summary"].startswith(f"{dag_id}.train running ") and "s; usually " in alert["summary"]
    assert alert["data"]["usual_s"] < 5 and "(p95 " in alert["summary"]
    wait_until(lambda: any("Task running long" in t for t in slack.texts()), 30, "no running-long message")
    assert stack.wait_for_run(dag_id, run_id, timeout=180) == "success"
    (resolved,) = wait_until(lambda: [a for a in _alerts(stack, dag_id) if a["status"] == "resolved"], 60,
                             "the running-long alert was not resolved")
    assert resolved["resolved_by"].startswith("task_overrun: finished after 3")
    # The resolve notice says how the attempt ended (overrun_resolve.j2), not just "is resolved".
    wait_until(lambda: any(f"{dag_id}.train finished after 3" in t for t in slack.texts()), 30, "no resolve notice")
    assert len(_alerts(stack, dag_id)) == 1


def test_a_slow_run_is_forecast_to_miss_its_deadline_before_it_and_resolves_when_it_makes_it(stack, slack):
    """History: prep ~0 s then work 20 s. Now prep runs 40 s: past ~38 s the p90 forecast (prep past all its history,
    so a fifth of its usual ~0 s left, then work's 20 s) passes the 60 s deadline, alerted while the run is in flight
    and before the deadline; work takes 1 s this time, so the run makes it and the alert resolves saying so."""
    dag_id = "tl_foresight_deadline"
    for _ in range(3):
        run_id = stack.trigger(dag_id, conf={"prep_s": 0, "work_s": 20})
        assert stack.wait_for_run(dag_id, run_id, timeout=180) == "success"
    assert [a for a in _alerts(stack, dag_id) if a["kind"] == "deadline"] == []  # normal runs make it
    run_id = stack.trigger(dag_id, conf={"prep_s": 40, "work_s": 1})
    (alert,) = wait_until(lambda: [a for a in _alerts(stack, dag_id) if a["kind"] == "deadline"], 90,
                          "no deadline forecast alert")
    assert stack.run_state(dag_id, run_id) == "running"
    assert alert["rule"] == "deadline:tl_deadline" and alert["run_id"] == run_id and alert["status"] == "open"
    assert alert["data"]["status"] == "forecast" and alert["data"]["late_by_s"] > 0
    # prep -> work while prep still runs, or work alone once prep has ended (how fast this machine is decides,
    # and so whether the first forecast is a close call or a likely miss)
    assert 0.1 <= alert["data"]["miss_chance"] <= 1  # the p90 is past the deadline: at least 1 in 10
    if alert["data"]["miss_chance"] < 0.5:
        assert alert["summary"].startswith("may miss 1m after the run start: ")
        assert " % chance (p90 finish ~" in alert["summary"]
    else:
        assert alert["summary"].startswith("forecast to miss 1m after the run start by ~")
        assert " % chance to miss); critical path: " in alert["summary"]
    assert alert["summary"].endswith("work") and alert["data"]["critical_path"][-1] == "work"
    assert alert["last_seen"] < datetime.fromisoformat(alert["data"]["due_at"])  # warned before the deadline
    assert stack.wait_for_run(dag_id, run_id, timeout=180) == "success"
    (resolved,) = wait_until(
        lambda: [a for a in _alerts(stack, dag_id) if a["kind"] == "deadline" and a["status"] == "resolved"], 60,
        "the deadline alert was not resolved")
    assert resolved["resolved_by"].startswith("deadline:tl_deadline: finished ")
    assert resolved["resolved_by"].endswith("before its deadline")
    wait_until(lambda: any(f"{run_id}` made its deadline (1m after the run start): it finished at " in t
                           for t in slack.texts()), 30, "no deadline resolve notice saying the run made it")


def test_a_scheduled_run_blocked_by_a_full_pool_alerts_late_and_resolves_once_it_starts(stack, slack):
    """tl_foresight_late runs every minute, its task in a pool with no slots: its run is still not started 20 s
    after it was due, so a 'late' alert names it; given a slot, the run starts and the alert resolves."""
    dag_id = "tl_foresight_late"
    (alert,) = wait_until(lambda: [a for a in _alerts(stack, dag_id) if a["kind"] == "late"], 150, "no late alert")
    assert alert["rule"] == "dag_late" and alert["status"] == "open" and alert["data"]["created"] is True
    assert alert["summary"].startswith(f"{dag_id}: run {alert['run_id']} has not started ")
    assert stack.task_states(dag_id, alert["run_id"]) == {"load": "scheduled"}
    stack.api("PATCH", "/api/v2/pools/tl_full", {"name": "tl_full", "slots": 8, "include_deferred": False})
    (resolved,) = wait_until(
        lambda: [a for a in _alerts(stack, dag_id) if a["kind"] == "late" and a["status"] == "resolved"], 120,
        "the late alert was not resolved")
    # It says when the run started (late_resolve.j2), resolved_by too.
    assert resolved["resolved_by"].startswith(f"dag_late: run {alert['run_id']} started at ")
    assert resolved["resolved_by"].endswith(" after it was due")
    wait_until(lambda: any(f"{alert['run_id']}` started at " in t for t in slack.texts()), 30,
               "no late-run resolve notice saying when it started")


#: A triggerer's ``job`` row through Airflow's own model (run with the stack's environment): ``stale`` registers one
#: whose last heartbeat was 10 minutes ago (a triggerer that stopped), ``beat <id>`` makes it heartbeat again as a
#: running triggerer does (``Job.heartbeat``).
JOB_SCRIPT = """
import sys
from datetime import timedelta

from airflow.jobs.job import Job
from airflow.utils import timezone
from airflow.utils.session import create_session
from airflow.utils.state import JobState

with create_session() as session:
    if sys.argv[1] == "stale":
        job = Job(job_type="TriggererJob")
        job.state = JobState.RUNNING
        job.latest_heartbeat = timezone.utcnow() - timedelta(minutes=10)
        session.add(job)
        session.flush()
        print("JOB", job.id, job.hostname)
    else:
        job = session.get(Job, int(sys.argv[2]))
        job.heartbeat(lambda session: None, session=session)
        print("JOB", job.latest_heartbeat)
"""


def _triggerer_job(stack, *args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", JOB_SCRIPT, *args], env=stack.env, capture_output=True, text=True,
                            timeout=120, check=True)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("JOB ")]  # Airflow logs to stdout
    return line.split()[1:]


def test_a_component_that_stops_heartbeating_alerts_and_resolves_when_it_beats_again(stack, slack):
    """A triggerer's job row last heartbeated 10 min ago (max_silence 30s): a component_heartbeat alert names it,
    sent to Slack; once the job heartbeats again (Airflow's Job.heartbeat), the alert resolves."""
    job_id, hostname = _triggerer_job(stack, "stale")

    def triggerer_alerts(status: str) -> list[dict]:
        return [a for a in _alerts(stack, "tasklens")
                if a["rule"] == "component_heartbeat" and a["task_id"] == "TriggererJob" and a["status"] == status]

    (alert,) = wait_until(lambda: triggerer_alerts("open"), 60, "no heartbeat alert for the silent triggerer")
    assert alert["kind"] == "heartbeat" and alert["data"]["component"] == "triggerer"
    assert alert["summary"].startswith(f"the triggerer on {hostname} last heartbeated 10m")
    assert "(limit 30" in alert["summary"] and alert["summary"].endswith("): is it running?")
    wait_until(lambda: any("Airflow triggerer silent" in t for t in slack.texts()), 30, "no heartbeat message")
    _triggerer_job(stack, "beat", job_id)
    (resolved,) = wait_until(lambda: triggerer_alerts("resolved"), 60, "the heartbeat alert was not resolved")
    assert resolved["id"] == alert["id"] and resolved["resolved_by"] == "component_heartbeat: heartbeating again"

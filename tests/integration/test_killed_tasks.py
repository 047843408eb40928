"""Tasks killed outside Python (SIGKILL of the task process) alert exactly once, through a real stack.

Real scheduler, dag-processor and api-server (LocalExecutor); the api-server's tasklens app runs the
reconciler and the dispatcher; Slack is a local HTTP server reached through a `slackwebhook` connection.
A slow report (a retry callback past Airflow's task_success_overtime) or a failed one (the store refuses the
task's write) is a failure or retry whose report was lost, never a kill.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tasklens.testing import SlackSink
from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags_killed"
KILL_TIMINGS: list[float] = []


@pytest.fixture(scope="module")
def slack():
    with SlackSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slack, markers):
    env = {
        "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
        "TASKLENS_TEST_MARKERS": str(markers),
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
    }  # the reconciler at its defaults (reconcile_interval_s, reconcile_grace_s)
    with AirflowStack(tmp_path_factory.mktemp("killed-home"), DAGS, env) as running:
        yield running


def _store(stack):
    from tasklens.store import Store

    return Store(f"sqlite:///{stack.home / 'tasklens.db'}")


def _wait_for_marker(markers: Path, dag_id: str, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(markers.glob(f"{dag_id}.sleeper.*.1.pid"))
        if found:
            return found[0]
        time.sleep(0.5)
    raise TimeoutError(f"{dag_id}: the task never wrote its PID marker")


def _kill_task_process(marker: Path) -> None:
    """SIGKILL exactly the task process named by its own marker, after checking it is that task."""
    pid = int(marker.read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert "airflow" in cmdline or "python" in cmdline, cmdline
    os.kill(pid, signal.SIGKILL)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def _alerts_for(stack, dag_id: str) -> list[dict]:
    return [a for a in _store(stack).list_alerts(limit=100) if a["dag_id"] == dag_id]


def _slack_texts_for(slack, dag_id: str) -> list[str]:
    return [text for text in slack.texts() if dag_id in text]


def test_sigkilled_task_alerts_exactly_once(stack, slack, markers):
    """SIGKILL of the task process: one critical 'killed' alert in the store and one Slack message within 60 s."""
    run_id = stack.trigger("tl_killed_final")
    marker = _wait_for_marker(markers, "tl_killed_final")
    _kill_task_process(marker)
    killed_at = time.monotonic()
    assert stack.wait_for_run("tl_killed_final", run_id, timeout=120) == "failed"
    _wait(lambda: _slack_texts_for(slack, "tl_killed_final"), 60, "no Slack message for the killed task")
    KILL_TIMINGS.append(time.monotonic() - killed_at)
    time.sleep(5)  # several reconciler passes later: still exactly one
    alerts = _alerts_for(stack, "tl_killed_final")
    assert len(alerts) == 1, alerts
    assert alerts[0]["severity"] == "critical" and alerts[0]["kind"] == "killed"
    assert alerts[0]["occurrences"] == 1
    assert "killed" in alerts[0]["title"].lower()
    assert len(_slack_texts_for(slack, "tl_killed_final")) == 1


def test_sigkilled_task_with_retry_warns_then_recovers(stack, slack, markers):
    """With retries=1 the kill is a retry warning; the second attempt runs normally and resolves it."""
    run_id = stack.trigger("tl_killed_retry")
    _kill_task_process(_wait_for_marker(markers, "tl_killed_retry"))
    assert stack.wait_for_run("tl_killed_retry", run_id, timeout=120) == "success"
    alerts = _wait(lambda: _alerts_for(stack, "tl_killed_retry"), 30, "no alert for the killed retry")
    time.sleep(5)
    alerts = _alerts_for(stack, "tl_killed_retry")
    assert len(alerts) == 1, alerts
    assert alerts[0]["severity"] == "warning"
    assert alerts[0]["try_number"] == 1
    assert not [a for a in alerts if a["severity"] == "critical"]


def test_ordinary_failure_is_not_reported_twice(stack, slack):
    """A failure the worker reports itself yields one alert: the reconciler does not add a 'killed' one."""
    run_id = stack.trigger("tl_plain_failure")
    assert stack.wait_for_run("tl_plain_failure", run_id, timeout=120) == "failed"
    _wait(lambda: _alerts_for(stack, "tl_plain_failure"), 30, "no alert for the plain failure")
    time.sleep(6)  # let the reconciler pass over the attempt several times
    alerts = _alerts_for(stack, "tl_plain_failure")
    assert len(alerts) == 1 and alerts[0]["kind"] == "failure", alerts
    assert alerts[0]["occurrences"] == 1


def _killed_alerts(stack, dag_id: str) -> list[dict]:
    return [a for a in _alerts_for(stack, dag_id) if a["kind"] == "killed"]


def test_retry_callback_past_the_overtime_is_a_retry_not_a_kill(stack, slack):
    """on_retry_callback sleeps 30 s, the supervisor stops the process at 20 s before the listener reports: the
    reconciler raises the attempt's retry with its real exception and says the report was lost; nothing says killed."""
    run_id = stack.trigger("tl_slow_retry_callback")
    assert stack.wait_for_run("tl_slow_retry_callback", run_id, timeout=120) == "success"
    alerts = _wait(lambda: _alerts_for(stack, "tl_slow_retry_callback"), 120, "no alert for the lost retry report")
    time.sleep(6)  # more reconciler passes: still one alert, never a kill
    alerts = _alerts_for(stack, "tl_slow_retry_callback")
    assert len(alerts) == 1 and alerts[0]["kind"] == "retry", alerts
    assert alerts[0]["try_number"] == 1 and alerts[0]["exception_type"] == "ConnectionError"
    assert "the first attempt fails" in alerts[0]["summary"]
    events = _store(stack).events_for("tl_slow_retry_callback", run_id, "flaky")
    first_try = [e for e in events if e["try_number"] == 1 and e["outcome"] == "failure"]
    assert len(first_try) == 1 and first_try[0]["event"] == "up_for_retry", events
    assert first_try[0]["payload"]["source"] == "reconciler"
    assert "failure report was lost" in first_try[0]["payload"]["reason"]
    assert not [text for text in _slack_texts_for(slack, "tl_slow_retry_callback") if "killed" in text.lower()]


def test_failed_store_write_is_a_failure_alert_with_its_exception(stack, slack):
    """The task's store write fails and so does its spool: one critical failure alert with the task's own exception
    (from its log), reported lost, never called a kill."""
    run_id = stack.trigger("tl_store_write_fails")
    assert stack.wait_for_run("tl_store_write_fails", run_id, timeout=120) == "failed"
    _wait(lambda: _slack_texts_for(slack, "tl_store_write_fails"), 60, "no Slack message for the failure")
    time.sleep(6)
    alerts = _alerts_for(stack, "tl_store_write_fails")
    assert len(alerts) == 1 and alerts[0]["kind"] == "failure", alerts
    assert alerts[0]["exception_type"] == "ValueError"
    assert "the load failed while the store was down" in alerts[0]["summary"]
    assert "failure report was lost" in alerts[0]["data"]["reason"]
    texts = _slack_texts_for(slack, "tl_store_write_fails")
    assert len(texts) == 1 and "killed" not in texts[0].lower() and "report was lost" in texts[0]

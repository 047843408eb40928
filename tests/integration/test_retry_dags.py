"""Retry presets in real DAG runs (`airflow dags test` in a subprocess with an isolated AIRFLOW_HOME)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tasklens.store import Store
from tests.integration.stack import airflow_env, dags_test

pytestmark = pytest.mark.integration

DAGS = Path(__file__).with_name("dags")
QUIET = {"AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false"}


def _events(home: Path, dag_id: str) -> list[dict]:
    path = home / "logs" / "tasklens" / "events.jsonl"
    assert path.exists(), f"no tasklens event stream at {path}"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["dag_id"] == dag_id]


def _worker_events(home: Path, dag_id: str) -> list[tuple[str, int]]:
    return [(e["event"], e["try_number"]) for e in _events(home, dag_id) if e["source"] == "worker"]


def test_fail_fast_validation_error_runs_exactly_one_attempt(tmp_path):
    """With retries=3, a ValueError under fail_fast fails on the first attempt: no up_for_retry, no second try."""
    home = tmp_path / "home"
    done = dags_test("tl_retry_fail_fast", home=home, dags_folder=DAGS, env=QUIET)
    assert "Retry policy decision" in done.stdout + done.stderr
    assert _worker_events(home, "tl_retry_fail_fast") == [("running", 1), ("failed", 1)]
    failed = _events(home, "tl_retry_fail_fast")[-1]
    assert failed["exception_type"] == "ValueError"
    assert failed["max_tries"] == 3


def test_transient_error_then_success_reports_the_retry_time_and_resolves(tmp_path):
    """A connection reset then success: up_for_retry carries next_retry_at and the reason; Airflow retried no
    earlier than that time; the retry alert is a warning, nothing is critical, and the api-server's check (here one
    `tasklens reconcile --once` pass over this home's metadata DB) resolves it from the success."""
    home = tmp_path / "home"
    dags_test("tl_retry_transient", home=home, dags_folder=DAGS, env=QUIET)
    assert _worker_events(home, "tl_retry_transient") == [
        ("running", 1), ("up_for_retry", 1), ("running", 2), ("success", 2)]
    events = _events(home, "tl_retry_transient")
    retry = next(e for e in events if e["event"] == "up_for_retry")
    second = next(e for e in events if e["event"] == "running" and e["try_number"] == 2)
    assert retry["reason"] == "transient_network: connection error or timeout (ConnectionResetError)"
    next_retry_at = datetime.fromisoformat(retry["next_retry_at"])
    assert next_retry_at.utcoffset() == timedelta(0)
    # retry_delay 1 s, backoff 2.0: Airflow's jitter on try 1 is ceil(1 s) + hash % 1 = exactly 1 s.
    assert next_retry_at == datetime.fromisoformat(retry["end_date"]) + timedelta(seconds=1)
    assert datetime.fromisoformat(second["start_date"]) >= next_retry_at

    store = Store(f"sqlite:///{home / 'tasklens.db'}")
    alerts = store.list_alerts()
    assert [(a["rule"], a["severity"], a["status"]) for a in alerts] == [("task_retry", "warning", "open")]
    done = subprocess.run([sys.executable, "-m", "tasklens", "reconcile", "--once"],
                          env=airflow_env(home, DAGS, QUIET), capture_output=True, text=True, timeout=300)
    assert "1 successes settled" in done.stdout, done.stdout + done.stderr
    alerts = store.list_alerts()
    store.dispose()
    assert [(a["rule"], a["severity"], a["status"]) for a in alerts] == [("task_retry", "warning", "resolved")]


def test_zero_edit_dag_gets_retries_from_the_policy_in_drop_in_mode(tmp_path):
    """A DAG with no tasklens code and no retries is retried by the preset named in config, registered from
    airflow_local_settings.py (drop-in mode), and its retry is reported with next_retry_at."""
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "airflow_local_settings.py").write_text(textwrap.dedent("""
        from tasklens import retry
        from tasklens.policy import task_policy  # noqa: F401  drop-in mode

        retry.register_preset(retry.preset("transient_network", retry_delay=1, max_retry_delay=2)
                              .replace(name="quick_network"))
    """))
    dags_test("tl_retry_zero_edit", home=home, dags_folder=DAGS,
              env={**QUIET, "AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET": "quick_network"})
    assert _worker_events(home, "tl_retry_zero_edit") == [
        ("running", 1), ("up_for_retry", 1), ("running", 2), ("success", 2)]
    retry = next(e for e in _events(home, "tl_retry_zero_edit") if e["event"] == "up_for_retry")
    assert retry["max_tries"] == 4
    assert retry["reason"] == "quick_network: connection error or timeout (TimeoutError)"
    assert retry["next_retry_at"]

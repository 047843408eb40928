"""Fault scenarios through real DAG runs: bad configuration (5), no behaviour change by default (6) and explicit
calls with bad input (19) under ``airflow dags test`` in isolated homes; reports that are slow or lost (7) on a real
stack; one attempt reported by several processes (16) through the real stages. Each returns a
:class:`FaultOutcome`, like the other scenario modules."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import FaultOutcome
from tests.integration.stack import dags_test
from tests.integration.test_config_faults import (
    BAD_RULES,
    CORE_EXAMPLES,
    QUIET,
    STANDARD_EXAMPLES,
    task_instances,
    without_tasklens_env,
)

CONFIG_DAGS = Path(__file__).resolve().parents[1] / "integration" / "dags_config"
EXPECTED_CONFIG_RUN = [("extract", -1, "success", 1), ("load", -1, "success", 1)]


def bad_rules_files() -> FaultOutcome:
    """Fault 5: each kind of bad rules file (unknown channel, bad regex, invalid YAML, unknown preset, missing file)
    while a DAG runs: it imports, its tasks succeed, tasklens keeps reporting on fallback rules and says why."""
    outcome = FaultOutcome("bad rules file deployed (5 kinds)", tasks_changed=0)
    with tempfile.TemporaryDirectory(prefix="tasklens-fault5-") as tmp:
        for fault, text in BAD_RULES.items():
            root = Path(tmp) / fault
            rules = root / "rules.yml"
            root.mkdir()
            if text is not None:
                rules.write_text(text)
            done = dags_test("tl_config_fault", home=root / "home", dags_folder=CONFIG_DAGS,
                             env={**QUIET, "AIRFLOW__TASKLENS__RULES_FILE": str(rules)})
            output = done.stdout + done.stderr
            outcome.failures_injected += 1
            ran = task_instances(root / "home", "tl_config_fault")
            outcome.tasks_changed = (outcome.tasks_changed or 0) + sum(
                1 for want, got in zip(EXPECTED_CONFIG_RUN, ran + [()] * 2, strict=False) if want != got)
            outcome.expect("AirflowClusterPolicyViolation" not in output and "Failed to import" not in output,
                           f"{fault}: the DAG failed to import")
            outcome.expect(f"tasklens configuration error: {rules}" in output, f"{fault}: the error was not reported")
            stream = root / "home" / "logs" / "tasklens" / "events.jsonl"
            events = [json.loads(line) for line in stream.read_text().splitlines()] if stream.exists() else []
            outcome.expect(sum(e["event"] == "success" for e in events) == 2, f"{fault}: tasklens stopped reporting")
    return outcome


def example_dags_with_and_without_tasklens() -> FaultOutcome:
    """Fault 6: Airflow's own example DAGs (one failing, one with skips) end with identical task states and try
    counts with tasklens installed and with tasklens absent."""
    outcome = FaultOutcome("installing tasklens changes no task", tasks_changed=0)
    with tempfile.TemporaryDirectory(prefix="tasklens-fault6-") as tmp:
        for dag_id, folder in (("example_failed_dag", CORE_EXAMPLES / "example_failed_dag.py"),
                               ("example_bash_operator", STANDARD_EXAMPLES / "example_bash_operator.py")):
            runs = {}
            for mode in ("with", "without"):
                home = Path(tmp) / dag_id / mode
                env = QUIET if mode == "with" else {**QUIET, **without_tasklens_env(Path(tmp) / dag_id)}
                dags_test(dag_id, home=home, dags_folder=folder, env=env)
                runs[mode] = task_instances(home, dag_id)
            outcome.failures_injected += sum(1 for row in runs["without"] if row[2] == "failed")
            changed = {row for row in runs["with"]} ^ {row for row in runs["without"]}
            outcome.tasks_changed = (outcome.tasks_changed or 0) + len({row[0] for row in changed})
            outcome.expect(bool(runs["with"]) and runs["with"] == runs["without"],
                           f"{dag_id}: task states or tries differ with tasklens")
    return outcome


def explicit_calls_with_bad_input() -> FaultOutcome:
    """Fault 19: an AlertOperator whose severity is unknown fails its task with the fix in the log, rather than the
    alert being dropped silently."""
    outcome = FaultOutcome("explicit alert call with bad input", tasks_changed=0)
    with tempfile.TemporaryDirectory(prefix="tasklens-fault19-") as tmp:
        home = Path(tmp) / "home"
        done = dags_test("tl_alert_operator_bad", home=home, dags_folder=CONFIG_DAGS, env=QUIET)
        output = done.stdout + done.stderr
        outcome.failures_injected = 1
        outcome.expect(task_instances(home, "tl_alert_operator_bad") == [("drift_alert", -1, "failed", 1)],
                       "the AlertOperator task did not fail")
        outcome.expect("Fix: use one of: info, warning, critical" in output, "the error does not say how to fix it")
    return outcome


KILLED_DAGS = Path(__file__).resolve().parents[1] / "integration" / "dags_killed"


def slow_or_lost_reports(stack: Any, slack: Any) -> FaultOutcome:
    """Fault 7: an on_retry_callback sleeping 30 s (past task_success_overtime, so the listener never reports) and a
    task whose store write and spool both fail. Each gives the normal retry/failure alert marked "report lost" with
    the real exception, never "killed". ``stack`` serves tests/integration/dags_killed at reconciler defaults."""
    from tasklens.store import Store

    outcome = FaultOutcome("slow or failed report (not a kill)", tasks_changed=0)
    expected = {"tl_slow_retry_callback": ("success", "retry"), "tl_store_write_fails": ("failed", "failure")}
    slack.messages.clear()
    started = time.monotonic()
    runs = {dag_id: stack.trigger(dag_id) for dag_id in expected}
    outcome.failures_injected = len(runs)
    for dag_id, run_id in runs.items():
        state = stack.wait_for_run(dag_id, run_id, timeout=180)
        outcome.expect(state == expected[dag_id][0], f"{dag_id}: run ended {state}")
    store = Store(f"sqlite:///{stack.home / 'tasklens.db'}", migrate=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alerts = {dag_id: [a for a in store.list_alerts(dag_id=dag_id, limit=20)] for dag_id in expected}
            if all(alerts.values()):
                break
            time.sleep(1)
        outcome.time_to_alert_s = time.monotonic() - started
        time.sleep(6)  # later reconciler passes add nothing
        alerts = {dag_id: store.list_alerts(dag_id=dag_id, limit=20) for dag_id in expected}
    finally:
        store.dispose()
    outcome.alerts_stored = sum(len(found) for found in alerts.values())
    for dag_id, (_, kind) in expected.items():
        found = alerts[dag_id]
        outcome.expect(len(found) == 1, f"{dag_id}: {len(found)} alerts")
        outcome.expect(all(a["kind"] == kind for a in found), f"{dag_id}: alerted as {[a['kind'] for a in found]}")
        outcome.duplicates += max(0, len(found) - 1)
    texts = slack.texts()
    outcome.messages_delivered = sum(1 for text in texts if any(dag_id in text for dag_id in expected))
    outcome.expect(not [t for t in texts if "killed" in t.lower() and any(d in t for d in expected)],
                   "a message calls a slow or lost report a kill")
    return outcome


def one_attempt_many_reporters() -> FaultOutcome:
    """Fault 16: one heartbeat-timeout attempt reported by the scheduler's listener and twice by the dag-processor's
    callback, and one kill reported by two overlapping reconcilers: each attempt is counted once in the
    ``tasklens.task.*`` metrics and the event stream (real store, StatsD socket and stream)."""
    from tasklens import config, metrics, persist, pipeline
    from tasklens.events import TaskEvent
    from tasklens.store import get_store, reset_stores
    from tasklens.testing import StatsdSink

    outcome = FaultOutcome("one attempt, several reporters", tasks_changed=None)
    sink = StatsdSink()
    with tempfile.TemporaryDirectory(prefix="tasklens-fault16-") as tmp:
        stream = Path(tmp) / "events.jsonl"
        saved = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW__TASKLENS__", "AIRFLOW__METRICS__"))}
        os.environ.update({
            "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{Path(tmp) / 'alerts.db'}",
            "AIRFLOW__TASKLENS__EVENTS_PATH": str(stream),
            "AIRFLOW__TASKLENS__SPOOL_DIR": str(Path(tmp) / "spool"),
            **sink.env(),
        })
        config.reset(), metrics.reset(), reset_stores()
        try:
            get_store(migrate=True)
            base = dict(dag_id="etl", task_id="load", run_id="r1", try_number=1, reason="worker lost")
            reports = [TaskEvent(event="failed", state="failed", source=s, **base)
                       for s in ("scheduler", "callback", "callback")]
            kill = dict(base, task_id="transform")
            reports += [TaskEvent(event="killed", state="failed", source="reconciler", **kill)] * 2
            for event in reports:
                pipeline.handle(event)
            persist.wait_idle()
            outcome.failures_injected = 2
            lines = [json.loads(line) for line in stream.read_text().splitlines()] if stream.exists() else []
            counted = sum(int(v) for name, _, v, kind in sink.tasklens("etl") if kind == "c" and
                          (name.endswith("tasklens.task.failed") or name.endswith("tasklens.task.killed")))
            outcome.alerts_stored = len(get_store().list_alerts())
            outcome.duplicates = max(0, len(lines) - 2) + max(0, counted - 2)
            outcome.expect(len(lines) == 2, f"{len(lines)} stream lines for 2 attempts")
            outcome.expect(counted == 2, f"failures counted {counted} times for 2 attempts")
            outcome.expect(outcome.alerts_stored == 2, f"{outcome.alerts_stored} alerts for 2 attempts")
        finally:
            reset_stores()
            for key in [k for k in os.environ if k.startswith(("AIRFLOW__TASKLENS__", "AIRFLOW__METRICS__"))]:
                del os.environ[key]
            os.environ.update(saved)
            config.reset(), metrics.reset()
            sink.close()
    return outcome

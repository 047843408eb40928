"""Failure to Slack message latency through a real stack, with the built-in rules (group_wait 3 s).

A real scheduler, dag-processor and api-server (LocalExecutor); the api-server's tasklens app runs the
dispatcher (default interval). A task fails; the time is measured from the attempt's end as the worker reported it
(the stored failure event's end_date) to the alert message arriving at a local Slack server. Baseline: a plain provider
notifier posts from the failing task itself, so its latency is ~0 but it blocks the task and loses
messages when Slack fails (see benchmarks/outage.py); this figure is absolute. Each alert is resolved before
the next run, since a failure while the same alert is open folds into it without a new message.
Prints ``failure to message p95 s: X`` last.

    python benchmarks/latency.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from tasklens.testing import SlackSink  # noqa: E402
from tests.integration.stack import AirflowStack  # noqa: E402
from tests.integration.test_killed_tasks import DAGS, _alerts_for, _slack_texts_for, _store, _wait  # noqa: E402

DAG_ID = "tl_plain_failure"


def _alert_messages(slack) -> list[str]:
    """Alert messages only: resolve notices name the DAG too."""
    return [t for t in _slack_texts_for(slack, DAG_ID) if not t.lstrip("*_ ").lower().startswith("resolved")]


def main(runs: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="tasklens-bench-latency-"))
    latencies: list[float] = []
    with SlackSink() as slack, AirflowStack(home, DAGS, {"AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri()}) as stack:
        for n in range(runs):
            before = len(_alert_messages(slack))
            run_id = stack.trigger(DAG_ID)
            _wait(lambda b=before: len(_alert_messages(slack)) > b, 120, "no message")
            arrived = datetime.now(timezone.utc)
            stack.wait_for_run(DAG_ID, run_id, timeout=120)
            stored = _store(stack).events_for(DAG_ID, run_id, "raises")
            ended = datetime.fromisoformat(stored[0]["payload"]["end_date"])
            latencies.append((arrived - ended).total_seconds())
            print(f"run {n + 1}: {latencies[-1]:.2f} s", flush=True)
            for alert in _alerts_for(stack, DAG_ID):
                if alert["status"] != "resolved":
                    _store(stack).resolve(alert["id"], by="benchmark")
            time.sleep(5)  # let the resolve notice go out before the next failure
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"failure to message p50 s: {statistics.median(latencies):.2f}, max s: {max(latencies):.2f}")
    print(f"failure to message p95 s: {p95:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)

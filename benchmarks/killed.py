"""Killed tasks: time from SIGKILL of a task process to its Slack message, over 5 kills, and duplicates.

A real scheduler, dag-processor and api-server (LocalExecutor); the api-server's tasklens app runs the
reconciler and the dispatcher at their defaults (``reconcile_interval_s`` 5 s, ``reconcile_grace_s`` 2 s: the kill
is read from the task log, no long grace; ``dispatch_interval_s`` 1 s). Baseline: Airflow alone sends nothing for
these kills (no callback, no listener runs), so the figure is absolute. Each alert is resolved before the next kill,
since a kill while the same alert is open folds into it without a new message. Prints ``kill to alert p50 s: X`` last.

    python benchmarks/killed.py [KILLS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from tasklens.testing import SlackSink  # noqa: E402
from tests.integration.stack import AirflowStack  # noqa: E402
from tests.integration.test_killed_tasks import (  # noqa: E402
    DAGS,
    _alerts_for,
    _kill_task_process,
    _slack_texts_for,
    _store,
    _wait,
    _wait_for_marker,
)


def _kill_messages(slack: SlackSink) -> list[str]:
    """Slack messages announcing a kill (the previous kill's resolve notice, sent meanwhile, is not one)."""
    return [text for text in _slack_texts_for(slack, "tl_killed_final")
            if "Task killed" in text and "Resolved" not in text]


def main(kills: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="tasklens-bench-killed-"))
    markers = home / "markers"
    timings: list[float] = []
    with SlackSink() as slack:
        env = {
            "AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(),
            "TASKLENS_TEST_MARKERS": str(markers),
        }  # every [tasklens] setting at its default
        with AirflowStack(home / "airflow", DAGS, env) as stack:
            for n in range(kills):
                before = len(_kill_messages(slack))
                run_id = stack.trigger("tl_killed_final")
                marker = _wait_for_marker(markers, "tl_killed_final")
                _kill_task_process(marker)
                killed_at = time.monotonic()
                marker.unlink()
                _wait(lambda b=before: len(_kill_messages(slack)) > b, 120, "no message")
                timings.append(time.monotonic() - killed_at)
                stack.wait_for_run("tl_killed_final", run_id, timeout=120)
                # Resolve it like on-call would: a second kill of an open alert folds into it without a message.
                for alert in _alerts_for(stack, "tl_killed_final"):
                    if alert["status"] != "resolved":
                        _store(stack).resolve(alert["id"], by="benchmark")
                print(f"kill {n + 1}: {timings[-1]:.1f} s", flush=True)
            time.sleep(8)  # more reconciler passes: duplicates would show up now
            alerts = _alerts_for(stack, "tl_killed_final")
            texts = _slack_texts_for(slack, "tl_killed_final")
            messages = len(_kill_messages(slack))
    occurrences = sum(a["occurrences"] for a in alerts)
    print(f"kills: {kills}, alert occurrences: {occurrences}, Slack alert messages: {messages} "
          f"(+{len(texts) - messages} other messages: resolve notices), "
          f"duplicates: {occurrences - kills}")
    print(f"kill to alert max s: {max(timings):.1f}")
    print(f"kill to alert p50 s: {statistics.median(timings):.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)

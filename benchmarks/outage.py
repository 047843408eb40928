"""Slack outage: Slack is down (closed port) while 50 tasks fail, then comes back. How many alerts are lost?

Baseline (same run): the plain provider path, one SlackWebhookHook post per failure at failure time, against the
same outage. tasklens: each failure is recorded by the alert stage (rules -> routing -> store); a dispatcher
thread keeps retrying with backoff (scaled down to seconds for the benchmark) and delivers after recovery.
Prints ``outage lost: L of 50`` last.

    python benchmarks/outage.py
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = Path(tempfile.mkdtemp(prefix="tasklens-bench-outage-"))
RULES = HOME / "rules.yml"
RULES.write_text("routes:\n  - name: all\n    channels: [slack]\n    group_wait: 0s\n")
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{HOME / 'tasklens.db'}",
    "AIRFLOW__TASKLENS__EVENTS_PATH": "",
    "AIRFLOW__TASKLENS__RULES_FILE": str(RULES),
})
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

FAILURES = 50
OUTAGE_S = 6.0


def main() -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    from tasklens import pipeline
    from tasklens.dispatch import Dispatcher, DispatcherSettings
    from tasklens.events import TaskEvent
    from tasklens.store import get_store
    from tasklens.testing import SlackSink

    store = get_store(migrate=True)  # as `tasklens db upgrade` would
    with SlackSink() as sink:
        os.environ["AIRFLOW_CONN_TASKLENS_SLACK"] = sink.conn_uri()
        sink.down()
        outage_started = time.monotonic()

        def post_now(i: int) -> bool:
            try:  # the plain notifier path: post at failure time (slack_sdk retries connection errors once)
                SlackWebhookHook(slack_webhook_conn_id="tasklens_slack", timeout=2).send(text=f"baseline {i}")
                return True
            except Exception:
                return False

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:  # tasks fail in parallel
            baseline_lost = sum(not ok for ok in pool.map(post_now, range(FAILURES)))
        settings = DispatcherSettings(backoff_initial_s=0.2, backoff_max_s=2.0, backoff_jitter_s=0.2,
                                      max_age_s=600, timeout_s=2.0)
        dispatcher = Dispatcher(store, settings=settings)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run_forever, args=(stop,), kwargs={"interval_s": 0.2},
                                  daemon=True)
        thread.start()
        for i in range(FAILURES):
            pipeline._raise_alerts(TaskEvent(
                event="failed", dag_id="outage_dag", task_id=f"task_{i:02d}", run_id=f"run_{i % 5}",
                try_number=1, exception_type="TimeoutError", exception_message="db timeout",
            ))
            time.sleep(0.05)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        sink.up()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(d["state"] == "sent" for d in store.deliveries()):
                break
            time.sleep(0.2)
        stop.set()
        thread.join(timeout=10)
        assert not pipeline.ERROR_COUNTS, pipeline.ERROR_COUNTS
        alerts = store.list_alerts(limit=1000)
        delivered = {d["alert_id"] for d in store.deliveries() if d["state"] == "sent"}
        lost = FAILURES - len(delivered)
        failed_attempts = sum(d["attempts"] - 1 for d in store.deliveries())
        print(f"# {len(alerts)} alerts stored during a {OUTAGE_S:.0f}s outage; {failed_attempts} failed delivery "
              f"attempts retried; {len(sink.messages)} messages after recovery")
        print(f"# baseline (SlackWebhookHook post at failure time): lost {baseline_lost} of {FAILURES}")
    print(f"outage lost: {lost} of {FAILURES}")


if __name__ == "__main__":
    main()

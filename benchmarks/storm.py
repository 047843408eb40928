"""Alert storm: 1,000 tasks of one DAG run fail at once; how many Slack messages and PagerDuty events go out?

Each failure goes through the real alert stage (rules -> routing -> store) into a fresh SQLite store; the
dispatcher then delivers through SlackWebhookHook to a local Slack sink that enforces 1 message/s (it answers
429 with Retry-After when posted to faster). Checks: all 1,000 occurrences recorded, every alert delivered, no
post sent before a 429's Retry-After ran out. Baseline (same run): the plain provider path, one
SlackWebhookHook post per failure, would send 1,000 messages. The same route also pages a local PagerDuty Events
API v2 server that answers 429 (Retry-After 1) or 500 to a tenth of the events: every alert must trigger exactly
once (one event per alert, accepted; none lost, none accepted twice). Prints
``storm_pagerduty: 1000 failures -> E events for A alerts`` and ``storm: 1000 failures -> M messages`` last.

    python benchmarks/storm.py [failures]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = Path(tempfile.mkdtemp(prefix="tasklens-bench-storm-"))
RULES = HOME / "rules.yml"
RULES.write_text("routes:\n  - name: all\n    channels: [slack]\n    group_wait: 15s\n")
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{HOME / 'tasklens.db'}",
    "AIRFLOW__TASKLENS__EVENTS_PATH": "",
    "AIRFLOW__TASKLENS__RULES_FILE": str(RULES),
})
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]


def main(failures: int = 1000) -> None:
    from tasklens import config, pipeline
    from tasklens.dispatch import Dispatcher, DispatcherSettings
    from tasklens.events import TaskEvent
    from tasklens.store import get_store
    from tasklens.testing import SlackSink
    from tests.channel_servers import PagerDutyServer, Reply

    pagerduty = PagerDutyServer(fail_ratio=0.1, seed=7)
    pagerduty.fail_replies = [Reply(429, retry_after=1), Reply(500)]
    RULES.write_text(
        f"channels:\n  pagerduty:\n    type: pagerduty\n    host: {pagerduty.url}\n    rate_limit_per_s: 200\n"
        "routes:\n  - name: all\n    channels: [slack, pagerduty]\n    group_wait: 15s\n"
    )
    config.reset()
    store = get_store(migrate=True)  # as `tasklens db upgrade` does; tasks never migrate
    with SlackSink(rate_limit_per_s=1.0) as sink, pagerduty:
        os.environ["AIRFLOW_CONN_TASKLENS_SLACK"] = sink.conn_uri()
        os.environ["AIRFLOW_CONN_TASKLENS_PAGERDUTY"] = pagerduty.conn_json()
        started = time.perf_counter()
        for i in range(failures):
            pipeline._raise_alerts(TaskEvent(
                event="failed", dag_id="storm_dag", task_id=f"load_{i:04d}", run_id="manual__storm",
                try_number=1, exception_type="ConnectionError", exception_message="warehouse unreachable",
            ))
        recorded_s = time.perf_counter() - started
        assert not pipeline.ERROR_COUNTS, pipeline.ERROR_COUNTS
        occurrences = store.occurrence_count()
        dispatcher = Dispatcher(store, settings=DispatcherSettings(timeout_s=5.0))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            dispatcher.run_once()
            due = store.next_due()
            if due is None:
                break
            time.sleep(min(1.0, max(0.05, (due - store.clock()).total_seconds())))
        deliveries = store.deliveries()
        sent = sum(1 for d in deliveries if d["state"] == "sent" and d["channel"] == "slack")
        paged = sum(1 for d in deliveries if d["state"] == "sent" and d["channel"] == "pagerduty")
        alerts = len({d["alert_id"] for d in deliveries})
        triggers = [e["dedup_key"] for e in pagerduty.triggers()]
        ignored = 0
        for n, status in enumerate(sink.answers[:-1]):
            if status == 429 and sink.post_times[n + 1] - sink.post_times[n] < 0.95:
                ignored += 1
        print(f"# recorded {occurrences} occurrences of {failures} failures in {recorded_s:.1f}s; "
              f"{sent} alerts delivered in {len(sink.messages)} messages; posts {len(sink.posts)}, "
              f"429 answers {sink.answers.count(429)}, posts before Retry-After ran out {ignored}")
        print(f"# baseline (one SlackWebhookHook post per failure, the plain notifier path): {failures} messages")
        print(f"# pagerduty: {len(pagerduty.requests)} posts, {pagerduty.answers.count(429)} answered 429, "
              f"{pagerduty.answers.count(500)} answered 500; {len(triggers)} trigger events accepted for {alerts} "
              f"alerts, {len(set(triggers))} distinct dedup keys; {paged} deliveries sent")
        assert occurrences == failures and sent == failures and ignored == 0
        assert paged == alerts and len(triggers) == len(set(triggers)) == alerts <= failures
    print(f"storm_pagerduty: {failures} failures -> {len(triggers)} events for {alerts} alerts")
    print(f"storm: {failures} failures -> {len(sink.messages)} messages")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

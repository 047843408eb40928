"""What the alert stage adds to a task attempt: ``store.record`` and the whole alert stage, p95 in ms.

A fresh SQLite store (WAL) in a temp AIRFLOW_HOME. Interleaved rounds, each timing one call of:
``noop`` (baseline: an empty function), ``record`` (store.record of one new failure attempt with two routed
deliveries), ``failed`` (pipeline alert stage for a failed event: rules -> routing -> store) and ``success``
(alert stage for a success: duration history read + event row + resolve lookup). No network is touched.
Prints detail lines, then ``store record p95 ms: X`` last (target <= 50 ms per failed attempt).

    python benchmarks/store_latency.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = Path(tempfile.mkdtemp(prefix="tasklens-bench-store-"))
os.environ["AIRFLOW_HOME"] = str(HOME)
os.environ["AIRFLOW__TASKLENS__STORE_URL"] = f"sqlite:///{HOME / 'tasklens.db'}"
os.environ["AIRFLOW__TASKLENS__EVENTS_PATH"] = ""
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] * 1000


def main(rounds: int = 400) -> None:
    from tasklens import config, pipeline
    from tasklens.alerts import Alert, AlertKind, Delivery, Severity, fingerprint
    from tasklens.events import TaskEvent
    from tasklens.store import get_store

    store = get_store(migrate=True)  # as `tasklens db upgrade` would
    config.ruleset()
    deliveries = [
        Delivery(route="r", channel="slack", channel_type="slack", group_key="g", group_wait_s=30),
        Delivery(route="r", channel="email", channel_type="email", group_key="g", group_wait_s=30),
    ]

    def noop() -> None:
        return None

    def record(i: int) -> None:
        alert = Alert(fingerprint=fingerprint("bench", f"t{i % 50}", "task_failed", "ValueError"),
                      rule="task_failed", kind=AlertKind.FAILURE, severity=Severity.CRITICAL,
                      title="Task failed", summary="ValueError: boom", dag_id="bench", task_id=f"t{i % 50}",
                      run_id=f"run{i}", try_number=1, exception_type="ValueError", exception_message="boom")
        store.record([(alert, deliveries)])

    def failed(i: int) -> None:
        pipeline._raise_alerts(TaskEvent(event="failed", dag_id="bench_dag", task_id=f"task{i % 50}",
                                         run_id=f"run{i}", try_number=1, exception_type="ValueError",
                                         exception_message="boom", duration_s=1.5))

    def success(i: int) -> None:
        pipeline._raise_alerts(TaskEvent(event="success", dag_id="bench_dag", task_id=f"task{i % 50}",
                                         run_id=f"ok{i}", try_number=1, duration_s=1.5))

    samples: dict[str, list[float]] = {"noop": [], "record": [], "failed": [], "success": []}
    for i in range(20):  # warm up: imports, migrations, statement caches
        record(i), failed(i), success(i)
    for i in range(rounds):
        for name, call in (("noop", lambda _: noop()), ("record", record), ("failed", failed),
                           ("success", success)):
            start = time.perf_counter()
            call(1000 + i)
            samples[name].append(time.perf_counter() - start)
    assert not pipeline.ERROR_COUNTS, pipeline.ERROR_COUNTS
    for name, values in samples.items():
        print(f"# {name}: p50 {statistics.median(values) * 1000:.3f} ms, p95 {p95(values):.3f} ms ({rounds} rounds)")
    print(f"# alert stage, failed attempt: p95 {p95(samples['failed']):.3f} ms; success (the task writes nothing, "
          f"the api-server settles it): p95 {p95(samples['success']):.3f} ms; no-op baseline p95 "
          f"{p95(samples['noop']):.4f} ms")
    print(f"store record p95 ms: {p95(samples['record']):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)

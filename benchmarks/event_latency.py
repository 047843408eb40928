"""Latency of one task event through tasklens' observability stages, in process.

Each sample builds a TaskEvent from a RuntimeTaskInstance-like object, binds it into the log
context, appends it to the JSON Lines stream and sends its StatsD packet to a local UDP socket:
the work a task process does per transition. The baseline (building the event only) is measured
in the same run, interleaved. Prints ``event p99 ms: X.XXX`` last (target <= 1 ms).

    python benchmarks/event_latency.py [samples]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
HOME = Path(tempfile.mkdtemp(prefix="tasklens-bench-latency-"))
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from tests.integration.observability import StatsdSink  # noqa: E402

os.environ.update(
    {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        **StatsdSink().env(),
        "AIRFLOW__TASKLENS__EVENTS_PATH": str(HOME / "logs" / "tasklens" / "events.jsonl"),
    }
)

from tasklens import events, logs, metrics  # noqa: E402


def _task_instance(number: int) -> SimpleNamespace:
    start = datetime.now(timezone.utc) - timedelta(seconds=3)
    return SimpleNamespace(
        dag_id="sales.daily",
        task_id="load-orders",
        run_id=f"manual__{number}",
        map_index=-1,
        try_number=1,
        max_tries=2,
        state="success",
        start_date=start,
        end_date=start + timedelta(seconds=3),
        hostname="worker-1",
        queue="default",
        log_url="http://localhost:8080/log",
        task=SimpleNamespace(
            task_type="PythonOperator", owner="sales", pool="default_pool", dag=SimpleNamespace(tags=["sales"])
        ),
    )


def _through_stages(ti: SimpleNamespace) -> None:
    event = events.from_task_instance("success", ti)
    logs.bind_task_context(event)
    logs.write_event(event)
    metrics.record_event(event)


def _build_only(ti: SimpleNamespace) -> None:
    events.from_task_instance("success", ti)


def _ms(samples: list[float], quantile: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000.0


def main(samples: int) -> None:
    tis = [_task_instance(n) for n in range(256)]
    for ti in tis[:50]:  # warm up: imports, file open, StatsD client
        _through_stages(ti)
    full: list[float] = []
    baseline: list[float] = []
    clock = time.perf_counter
    for number in range(samples):
        ti = tis[number % len(tis)]
        for func, sink in ((_through_stages, full), (_build_only, baseline)):
            start = clock()
            func(ti)
            sink.append(clock() - start)
    print(f"samples: {samples}")
    print(f"baseline (build event only) p50 ms: {_ms(baseline, 0.50):.3f}  p99 ms: {_ms(baseline, 0.99):.3f}")
    print(f"event mean ms: {statistics.fmean(full) * 1000:.3f}")
    print(f"event p50 ms: {_ms(full, 0.50):.3f}")
    print(f"event p99 ms: {_ms(full, 0.99):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)

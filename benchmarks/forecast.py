"""Deadline forecasts against what happened: 60 daily runs of a 20-task DAG, 10 of them slowed down.

The DAG: five layers of four tasks, each task after one or two tasks of the layer before. Each task has its own
usual duration (2-12 min) and a day-to-day spread (lognormal, sigma 0.15), and waits 5-40 s in the queue. The
daily deadline is the usual run length x 1.3 after the start. On 10 days (after a 10-day warm-up) one task, at a
different place each time, runs 1.5x-6x its usual duration: some of those days miss the deadline, some do not.

Each day is replayed at 1-minute steps through :func:`tasklens.foresight.forecast.forecast_finish` with the task
history of the days before it (what ``foresight.queries.success_history`` reads from Airflow's ``task_instance``;
built here in memory from the same simulated runs, so the benchmark measures the forecaster, not SQL). A day is
predicted to miss when a p90 forecast passes the deadline before it. Compared, on the same days, with Airflow's
own rule: a ``DeadlineAlert`` on ``DeadlineReference.AVERAGE_RUNTIME`` (the mean of the last 10 runs, plus the
interval that makes it the same deadline on a usual day), which fires only once its deadline has passed.

Prints one ``name: value`` line per figure.

    python benchmarks/forecast.py [SEED]
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from tasklens.foresight.forecast import TaskProgress, forecast_finish  # noqa: E402
from tasklens.foresight.history import Sample  # noqa: E402

DAYS = 60
WARMUP = 10
SLOW_DAYS = 10
STEP_S = 60.0
LAYERS, WIDTH = 5, 4
DEADLINE_FACTOR = 1.3
HISTORY_SIZE = 50  # successes per task the forecaster sees (the newest first, as the query returns them)


def build_dag(rng: random.Random) -> dict[str, tuple[str, ...]]:
    upstream: dict[str, tuple[str, ...]] = {}
    for layer in range(LAYERS):
        for i in range(WIDTH):
            name = f"t{layer}_{i}"
            if layer == 0:
                upstream[name] = ()
            else:
                parents = rng.sample(range(WIDTH), rng.choice((1, 2)))
                upstream[name] = tuple(f"t{layer - 1}_{p}" for p in sorted(parents))
    return upstream


def simulate_day(upstream: dict[str, tuple[str, ...]], durations: dict[str, float], waits: dict[str, float],
                 ) -> dict[str, tuple[float, float, float]]:
    """(ready, start, end) of each task, seconds after the run start."""
    times: dict[str, tuple[float, float, float]] = {}
    for task in upstream:  # layers are in order
        ready = max((times[u][2] for u in upstream[task]), default=0.0)
        start = ready + waits[task]
        times[task] = (ready, start, start + durations[task])
    return times


def progress_at(times: dict[str, tuple[float, float, float]], t: float) -> dict[str, TaskProgress]:
    progress = {}
    for task, (ready, start, end) in times.items():
        if end <= t:
            progress[task] = TaskProgress("success")
        elif start <= t:
            progress[task] = TaskProgress("running", t - start)
        elif ready <= t:
            progress[task] = TaskProgress("queued", t - ready)
        else:
            progress[task] = TaskProgress(None)
    return progress


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    rng = random.Random(seed)
    upstream = build_dag(rng)
    usual = {task: rng.uniform(120, 720) for task in upstream}
    usual_wait = {task: rng.uniform(5, 40) for task in upstream}
    slow_days = sorted(rng.sample(range(WARMUP, DAYS), SLOW_DAYS))
    slow_tasks = rng.sample(sorted(upstream), SLOW_DAYS)
    factors = [1.5 + 4.5 * i / (SLOW_DAYS - 1) for i in range(SLOW_DAYS)]
    rng.shuffle(factors)

    days = []
    for day in range(DAYS):
        durations = {t: usual[t] * rng.lognormvariate(0, 0.15) for t in upstream}
        waits = {t: usual_wait[t] * rng.lognormvariate(0, 0.3) for t in upstream}
        if day in slow_days:
            index = slow_days.index(day)
            durations[slow_tasks[index]] *= factors[index]
        days.append((durations, waits, simulate_day(upstream, durations, waits)))
    lengths = [max(end for _, _, end in times.values()) for _, _, times in days]
    usual_length = statistics.median(lengths[:WARMUP])
    deadline = usual_length * DEADLINE_FACTOR
    interval = deadline - statistics.mean(lengths[:WARMUP])  # AVERAGE_RUNTIME + interval = deadline on a usual day

    truth, ours, airflows = [], [], []
    leads, airflow_leads, false_alarms, airflow_false_alarms = [], [], 0, 0
    for day in range(WARMUP, DAYS):
        durations, waits, times = days[day]
        length = lengths[day]
        missed = length > deadline
        earlier = range(day - 1, max(-1, day - 1 - HISTORY_SIZE), -1)  # newest first
        history = {t: [Sample(None, days[d][0][t], days[d][1][t]) for d in earlier] for t in upstream}
        warned_at = None
        t = 0.0
        while t < min(length, deadline):
            forecast = forecast_finish(upstream, progress_at(times, t), history, q=0.9, min_history=5,
                                       seed=f"day{day}")
            if not forecast.learning and t + forecast.finish_s > deadline:
                warned_at = t
                break
            t += STEP_S
        average_deadline = statistics.mean(lengths[max(0, day - 10):day]) + interval
        airflow_fired = length > average_deadline
        truth.append(missed)
        ours.append(warned_at is not None)
        airflows.append(airflow_fired)
        if warned_at is not None and missed:
            leads.append(deadline - warned_at)
        if airflow_fired and missed:
            airflow_leads.append(max(deadline - average_deadline, 0.0))
        if day not in slow_days:
            false_alarms += warned_at is not None
            airflow_false_alarms += airflow_fired

    def precision_recall(predicted: list[bool]) -> tuple[float, float]:
        tp = sum(p and m for p, m in zip(predicted, truth, strict=True))
        fp = sum(p and not m for p, m in zip(predicted, truth, strict=True))
        fn = sum(m and not p for p, m in zip(predicted, truth, strict=True))
        return (tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 1.0)

    precision, recall = precision_recall(ours)
    airflow_precision, airflow_recall = precision_recall(airflows)
    lead = statistics.median(leads) if leads else 0.0
    print(f"days evaluated: {DAYS - WARMUP}")
    print(f"slowed days: {SLOW_DAYS}")
    print(f"days that missed the deadline: {sum(truth)}")
    print(f"usual run length min: {usual_length / 60:.1f}")
    print(f"deadline after start min: {deadline / 60:.1f}")
    print(f"forecast precision: {precision:.2f}")
    print(f"forecast recall: {recall:.2f}")
    print(f"forecast median lead time min: {lead / 60:.1f}")
    print(f"forecast median lead time share of usual run: {lead / usual_length:.2f}")
    print(f"forecast false alarms on normal days: {false_alarms}")
    print(f"airflow average_runtime precision: {airflow_precision:.2f}")
    print(f"airflow average_runtime recall: {airflow_recall:.2f}")
    print(f"airflow average_runtime median lead time min: "
          f"{(statistics.median(airflow_leads) if airflow_leads else 0.0) / 60:.1f}")
    print(f"airflow average_runtime false alarms on normal days: {airflow_false_alarms}")


if __name__ == "__main__":
    main()

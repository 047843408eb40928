"""When will an in-flight DAG run finish? Pure: the DAG's structure, the run's task states and each task's history
in, a :class:`Forecast` out.

The finish is simulated along the DAG (a Monte Carlo over the tasks' own past durations, their past anomalies left
out, seeded by the run so a forecast is repeatable): a task still to run takes a duration drawn from its successes
plus a queue wait drawn from its past waits, after the last of its upstream tasks; a running task takes what its
history says is left given how long it has run already (one past every past duration: a fixed allowance). The run's
finish at quantile ``q`` (p90) is compared with its deadline; the critical path is the chain of remaining tasks that
decides the median finish.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import statistics
import zlib
from collections.abc import Mapping, Sequence

from tasklens.foresight.history import Sample, quantile

__all__ = ["DONE_STATES", "Forecast", "TaskProgress", "forecast_finish"]

#: Task states after which a task no longer holds the run up.
DONE_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
#: Simulated runs per forecast: enough for a stable p90 of a 20-task DAG in about a millisecond per task.
DRAWS = 200
#: A running task already past every duration in its history is given this share of its usual (median) duration
#: left, so a warning then means "misses even if it ends within a fifth of its usual time from now". Chosen on
#: benchmarks/forecast.py's tuning seeds (1-4, 21-40, pooled: precision 0.91, recall 1.00): an allowance that grew
#: with the elapsed time (15 % of it) warned on slowed runs that still made it (precision 0.82), and 15 % of the
#: usual duration left too little lead to warn of some overruns of a last task before the deadline (recall 0.90).
_OVERRUN_ALLOWANCE = 0.2


@dataclasses.dataclass(frozen=True)
class TaskProgress:
    """One task of the run: its state (mapped instances folded: the least advanced one) and, while running or
    queued, how long it has been so."""

    state: str | None
    elapsed_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Forecast:
    """Seconds from now until the run finishes: ``finish_s`` at the requested quantile, ``median_s``; the
    ``critical_path`` of remaining task ids; ``learning`` names tasks with too little history (then no finish);
    ``draws_s``, the simulated finishes in order."""

    finish_s: float
    median_s: float
    critical_path: tuple[str, ...]
    learning: tuple[str, ...] = ()
    draws_s: tuple[float, ...] = ()

    def chance_later_than(self, seconds: float) -> float:
        """The share of the simulated finishes more than ``seconds`` from now: the chance of missing a deadline
        that far away, which tells a 1-in-10 close call from a near-certain miss."""
        if not self.draws_s:
            return 1.0 if self.finish_s > seconds else 0.0
        return (len(self.draws_s) - bisect.bisect_right(self.draws_s, seconds)) / len(self.draws_s)


def _topological(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()
    for root in sorted(upstream):
        stack = [(root, False)]
        while stack:
            task, expanded = stack.pop()
            if expanded:
                if task not in seen:
                    seen.add(task)
                    order.append(task)
                continue
            if task in seen:
                continue
            stack.append((task, True))
            stack.extend((up, False) for up in upstream.get(task, ()) if up not in seen and up in upstream)
    return order


def _usual(durations: list[float]) -> list[float]:
    """The durations without the task's own past anomalies (beyond median + 3 scaled MADs): one slowed day in the
    history would otherwise be drawn often enough across 20 tasks to push every p90 past the deadline."""
    if len(durations) < 3:
        return durations
    median = statistics.median(durations)
    limit = median + 3 * 1.4826 * max(statistics.median(abs(d - median) for d in durations), 0.02 * median)
    return [d for d in durations if d <= limit]


def _remaining(progress: TaskProgress, durations: Sequence[float], usual_s: float, waits: Sequence[float],
               rng: random.Random, median_only: bool) -> float:
    def draw(values: Sequence[float]) -> float:
        if not values:
            return 0.0
        return quantile(values, 0.5) if median_only else rng.choice(values)

    state = progress.state
    if state in DONE_STATES:
        return 0.0
    if state == "running":
        longer = [d for d in durations if d > progress.elapsed_s]
        if not longer:
            return _OVERRUN_ALLOWANCE * usual_s
        return draw(longer) - progress.elapsed_s
    wait = draw(waits)
    if state == "queued":
        wait = max(wait - progress.elapsed_s, 0.0)
    return wait + draw(durations)


def forecast_finish(
    upstream: Mapping[str, Sequence[str]],
    progress: Mapping[str, TaskProgress],
    history: Mapping[str, Sequence[Sample]],
    *,
    q: float = 0.9,
    min_history: int = 5,
    seed: str = "",
    draws: int = DRAWS,
) -> Forecast:
    """Forecast the run's finish; ``upstream`` maps every task id to its upstream task ids."""
    order = _topological(upstream)
    durations = {t: _usual([s.duration_s for s in history.get(t, ())]) for t in order}
    waits = {t: [s.wait_s for s in history.get(t, ()) if s.wait_s is not None] for t in order}
    usual = {t: quantile(durations[t], 0.5) if durations[t] else 0.0 for t in order}
    pending = [t for t in order if progress.get(t, TaskProgress(None)).state not in DONE_STATES]
    learning = tuple(t for t in pending if len(durations[t]) < min_history)
    if learning:
        return Forecast(finish_s=0.0, median_s=0.0, critical_path=(), learning=learning)
    if not pending:
        return Forecast(finish_s=0.0, median_s=0.0, critical_path=())
    rng = random.Random(zlib.crc32(seed.encode("utf-8", "replace")))

    def simulate(median_only: bool) -> tuple[float, dict[str, float]]:
        finish: dict[str, float] = {}
        for task in order:
            start = max((finish.get(up, 0.0) for up in upstream.get(task, ())), default=0.0)
            own = _remaining(progress.get(task, TaskProgress(None)), durations[task], usual[task], waits[task], rng,
                             median_only)
            finish[task] = start + own if task in pending else 0.0
        return max(finish.values(), default=0.0), finish

    finishes = sorted(simulate(False)[0] for _ in range(max(draws, 1)))
    median_finish, by_task = simulate(True)
    return Forecast(finish_s=quantile(finishes, q), median_s=median_finish,
                    critical_path=_critical_path(upstream, by_task, pending), draws_s=tuple(finishes))


def _critical_path(upstream: Mapping[str, Sequence[str]], finish: Mapping[str, float],
                   pending: Sequence[str]) -> tuple[str, ...]:
    """The remaining tasks that decide the finish: from the last one back through the latest upstream each time."""
    remaining = set(pending)
    if not remaining:
        return ()
    task: str | None = max(pending, key=lambda t: finish.get(t, 0.0))
    path = []
    while task is not None and task in remaining:
        path.append(task)
        ups = [u for u in upstream.get(task, ()) if u in remaining]
        task = max(ups, key=lambda u: finish.get(u, 0.0)) if ups else None
    return tuple(reversed(path))

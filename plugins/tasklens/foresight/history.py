"""Expected durations from a task's recent successful attempts. Pure: samples in, a :class:`Baseline` out.

Two baselines, the more specific one when there is enough history for it:

* **hour of week**: runs that started in the same hour of the week (UTC, the neighbouring hours included) as the
  attempt being judged, summarised robustly: the median, and median + 3 scaled MADs as the high end (a nightly job
  that is slower on Mondays is judged against Mondays);
* **recent**: the plain quantiles (p50, p95) of the latest successes.

Mapped tasks are pooled per task: every map index's duration is one sample.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

__all__ = ["HOUR_OF_WEEK_MIN_SAMPLES", "Baseline", "Sample", "baseline", "hour_of_week", "quantile"]

#: A robust hour-of-week baseline needs this many samples in the attempt's hour band (else: recent history).
HOUR_OF_WEEK_MIN_SAMPLES = 8
#: Scales the median absolute deviation to a standard deviation for normally distributed durations.
_MAD_SCALE = 1.4826
#: The high end of the hour-of-week baseline: median + this many scaled MADs (about p99.9 for a normal spread).
_MAD_WIDTH = 3.0
_HOURS_PER_WEEK = 168


@dataclasses.dataclass(frozen=True)
class Sample:
    """One successful attempt: when it started (UTC), how long it ran, and how long it waited queued."""

    start: datetime | None
    duration_s: float
    wait_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Baseline:
    """What a task usually takes: ``usual_s`` (the median) and ``high_s`` (p95, or median + 3 MADs)."""

    usual_s: float
    high_s: float
    size: int  # samples it was built from
    method: str  # "hour_of_week" | "recent"


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` with linear interpolation between order statistics."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 1.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def hour_of_week(at: datetime) -> int:
    """0 (Monday 00:00-00:59 UTC) .. 167 (Sunday 23:00-23:59 UTC)."""
    utc = at.astimezone(timezone.utc) if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return utc.weekday() * 24 + utc.hour


def _near(hour: int, other: int) -> bool:
    distance = abs(hour - other) % _HOURS_PER_WEEK
    return min(distance, _HOURS_PER_WEEK - distance) <= 1


def _clean(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if s.duration_s is not None and math.isfinite(s.duration_s) and s.duration_s >= 0]


def baseline(samples: Iterable[Sample], *, at: datetime | None, min_history: int) -> Baseline | None:
    """The expected duration of an attempt that started ``at``, or None while the task is still learning (fewer
    than ``min_history`` samples)."""
    clean = _clean(samples)
    if len(clean) < max(1, min_history):
        return None
    if at is not None:
        hour = hour_of_week(at)
        band = [s.duration_s for s in clean if s.start is not None and _near(hour, hour_of_week(s.start))]
        if len(band) >= max(HOUR_OF_WEEK_MIN_SAMPLES, min_history):
            median = statistics.median(band)
            mad = statistics.median(abs(d - median) for d in band)
            # A MAD of 0 (identical runs) would make any jitter an anomaly: at least 2 % of the median.
            high = median + _MAD_WIDTH * _MAD_SCALE * max(mad, 0.02 * median)
            return Baseline(usual_s=median, high_s=high, size=len(band), method="hour_of_week")
    durations = [s.duration_s for s in clean]
    return Baseline(usual_s=quantile(durations, 0.5), high_s=quantile(durations, 0.95), size=len(durations),
                    method="recent")

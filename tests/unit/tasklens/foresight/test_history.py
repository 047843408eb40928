"""Expected durations from history: hour-of-week robust baseline, recent quantiles, learning."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasklens.foresight.history import HOUR_OF_WEEK_MIN_SAMPLES, Sample, baseline, hour_of_week, quantile

MONDAY_6 = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)


def test_quantile_interpolates_between_order_statistics():
    """p50 of 1..5 is 3, p95 interpolates between the two largest."""
    assert quantile([5, 1, 3, 2, 4], 0.5) == 3
    assert quantile([1, 2, 3, 4, 5], 0.95) == pytest.approx(4.8)


def test_too_little_history_is_learning():
    """Fewer samples than min_history: no baseline at all (no alert, the UI says learning)."""
    samples = [Sample(MONDAY_6, 60.0)] * 4
    assert baseline(samples, at=MONDAY_6, min_history=5) is None
    assert baseline(samples, at=MONDAY_6, min_history=4) is not None


def test_recent_quantiles_without_enough_same_hour_history():
    """Few runs in the attempt's hour of week: the plain median and p95 of the recent successes."""
    samples = [Sample(MONDAY_6 - timedelta(days=d), float(60 + d)) for d in range(1, 21)]  # daily, other weekdays
    base = baseline(samples, at=MONDAY_6, min_history=5)
    assert base is not None and base.method == "recent" and base.size == 20
    assert base.usual_s == pytest.approx(70.5) and base.high_s == pytest.approx(quantile([61 + i for i in range(20)],
                                                                                        0.95))


def test_hour_of_week_baseline_judges_mondays_against_mondays():
    """Mondays at 06:00 take 10 min, other days 2 min: a Monday attempt's baseline is the Mondays' (robust)."""
    mondays = [Sample(MONDAY_6 - timedelta(weeks=w), 600.0 + w) for w in range(1, HOUR_OF_WEEK_MIN_SAMPLES + 1)]
    others = [Sample(MONDAY_6 - timedelta(days=d), 120.0) for d in range(1, 60) if d % 7]
    base = baseline([*mondays, *others], at=MONDAY_6, min_history=5)
    assert base is not None and base.method == "hour_of_week" and base.size == HOUR_OF_WEEK_MIN_SAMPLES
    assert 600 < base.usual_s < 610 and base.high_s >= base.usual_s
    tuesday = baseline([*mondays, *others], at=MONDAY_6 + timedelta(days=1), min_history=5)
    assert tuesday is not None and tuesday.usual_s == 120.0


def test_one_outlier_does_not_move_the_robust_baseline():
    """Median and MAD ignore a single 10x run in the band (a mean and stdev would not)."""
    band = [Sample(MONDAY_6 - timedelta(weeks=w), 100.0 + w % 3) for w in range(1, 12)]
    band.append(Sample(MONDAY_6 - timedelta(weeks=12), 1000.0))
    base = baseline(band, at=MONDAY_6, min_history=5)
    assert base is not None and base.method == "hour_of_week"
    assert base.usual_s == pytest.approx(101.0) and base.high_s < 200


def test_hour_of_week_wraps_round_the_week():
    """Sunday 23:00 is next to Monday 00:00."""
    assert hour_of_week(datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc)) == 167
    sunday_late = [Sample(datetime(2026, 11, 29, 23, 10, tzinfo=timezone.utc) - timedelta(weeks=w), 50.0)
                   for w in range(HOUR_OF_WEEK_MIN_SAMPLES)]
    base = baseline(sunday_late, at=datetime(2026, 11, 30, 0, 5, tzinfo=timezone.utc), min_history=3)
    assert base is not None and base.method == "hour_of_week"


def test_bad_samples_are_ignored():
    """Negative, NaN and infinite durations are not history."""
    samples = [Sample(None, float("nan")), Sample(None, -1.0), Sample(None, float("inf")), Sample(None, 5.0)]
    assert baseline(samples, at=None, min_history=2) is None
    assert baseline(samples, at=None, min_history=1) == baseline([Sample(None, 5.0)], at=None, min_history=1)

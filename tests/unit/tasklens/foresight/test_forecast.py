"""Forecasting an in-flight run's finish along its DAG from each task's history."""

from __future__ import annotations

from tasklens.foresight.forecast import TaskProgress, forecast_finish
from tasklens.foresight.history import Sample

# extract -> preprocess -> train -> score, and extract -> report (short, off the critical path)
UPSTREAM = {"extract": (), "preprocess": ("extract",), "train": ("preprocess",), "score": ("train",),
            "report": ("extract",)}


def _history(**minutes: float) -> dict[str, list[Sample]]:
    return {task: [Sample(None, m * 60 * (1 + (i % 5 - 2) / 20), wait_s=5.0) for i in range(20)]
            for task, m in minutes.items()}


HISTORY = _history(extract=5, preprocess=10, train=30, score=5, report=2)


def test_a_fresh_run_takes_the_critical_path_sum_and_names_it():
    """Nothing started: about 5+10+30+5 min plus queue waits; the path skips the short report branch."""
    forecast = forecast_finish(UPSTREAM, {}, HISTORY, seed="run1")
    assert forecast.critical_path == ("extract", "preprocess", "train", "score")
    assert 50 * 60 <= forecast.median_s <= 52 * 60
    assert forecast.median_s <= forecast.finish_s <= 55 * 60


def test_done_and_running_tasks_count_only_what_is_left():
    """extract and preprocess done, train running 20 of its ~30 min: about 10 + 5 min left."""
    progress = {"extract": TaskProgress("success"), "preprocess": TaskProgress("success"),
                "report": TaskProgress("success"), "train": TaskProgress("running", 20 * 60)}
    forecast = forecast_finish(UPSTREAM, progress, HISTORY, seed="run1")
    assert forecast.critical_path == ("train", "score")
    assert 14 * 60 <= forecast.median_s <= 17 * 60


def test_a_task_running_past_all_its_history_is_given_a_fifth_of_its_usual_duration_left():
    """train at 60 min (history ~30, at most 33): 6 min left (a fifth of its usual 30) then score's ~5 min, instead
    of assuming it ends now; the same allowance at 120 min, so the forecast moves with the clock, not faster."""
    progress = {t: TaskProgress("success") for t in ("extract", "preprocess", "report")}
    slow = forecast_finish(UPSTREAM, {**progress, "train": TaskProgress("running", 60 * 60)}, HISTORY, seed="r")
    assert slow.critical_path == ("train", "score")
    assert 6 * 60 + 5 * 60 <= slow.median_s <= 6 * 60 + 5.5 * 60
    slower = forecast_finish(UPSTREAM, {**progress, "train": TaskProgress("running", 120 * 60)}, HISTORY, seed="r")
    assert slower.median_s == slow.median_s


def test_too_little_history_is_learning_and_forecasts_nothing():
    """A remaining task with fewer samples than min_history: no forecast at all."""
    history = {**HISTORY, "train": HISTORY["train"][:3]}
    forecast = forecast_finish(UPSTREAM, {}, history, min_history=5, seed="run1")
    assert forecast.learning == ("train",) and forecast.finish_s == 0.0


def test_the_same_run_gets_the_same_forecast():
    """Seeded by the run: a repeat pass does not jitter the alert."""
    assert forecast_finish(UPSTREAM, {}, HISTORY, seed="a") == forecast_finish(UPSTREAM, {}, HISTORY, seed="a")


def test_the_chance_of_finishing_later_than_a_deadline_comes_from_the_simulated_finishes():
    """A fresh run usually takes ~50 min: almost surely later than 40 min from now, almost surely not 60."""
    forecast = forecast_finish(UPSTREAM, {}, HISTORY, seed="run1")
    assert len(forecast.draws_s) == 200 and list(forecast.draws_s) == sorted(forecast.draws_s)
    assert forecast.chance_later_than(40 * 60) == 1.0
    assert forecast.chance_later_than(60 * 60) == 0.0
    assert 0.05 <= forecast.chance_later_than(forecast.finish_s - 1) <= 0.15  # just before the p90: ~1 in 10
    assert 0.4 <= forecast.chance_later_than(forecast.median_s) <= 0.6

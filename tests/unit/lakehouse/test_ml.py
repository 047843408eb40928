"""lakehouse.ml: time-based holdout, training and evaluation on synthetic data, versioned models."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest
from lakehouse import layout, ml

from tests.spark_fixtures import spark  # noqa: F401

COLUMNS = (
    "year int, month int, day int, carrier string, flight int, origin string, dest string, sched_dep_time int, "
    "hour_of_day int, day_of_week int, distance double, temp double, dewp double, humid double, "
    "wind_speed double, precip double, visib double, pressure double, plane_age int, dep_delay double, "
    "dep_delayed boolean"
)


def _silver(spark, months=(1, 2), n=300):  # noqa: F811
    rng = random.Random(7)
    rows = []
    for month in months:
        for i in range(n):
            hour = rng.randint(5, 23)
            precip = rng.choice([0.0, 0.0, 0.3])
            delayed = hour >= 17 or precip > 0  # learnable: evening flights and rain are late
            delay = 45.0 if delayed else -2.0
            rows.append(
                (
                    2013,
                    month,
                    1 + i % 28,
                    rng.choice(["AA", "UA"]),
                    i,
                    "EWR",
                    "IAH",
                    hour * 100,
                    hour,
                    1 + i % 7,
                    1400.0,
                    50.0,
                    40.0,
                    60.0,
                    5.0,
                    precip,
                    10.0,
                    None,
                    10,
                    delay,
                    delayed,
                )
            )
    return spark.createDataFrame(rows, COLUMNS)


def test_holdout_is_the_latest_month(spark):  # noqa: F811
    """With several months, the model is tested on the latest one and trained on the rest."""
    train, test, holdout = ml.split_by_time(_silver(spark, months=(1, 2, 3), n=20))
    assert holdout == "month 2013-03"
    assert {r["month"] for r in test.select("month").distinct().collect()} == {3}
    assert train.count() == 40


def test_single_month_holds_out_its_last_week(spark):  # noqa: F811
    """With one month, the last seven days are the holdout."""
    _, test, holdout = ml.split_by_time(_silver(spark, months=(1,), n=56))
    assert holdout == "days 22..28" and test.agg({"day": "min"}).first()[0] == 22


def test_training_learns_a_learnable_signal(spark):  # noqa: F811
    """On data where evening and rain mean delay, the classifier beats chance by far."""
    train, test, _ = ml.split_by_time(_silver(spark))
    metrics = ml.evaluate(ml.train(train, max_iter=20), test)
    assert metrics["roc_auc"] > 0.9 and metrics["balanced_accuracy"] > 80
    assert 0 < metrics["precision"] <= 1 and 0 < metrics["recall"] <= 1


def test_balanced_accuracy_weighs_both_classes_equally(spark):  # noqa: F811
    """A model that calls every flight punctual is 80 % accurate on 1-in-5 delays but 50 % balanced."""
    from pyspark.ml.linalg import Vectors

    rows = [(float(i < 20), 0.0, Vectors.dense([1.0, -1.0])) for i in range(100)]
    scored = spark.createDataFrame(rows, ["label", "prediction", "rawPrediction"])
    metrics = ml._metrics(scored)
    assert metrics["accuracy"] == 80.0 and metrics["balanced_accuracy"] == 50.0 and metrics["recall"] == 0.0


def test_versions_count_up(tmp_path):
    """Model versions sort in training order and say when they were trained."""
    zones = layout(tmp_path)
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert ml.next_version(zones, now) == "v0001-20240102T030405Z"
    (zones.models / "v0007-20240101T000000Z").mkdir(parents=True)
    assert ml.next_version(zones, now).startswith("v0008-")


def test_run_saves_model_metrics_and_predictions(spark, tmp_path):  # noqa: F811
    """A run saves the model with its metrics under a version and scores the latest month."""
    zones = layout(tmp_path)
    _silver(spark, n=120).write.partitionBy("year", "month").parquet(str(zones.silver))
    result = ml.run(spark, root=str(tmp_path))
    version = result.outputs["version"]
    assert set(result.metrics) == {"roc_auc", "balanced_accuracy", "precision", "recall"}
    saved = json.loads((zones.models / version / "metrics.json").read_text())
    assert saved["roc_auc"] == pytest.approx(result.metrics["roc_auc"]) and saved["holdout"] == "month 2013-02"
    assert ml.latest_metrics(str(tmp_path))["version"] == version
    assert (zones.models / version / "model" / "metadata").exists()
    predictions = spark.read.parquet(str(zones.gold / "predictions"))
    assert predictions.count() == result.records_out == 120
    assert predictions.filter("delay_probability between 0 and 1").count() == 120

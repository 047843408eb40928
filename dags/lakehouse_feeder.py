"""
### Lakehouse Feeder: landing -> bronze

Every month, ingests that month's flights file from the landing zone (plus any late file of an earlier month)
into bronze Parquet partitioned by `year`/`month`. Each file is validated against the declared schema
(`include/lakehouse/schemas.py`); a file with a drifted header or broken rows goes to `quarantine/` with a
reason, and none of its rows reach bronze. Emits `records_in`, `records_out`, `records_rejected` and Spark
job metrics through tasklens, and updates the `bronze.flights` asset (which schedules the Preprocessor).

A scheduled or backfilled run for logical date 2013-01-01 covers [2013-01-01, 2013-02-01) and ingests 2013-01;
a manual trigger (or `airflow dags test lakehouse_feeder 2013-03-01`) covers the month that ended before its
date (2013-02).

**Backfill 2013:** land the data (`python -m lakehouse.landing --months all`), then in the UI use
*Trigger -> Backfill* from 2013-01-01 to 2013-12-01 (catchup is off, so nothing runs by itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Airflow puts dags/ and plugins/ on sys.path, not the repository's include/: add it for lakehouse.*.
_INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)

from airflow.sdk import dag  # noqa: E402
from airflow.timetables.interval import CronDataIntervalTimetable  # noqa: E402
from lakehouse.dag_factory import BRONZE, DEFAULT_ARGS, START_DATE, ingest  # noqa: E402


@dag(
    dag_id="lakehouse_feeder",
    # Interval timetable: the run for [2013-01-01, 2013-02-01) has logical date 2013-01-01 and ingests 2013-01.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # the feeder manifest is written by one run at a time
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "feeder", "spark"],
    doc_md=__doc__,
)
def lakehouse_feeder():
    ingest(month="{{ data_interval_start.strftime('%Y-%m') }}", outlets=[BRONZE])


lakehouse_feeder()

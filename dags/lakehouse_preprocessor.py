"""
### Lakehouse Preprocessor: bronze -> silver

Runs whenever the Feeder updates `bronze.flights`. Drops cancelled flights, rows missing required values and
duplicate deliveries; joins hourly weather at the origin, the plane and the destination airport; derives
delay flags, hour-of-day, route and weather features. Then `check_silver` scores silver
(completeness, uniqueness, ranges, row-count delta, freshness) as `data_quality_score`: below 95 it warns
(tasklens alert rule), below 50 it fails and `silver.flights` is not updated.
"""

from __future__ import annotations

import sys
from pathlib import Path

_INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)

from airflow.sdk import dag  # noqa: E402
from lakehouse.dag_factory import BRONZE, DEFAULT_ARGS, SILVER, START_DATE, check_silver, preprocess  # noqa: E402


@dag(
    dag_id="lakehouse_preprocessor",
    schedule=[BRONZE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "preprocessor", "spark", "data-quality"],
    doc_md=__doc__,
)
def lakehouse_preprocessor():
    preprocess() >> check_silver(outlets=[SILVER])


lakehouse_preprocessor()

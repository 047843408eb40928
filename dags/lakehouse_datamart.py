"""
### Lakehouse Datamart: silver -> gold

Runs whenever `silver.flights` is updated. Builds the gold KPI tables as Parquet: on-time rate and delay
percentiles by carrier, origin, route and day; busiest routes; weather impact. `publish_sql` copies them into
the database of the Airflow connection `lakehouse_sql` (any SQLAlchemy database; skipped when not defined).
"""

from __future__ import annotations

import sys
from pathlib import Path

_INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)

from airflow.sdk import dag  # noqa: E402
from lakehouse.dag_factory import DEFAULT_ARGS, GOLD, SILVER, START_DATE, build_gold, publish_sql  # noqa: E402


@dag(
    dag_id="lakehouse_datamart",
    schedule=[SILVER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "datamart", "spark"],
    doc_md=__doc__,
)
def lakehouse_datamart():
    build_gold(outlets=[GOLD]) >> publish_sql()


lakehouse_datamart()

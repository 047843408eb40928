"""
### Lakehouse ML: departure-delay classifier

Runs whenever `silver.flights` is updated. Trains a class-weighted `pyspark.ml` logistic regression for
`dep_delay > 15` minutes, evaluates it on a time-based holdout (the latest month), saves model and metrics as
a new version under `models/flight_delay/`, emits `roc_auc` (tasklens warns below 0.6) and `balanced_accuracy`
(percent), and scores the latest month into `gold/predictions`. The landing fault `drift` makes it warn.
"""

from __future__ import annotations

import sys
from pathlib import Path

_INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)

from airflow.sdk import dag  # noqa: E402
from lakehouse.dag_factory import DEFAULT_ARGS, MODEL, SILVER, START_DATE, train_model  # noqa: E402


@dag(
    dag_id="lakehouse_ml",
    schedule=[SILVER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "ml", "spark"],
    doc_md=__doc__,
)
def lakehouse_ml():
    train_model(outlets=[MODEL])


lakehouse_ml()

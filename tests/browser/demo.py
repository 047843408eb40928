"""Demo data of the browser tests: a few DAGs (one fails with ``<script>`` in its exception) and seeded alerts.

Used by test_alerts_ui.py; ``python -m tests.browser.demo`` starts the same stack for a look by hand (it stops
after ``--minutes``).
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

FAILING_DAG = "orders_pipeline"
XSS_MESSAGE = "<script>alert('xss')</script> rejected row 17: amount must be >= 0"
DEMO_DAGS = (FAILING_DAG, "nightly_warehouse_load", "ml_feature_refresh", "reports_daily")

DAG_SOURCE = f'''
from datetime import datetime

from airflow.sdk import DAG, task
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG({FAILING_DAG!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["demo"]):

    @task(retries=0)
    def validate_orders():
        raise ValueError({XSS_MESSAGE!r})

    EmptyOperator(task_id="extract_orders") >> validate_orders()

for dag_id in {DEMO_DAGS[1:]!r}:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["demo"]) as dag:
        EmptyOperator(task_id="extract") >> EmptyOperator(task_id="load")
    globals()[dag_id] = dag
'''


def stack_env() -> dict[str, str]:
    """Shared secrets for all components: started together, each would otherwise write its own random
    ``jwt_secret`` into the new airflow.cfg and the workers' execution-API tokens would be refused."""
    import secrets

    return {"AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32)}


def write_dags(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo_dags.py").write_text(DAG_SOURCE)


def seed(store: Any, *, run_id: str, now: datetime | None = None, rng: random.Random | None = None) -> dict[str, int]:
    """Alerts like a week of production would leave, plus the failing attempt of ``run_id`` with its event.

    Returns ids: ``xss`` (the failing task's alert), ``warehouse`` (open, critical), ``features`` (open, warning).
    """
    from tasklens.alerts import Alert, AlertKind, Delivery, Severity

    now = now or datetime.now(timezone.utc)
    rng = rng or random.Random(7)
    clock_now = [now]
    store.clock = lambda: clock_now[0]
    slack = Delivery(route="data-eng", channel="slack", channel_type="slack", group_key="demo")

    def add(at: datetime, deliveries: list[Any] | None = None, **values: Any) -> int:
        clock_now[0] = at
        return int(store.record([(Alert(**values), deliveries or [])]).alert_ids[0])

    # A week of failed attempts for the chart (the events table), with a bad night two days ago.
    for hour in range(7 * 24):
        at = now - timedelta(hours=hour, minutes=rng.randint(0, 59))
        failures = rng.choice((0, 0, 0, 1, 1, 2)) + (6 if 44 <= hour <= 48 else 0)
        for n in range(failures):
            clock_now[0] = at
            store.record([], event={"event": rng.choice(("failed", "failed", "up_for_retry")),
                                    "dag_id": rng.choice(DEMO_DAGS[1:]), "task_id": "load",
                                    "run_id": f"scheduled__{hour}", "try_number": n + 1, "ts": at.isoformat()})
    ids: dict[str, int] = {}
    base = {"rule": "task_failed", "kind": AlertKind.FAILURE, "summary": "", "try_number": 1}
    ids["warehouse"] = add(
        now - timedelta(hours=3), [slack], **base, fingerprint="wh-load", severity=Severity.CRITICAL,
        title="nightly_warehouse_load.load failed", dag_id="nightly_warehouse_load", task_id="load",
        run_id="scheduled__2026", exception_type="psycopg2.OperationalError",
        exception_message="could not connect to server: Connection refused", labels={"team": "data-eng"},
    )
    ids["features"] = add(
        now - timedelta(hours=5), **{**base, "rule": "task_duration", "kind": AlertKind.DURATION},
        fingerprint="ml-slow", severity=Severity.WARNING, title="ml_feature_refresh.extract ran 3.4× its median",
        dag_id="ml_feature_refresh", task_id="extract", run_id="scheduled__2025",
        labels={"team": "ml", "tier": "2"},
    )
    acked = add(
        now - timedelta(hours=20), **base, fingerprint="reports-retry", severity=Severity.WARNING,
        title="reports_daily.load failed, retrying", dag_id="reports_daily", task_id="load",
        run_id="scheduled__2024", exception_type="TimeoutError", exception_message="S3 upload timed out after 60s",
    )
    store.acknowledge(acked, by="admin")
    resolved = add(
        now - timedelta(days=2), **base, fingerprint="wh-old", severity=Severity.CRITICAL,
        title="nightly_warehouse_load.extract failed", dag_id="nightly_warehouse_load", task_id="extract",
        run_id="scheduled__2020", exception_type="KeyError", exception_message="'customer_id'",
    )
    store.resolve(resolved, by="admin")
    # What the failing task reported itself (a custom alert raised by task code): always a record of its own,
    # whatever the rules in force made of the failure.
    clock_now[0] = now
    ids["xss"] = add(
        now, [slack], **{**base, "rule": "custom", "kind": AlertKind.CUSTOM}, fingerprint="orders-xss",
        severity=Severity.CRITICAL, title="Order validation rejected a batch", dag_id=FAILING_DAG,
        task_id="validate_orders", run_id=run_id, exception_type="ValueError", exception_message=XSS_MESSAGE,
        labels={"source": XSS_MESSAGE[:30]},
    )
    clock_now[0] = now
    store.record([], event={"event": "failed", "dag_id": FAILING_DAG, "task_id": "validate_orders",
                            "run_id": run_id, "try_number": 1, "ts": now.isoformat(), "duration_s": 0.4,
                            "exception_type": "ValueError", "exception_message": XSS_MESSAGE,
                            "hostname": "worker-1"})
    return ids


def main() -> None:  # pragma: no cover - a manual tool
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("home", type=Path)
    parser.add_argument("--minutes", type=float, default=20)
    args = parser.parse_args()
    from tasklens.store import Store
    from tests.integration.stack import AirflowStack

    write_dags(args.home / "dags")
    with AirflowStack(args.home / "home", args.home / "dags", stack_env()) as stack:
        run_id = stack.trigger(FAILING_DAG)
        print("run", run_id, stack.wait_for_run(FAILING_DAG, run_id), flush=True)
        for dag_id in DEMO_DAGS[1:]:
            stack.wait_for_dag(dag_id)
        store = Store(f"sqlite:///{stack.home / 'tasklens.db'}")
        print("seeded", seed(store, run_id=run_id), flush=True)
        print("url", stack.api_url, flush=True)
        time.sleep(args.minutes * 60)


if __name__ == "__main__":
    main()

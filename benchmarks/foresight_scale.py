"""All api-server checks in one pass at scale: 1,000,000 task instances, 10,000 DAGs, PostgreSQL.

The metadata DB of ``benchmarks/reconcile_scale.py`` (``tests/integration/airflow_metadata.py``: real Airflow 3.3
schema by ``airflow db migrate``, bulk-loaded history), plus what is in flight now: 300 running DAG runs, each with
one running task instance, and 100 queued ones. The rules file has ``task_overrun``, ``task_stuck`` and a deadline
on a third of the DAGs. A pass is the reconciler's: the leader lease, ``reconcile_once`` (killed / lost reports,
settled successes) and the in-flight checks (running too long, stuck, deadline forecasts), timed

* **cold**: a new leader's first in-flight pass (every running task's history read from ``task_instance``);
* **pass**: a steady pass (histories cached for 5 min, as the reconciler keeps them).

The bulk DB has no serialized DAGs, so deadline forecasts stop at the structure read (a forecast itself costs about
a millisecond per 20-task run: ``benchmarks/forecast.py``). Prints ``name: value`` lines, last
``all checks pass ms: <median>`` (target <= 100).

    python benchmarks/foresight_scale.py [TASK_INSTANCES] [ROUNDS]   # TASKLENS_BENCH_PROFILE=1: profile a pass
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import psycopg2  # noqa: E402

from tests.integration.airflow_metadata import build_metadata_db  # noqa: E402
from tests.integration.postgres import PostgresServer  # noqa: E402
from tests.integration.stack import airflow_env  # noqa: E402

RUNNING = 300
QUEUED = 100
RULES = """
rules:
  task_overrun: {factor: 2, min_history: 3, min_duration: 1m}
  task_stuck: {max_queued: 10m, max_scheduled: 10m}
deadlines:
  third:
    match: {dag_id: ["dag_*0", "dag_*3", "dag_*6"]}
    within: 2h
"""


def add_in_flight(dsn: str, now: datetime) -> None:
    """Running runs with one running task each (dag_0..dag_299) and queued task instances (dag_300..dag_399)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            cur.execute(
                """
                INSERT INTO dag_run (dag_id, run_id, run_type, run_after, logical_date, start_date, state,
                                     clear_number, span_status, data_interval_end)
                SELECT 'dag_' || i, 'inflight__' || i, 'scheduled', %(now)s - interval '30 minutes',
                       %(now)s - interval '30 minutes', %(now)s - interval '30 minutes', 'running', 0, 'active',
                       %(now)s - interval '30 minutes'
                FROM generate_series(0, %(runs)s - 1) AS i
                """,
                {"now": now, "runs": RUNNING + QUEUED},
            )
            cur.execute(
                """
                INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, start_date, state, try_number,
                                           max_tries, hostname, pool, pool_slots, queue, priority_weight, operator,
                                           last_heartbeat_at, queued_dttm, span_status)
                SELECT md5('inflight' || i)::uuid, 'task_' || (i %% 10), 'dag_' || i, 'inflight__' || i, -1,
                       CASE WHEN i < %(running)s THEN %(now)s - (i %% 40) * interval '1 minute' END,
                       CASE WHEN i < %(running)s THEN 'running' ELSE 'queued' END, 1, 1, 'worker-1', 'default_pool',
                       1, 'default', 1, 'PythonOperator', %(now)s, %(now)s - (i %% 30) * interval '1 minute', 'active'
                FROM generate_series(0, %(runs)s - 1) AS i
                """,
                {"now": now, "runs": RUNNING + QUEUED, "running": RUNNING},
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE task_instance")
            cur.execute("ANALYZE dag_run")
    finally:
        conn.close()


def main(task_instances: int, rounds: int) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    home = Path(tempfile.mkdtemp(prefix="tasklens-bench-foresight-"))
    (home / "dags").mkdir()
    rules = home / "rules.yml"
    rules.write_text(RULES)
    with PostgresServer() as pg:
        airflow_url = build_metadata_db(pg, home, task_instances, now)
        add_in_flight(pg.dsn("airflow"), now)
        store_url = pg.create_database("tasklens")
        os.environ.update(airflow_env(home, home / "dags", {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url,
            "AIRFLOW__TASKLENS__STORE_URL": store_url,
            "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
            "AIRFLOW__TASKLENS__EVENTS_PATH": "",
            "AIRFLOW__METRICS__STATSD_ON": "False",
        }))
        from tasklens import reconcile, store
        from tasklens.foresight import checks

        alert_store = store.get_store(migrate=True)
        lease = reconcile.LeaderLease(alert_store, ttl_s=15.0)
        steady_since = now - reconcile.REVISIT - timedelta(seconds=5)

        def full_pass() -> None:
            assert lease.acquire()
            reconcile.reconcile_once(now=now, grace=timedelta(seconds=2), since=steady_since)

        def cold_checks() -> checks.CheckResult:
            return checks.InFlightChecks().run(alert_store, now)

        first = cold_checks()
        print(f"in flight: {first.in_flight} attempts, {first.runs} runs with a deadline; raised {first.raised}, "
              f"learning {len(first.learning)}", flush=True)
        full_pass()  # the reconciler's own cache warms up
        timings: dict[str, list[float]] = {"cold in-flight checks": [], "all checks pass": []}
        for _ in range(rounds):
            for name, func in (("cold in-flight checks", cold_checks), ("all checks pass", full_pass)):
                started = time.perf_counter()
                func()
                timings[name].append((time.perf_counter() - started) * 1000)
        if os.environ.get("TASKLENS_BENCH_PROFILE"):  # where a steady pass spends its time
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(full_pass)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        store.reset_stores()
    for name, values in timings.items():
        print(f"{name} ms: median {statistics.median(values):.1f}, max {max(values):.1f} ({rounds} rounds)")
    print(f"all checks pass ms: {statistics.median(timings['all checks pass']):.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, int(sys.argv[2]) if len(sys.argv) > 2 else 10)

"""A PostgreSQL Airflow metadata DB with many task instances: the real schema, bulk-loaded rows.

``airflow db migrate`` builds the schema of the installed Airflow; ``generate_series`` then loads DAG runs, task
instances and archived tries server-side (a million rows in well under a minute): 10 tasks per run, runs spread
evenly over ``span`` (10 days) up to ``now``, 90 % success, 5 % failed, 0.2 % up_for_retry, the rest skipped /
upstream_failed; every 20th task instance is on its second try, its first archived in ``task_instance_history``
as Airflow archives a retried try (state ``failed``). Heartbeats stop 0-4 s before each attempt's end.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2

from tests.integration.postgres import PostgresServer
from tests.integration.stack import airflow_env, run_airflow

DAGS = 10_000
TASKS_PER_RUN = 10
SPAN = timedelta(days=10)


def build_metadata_db(
    pg: PostgresServer, home: Path, task_instances: int, now: datetime, *, span: timedelta = SPAN
) -> str:
    """Airflow's schema by ``airflow db migrate``, then ``task_instances`` TIs ending up to ``now``; returns the URL."""
    url = pg.create_database("airflow")
    env = airflow_env(home, home / "dags", {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url})
    print(f"airflow db migrate: {run_airflow(env, 'db', 'migrate', timeout=900):.0f} s", flush=True)

    runs = task_instances // TASKS_PER_RUN
    step_s = span.total_seconds() / runs  # one run every step_s seconds, the newest ending now
    params = {"now": now, "runs": runs, "step": step_s, "dags": DAGS, "tasks": TASKS_PER_RUN, "n": task_instances}
    started = time.monotonic()
    conn = psycopg2.connect(pg.dsn("airflow"))
    try:
        with conn, conn.cursor() as cur:
            # Bulk load without per-row foreign-key triggers (dag / dag_version rows are not needed by the queries).
            cur.execute("SET session_replication_role = replica")
            cur.execute(
                """
                INSERT INTO dag_run (dag_id, run_id, run_type, run_after, logical_date, start_date, end_date, state,
                                     clear_number, span_status)
                SELECT 'dag_' || (r %% %(dags)s), 'scheduled__' || r, 'scheduled', t, t, t, t + interval '10 minutes',
                       'success', 0, 'ended'
                FROM (SELECT r, %(now)s::timestamptz - (%(runs)s - r) * %(step)s * interval '1 second' AS t
                      FROM generate_series(0, %(runs)s - 1) AS r) AS runs
                """,
                params,
            )
            cur.execute(
                """
                INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, start_date, end_date, duration,
                                           state, try_number, max_tries, hostname, pool, pool_slots, queue,
                                           priority_weight, operator, last_heartbeat_at, span_status)
                SELECT md5('ti' || i)::uuid, 'task_' || (i %% %(tasks)s), 'dag_' || ((i / %(tasks)s) %% %(dags)s),
                       'scheduled__' || (i / %(tasks)s), -1,
                       CASE WHEN h < 100 AND h >= 52 THEN NULL ELSE s END,
                       CASE WHEN h < 100 AND h >= 80 THEN NULL ELSE s + d * interval '1 second' END,
                       d,
                       CASE WHEN h < 50 THEN 'failed' WHEN h < 52 THEN 'up_for_retry' WHEN h < 80 THEN 'skipped'
                            WHEN h < 100 THEN 'upstream_failed' ELSE 'success' END,
                       CASE WHEN i %% 20 = 7 THEN 2 ELSE 1 END, 1, 'worker-' || (i %% 8), 'default_pool', 1,
                       'default', 1, 'PythonOperator',
                       CASE WHEN h < 100 AND h >= 52 THEN NULL
                            ELSE s + (d - (i %% 5)) * interval '1 second' END,
                       'ended'
                FROM (SELECT i, (i * 7919) %% 1000 AS h, 5 + (i * 31) %% 55 AS d,
                             %(now)s::timestamptz - (%(runs)s - i / %(tasks)s) * %(step)s * interval '1 second'
                             - interval '70 seconds' + (i %% %(tasks)s) * interval '1 second' AS s
                      FROM generate_series(0::bigint, %(n)s - 1) AS i) AS tis
                """,
                params,
            )
            # Airflow archives a retried try as "failed" (TaskInstanceHistory.record_ti runs before up_for_retry).
            cur.execute(
                """
                INSERT INTO task_instance_history (task_instance_id, task_id, dag_id, run_id, map_index, try_number,
                                                   start_date, end_date, duration, state, max_tries, hostname, pool,
                                                   pool_slots, queue, operator, span_status)
                SELECT md5('tih' || ti.id)::uuid, ti.task_id, ti.dag_id, ti.run_id, ti.map_index, 1,
                       ti.start_date - interval '120 seconds', ti.start_date - interval '60 seconds', 60, 'failed', 1,
                       ti.hostname, ti.pool, 1, ti.queue, ti.operator, 'ended'
                FROM task_instance ti WHERE ti.try_number = 2 AND ti.start_date IS NOT NULL
                """
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute("SELECT count(*) FROM task_instance")
            tis = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM task_instance_history")
            history = cur.fetchone()[0]
    finally:
        conn.close()
    print(f"loaded {tis:,} task instances, {history:,} archived tries in {time.monotonic() - started:.0f} s",
          flush=True)
    return url

"""Reconciler pass at scale: a PostgreSQL Airflow metadata DB with 1,000,000 task instances.

Builds a real Airflow 3.3 schema (``airflow db migrate`` against a throwaway PostgreSQL from
``tests/integration/postgres.py``), bulk-loads task instances with ``generate_series`` (10,000 DAGs x 10 runs x
10 tasks over the last 10 days: 90 % success, 5 % failed, 0.2 % up_for_retry, the rest skipped / upstream_failed;
every 20th task instance has an archived first try in ``task_instance_history``), and a tasklens store (same
server) that already holds every failure the workers reported. Then, interleaved, in rounds:

* **pass** (steady state): the leader lease + one :func:`tasklens.reconcile.reconcile_once` over the window a
  leader's later passes cover (``REVISIT`` + one interval);
* **catch-up pass**: a new leader's first pass over the whole 6 h lookback;
* **baseline**: the previous reconciler's pass: ORM ``TaskInstance`` / ``TaskInstanceHistory`` objects filtered on
  state and end_date over 6 h, then the store's reported failures.

Prints the plans (EXPLAIN ANALYZE) of both queries and, last, ``reconcile pass ms: <median>``.

    python benchmarks/reconcile_scale.py [TASK_INSTANCES] [ROUNDS]
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

from tests.integration.airflow_metadata import build_metadata_db  # noqa: E402
from tests.integration.postgres import PostgresServer  # noqa: E402
from tests.integration.stack import airflow_env  # noqa: E402

INTERVAL_S = 5.0  # the default reconcile_interval_s


def fill_store(store_url: str, airflow_url: str, now: datetime) -> int:
    """The store as the workers left it: every failed attempt of the last 6 h 10 min is reported."""
    import sqlalchemy as sa

    from tasklens.store import Store, events_table, meta_table

    engine = sa.create_engine(airflow_url)
    since = now - timedelta(hours=6, minutes=10)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT dag_id, task_id, run_id, map_index, try_number, end_date FROM task_instance "
                "WHERE state IN ('failed', 'up_for_retry') AND end_date >= :since UNION ALL "
                "SELECT dag_id, task_id, run_id, map_index, try_number, end_date FROM task_instance_history "
                "WHERE state IN ('failed', 'up_for_retry') AND end_date >= :since"
            ),
            {"since": since},
        ).all()
    engine.dispose()
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(
            events_table.insert(),
            [
                {"dag_id": r[0], "task_id": r[1], "run_id": r[2], "map_index": r[3], "try_number": r[4],
                 "event": "failed", "ts": r[5], "payload": {}, "outcome": "failure"}
                for r in rows
            ],
        )
        conn.execute(meta_table.update().where(meta_table.c.key == "watching_since")
                     .values(value=(now - timedelta(days=7)).isoformat()))
    store.dispose()
    return len(rows)


def old_pass(now: datetime) -> int:
    """The previous reconciler's pass: ORM objects over the 6 h lookback, 15 s grace, then the store's reports."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tasklens import reconcile, store

    lookback = timedelta(hours=6)
    since, until = now - lookback, now - timedelta(seconds=15)
    found: list = []
    with create_session() as session:
        for model in (TaskInstance, TaskInstanceHistory):
            query = select(model).where(model.state.in_(("failed", "up_for_retry")), model.end_date >= since,
                                        model.end_date <= until)
            found.extend(session.scalars(query).all())
        for row in found:
            session.expunge(row)
    reported = store.get_store().reported_failure_attempts(since - lookback)
    return len(reconcile.unreported(found, reported))


def explain(url: str, query, title: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params).scalars().all()
    engine.dispose()
    print(f"\n-- {title}\n" + "\n".join(plan), flush=True)


def main(task_instances: int, rounds: int) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    home = Path(tempfile.mkdtemp(prefix="tasklens-bench-reconcile-"))
    (home / "dags").mkdir()
    with PostgresServer() as pg:
        airflow_url = build_metadata_db(pg, home, task_instances, now)
        store_url = pg.create_database("tasklens")
        reported = fill_store(store_url, airflow_url, now)
        print(f"tasklens store: {reported:,} reported failures in the lookback", flush=True)

        # This process is the api-server: Airflow's session on the metadata DB, tasklens's store.
        os.environ.update(airflow_env(home, home / "dags", {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url,
            "AIRFLOW__TASKLENS__STORE_URL": store_url,
            "AIRFLOW__TASKLENS__EVENTS_PATH": "",
            "AIRFLOW__METRICS__STATSD_ON": "False",
        }))
        from airflow.models.taskinstance import TaskInstance
        from sqlalchemy import select

        from tasklens import reconcile, store

        lease = reconcile.LeaderLease(store.get_store(), ttl_s=3 * INTERVAL_S)
        steady_since = now - reconcile.REVISIT - timedelta(seconds=INTERVAL_S)
        grace = timedelta(seconds=2)

        def new_pass() -> reconcile.PassResult:
            assert lease.acquire()
            return reconcile.reconcile_once(now=now, grace=grace, since=steady_since)

        def catch_up() -> reconcile.PassResult:
            return reconcile.reconcile_once(now=now, grace=grace)

        checks = {"pass": new_pass(), "catch-up": catch_up()}
        found = {name: r.killed + r.lost_reports + r.waiting for name, r in checks.items()}
        print(f"unreported attempts: pass {found['pass']}, catch-up {found['catch-up']}, baseline {old_pass(now)}",
              flush=True)
        explain(airflow_url, reconcile.ended_attempts_query(steady_since, now - grace), "pass query (steady state)")
        explain(airflow_url, reconcile.ended_attempts_query(now - timedelta(hours=6), now - grace),
                "catch-up query (6 h)")
        old_since = now - timedelta(hours=6)
        explain(airflow_url, select(TaskInstance).where(TaskInstance.state.in_(("failed", "up_for_retry")),
                                                        TaskInstance.end_date >= old_since,
                                                        TaskInstance.end_date <= now),
                "baseline ORM query (task_instance part)")

        timings: dict[str, list[float]] = {"pass": [], "catch-up": [], "baseline": []}
        for _ in range(rounds):  # interleaved rounds
            for name, func in (("pass", new_pass), ("catch-up", catch_up), ("baseline", lambda: old_pass(now))):
                started = time.perf_counter()
                func()
                timings[name].append((time.perf_counter() - started) * 1000)
        store.reset_stores()
    print()
    for name, values in timings.items():
        print(f"{name} ms: median {statistics.median(values):.1f}, max {max(values):.1f} ({rounds} rounds)")
    ratio = statistics.median(timings["baseline"]) / statistics.median(timings["pass"])
    print(f"baseline / pass: {ratio:.0f}x")
    print(f"reconcile pass ms: {statistics.median(timings['pass']):.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, int(sys.argv[2]) if len(sys.argv) > 2 else 15)

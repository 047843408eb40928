"""The reconciler against PostgreSQL: its one indexed query on a real Airflow schema, and its leader lease.

A throwaway PostgreSQL server; Airflow's schema from ``airflow db migrate``; rows bulk-loaded as in
``benchmarks/reconcile_scale.py`` (tests/integration/airflow_metadata.py).
"""

from __future__ import annotations

import multiprocessing
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.airflow_metadata import build_metadata_db
from tests.integration.postgres import postgres_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def airflow_url(postgres_server):  # noqa: F811
    home = Path(tempfile.mkdtemp(prefix="tasklens-reconcile-pg-"))
    (home / "dags").mkdir()
    return build_metadata_db(postgres_server, home, 20_000, NOW, span=timedelta(days=1))


def _keys(rows) -> set[tuple]:
    return {(r.dag_id, r.task_id, r.run_id, r.map_index, r.try_number) for r in rows}


@pytest.mark.parametrize("window", [timedelta(minutes=30), timedelta(hours=6)])
def test_indexed_query_finds_exactly_what_filtering_every_row_finds(airflow_url, window):
    """The heartbeat-bounded query returns the same failed attempts (TIs and archived tries) as a plain filter on
    state and end_date over every row, which is what the previous reconciler's ORM query selected."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory

    from tasklens import reconcile

    since, until = NOW - window, NOW - timedelta(seconds=2)
    engine = sa.create_engine(airflow_url)
    with engine.connect() as conn:
        found = conn.execute(reconcile.ended_attempts_query(since, until)).all()
        expected = {}
        for table in (TaskInstance.__table__, TaskInstanceHistory.__table__):
            expected[table.name] = conn.execute(
                sa.select(table.c.dag_id, table.c.task_id, table.c.run_id, table.c.map_index, table.c.try_number)
                .where(table.c.state.in_(("failed", "up_for_retry")), table.c.end_date >= since,
                       table.c.end_date <= until)
            ).all()
    engine.dispose()
    assert expected["task_instance"] and expected["task_instance_history"]  # both kinds are in the window
    assert len(found) == sum(map(len, expected.values()))
    assert _keys(found) == _keys(expected["task_instance"]) | _keys(expected["task_instance_history"])


def _take(url: str, holder: str, start, results) -> None:
    from tasklens import reconcile
    from tasklens.store import Store

    store = Store(url)
    lease = reconcile.LeaderLease(store, ttl_s=60, holder=holder)
    start.wait(30)
    results.put((holder, lease.acquire()))
    store.dispose()


def test_exactly_one_of_racing_processes_takes_the_lease(postgres_server):  # noqa: F811
    """Eight processes start at once: one leads, the others are refused until the lease expires by the DB clock."""
    from tasklens import reconcile
    from tasklens.store import Store

    url = postgres_server.create_database("tasklens_leases")
    Store(url).dispose()  # migrated once, before the race
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_take, args=(url, f"api-{n}", start, results)) for n in range(8)]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(30)
    assert sum(outcomes.values()) == 1, outcomes
    leader = next(holder for holder, won in outcomes.items() if won)
    store = Store(url)
    other = reconcile.LeaderLease(store, ttl_s=60, holder="api-late")
    assert not other.acquire()
    assert reconcile.LeaderLease(store, ttl_s=-1, holder=leader).acquire()  # the leader's lease runs out
    assert other.acquire()
    store.dispose()

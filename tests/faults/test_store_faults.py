"""Faults 1-4 of the promise: the store locked, unreachable or on an old schema while tasks fail.

Real scheduler, dag-processor and api-server (LocalExecutor), a real SQLite or PostgreSQL store, a local Slack
server. Each test injects the fault for longer than Airflow's task_success_overtime (20 s) and checks: task states
and try counts as without tasklens, every failure spooled rather than held or lost, and once the store is back,
every failure stored and messaged exactly once.
"""

from __future__ import annotations

import pytest

from tests.faults import scenarios

pytestmark = pytest.mark.integration


def test_sqlite_store_locked_for_60s_loses_nothing_and_holds_no_task(sqlite_stack, slack):
    """Fault 1: tasks fail while another writer holds the store's lock for 60 s; they end as usual (no SIGTERM),
    their failures wait in the spool, and after the lock each is stored and sent once."""
    outcome = scenarios.sqlite_store_locked(sqlite_stack, slack)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates, outcome.tasks_changed) == (3, 0, 0)


def test_scheduler_and_dag_processor_reports_do_not_wait_for_a_locked_store(sqlite_stack, slack, markers, statsd):
    """Fault 3: a lost worker is reported by the scheduler's listener and the dag-processor's callback while the
    store is locked; the scheduler keeps scheduling (a control DAG runs meanwhile) and the attempt alerts once."""
    outcome = scenarios.scheduler_path_with_store_locked(sqlite_stack, slack, markers, statsd)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates) == (1, 0)


@pytest.mark.parametrize("mode", ["stopped", "stalled"])
def test_postgres_store_unreachable_loses_nothing(postgres_stack, slack, postgres, postgres_proxy, mode):
    """Fault 2: the PostgreSQL store is stopped, or its port stops answering (a proxy that passes no byte); tasks
    end as usual, their failures are spooled within the store budget, and stored and sent once when it is back."""
    outcome = scenarios.postgres_store_unreachable(postgres_stack, slack, postgres, postgres_proxy, mode=mode)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates, outcome.tasks_changed) == (3, 0, 0)


def test_old_store_schema_is_migrated_by_the_api_server_not_by_tasks(tmp_path, slack, markers):
    """Fault 4: tasks meeting a store at an old schema spool and leave it alone; the api-server's start migrates
    it and delivers every failure once."""
    outcome = scenarios.old_schema_until_api_server_starts(tmp_path / "home", slack, markers)
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates, outcome.tasks_changed) == (3, 0, 0)

"""Faults 16 and 19 through the real stages and a real ``airflow dags test``.

Faults 5 and 6 are tested in tests/integration/test_config_faults.py, fault 7 in tests/integration/
test_killed_tasks.py and fault 17 in tests/integration/test_reconcile_postgres.py (query and leader lease); their
scenarios here (tests/faults/run_scenarios.py) feed benchmarks/faults.py's table without running them twice in CI.
"""

from __future__ import annotations

import pytest

from tests.faults import run_scenarios


def test_one_attempt_reported_by_several_processes_counts_once():
    """Fault 16: the scheduler's listener and the dag-processor's doubled callback report one lost worker, two
    reconcilers one kill: two attempts, two stream lines, two counted failures, two alerts."""
    outcome = run_scenarios.one_attempt_many_reporters()
    assert outcome.violations == []
    assert (outcome.alerts_stored, outcome.duplicates) == (2, 0)


@pytest.mark.integration
def test_an_alert_operator_with_bad_input_fails_its_task():
    """Fault 19: an AlertOperator with an unknown severity fails its task and says how to fix it."""
    outcome = run_scenarios.explicit_calls_with_bad_input()
    assert outcome.violations == []

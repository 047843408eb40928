"""`tasklens check-config` names a ``deadlines:`` glob that matches no DAG: the file, the key and the fix, exit 1.

A real Airflow metadata DB (``airflow db migrate``'s SQLite, the DAG written by ``airflow dags reserialize``) and
the real CLI in a subprocess, as a deploy step runs it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.stack import airflow_env, migrate, run_airflow

pytestmark = pytest.mark.integration

DAG = """
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("nightly_load", schedule=None, start_date=datetime(2026, 1, 1)):
    EmptyOperator(task_id="load")
"""
RULES = """
deadlines:
  nightly:
    match: {{dag_id: ["nightly_*", "{glob}"]}}
    within: 2h
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("check-config-home")
    (home / "dags").mkdir()
    (home / "dags" / "nightly.py").write_text(DAG)
    env = airflow_env(home, home / "dags", {"AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{home / 'tasklens.db'}",
                                            "AIRFLOW__TASKLENS__RULES_FILE": str(home / "rules.yml")})
    migrate(env)
    run_airflow(env, "dags", "reserialize", timeout=300)
    return home, env


def _check_config(env, home, glob: str) -> subprocess.CompletedProcess[str]:
    (home / "rules.yml").write_text(RULES.format(glob=glob))
    return subprocess.run([sys.executable, "-m", "tasklens", "check-config"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_deadline_glob_matching_no_dag_is_named_with_the_file_the_key_and_the_fix(airflow_home):
    """``nightly_lod*`` (a typo) matches none of Airflow's DAGs: exit 1, the rules file, ``deadlines.nightly.match
    .dag_id`` and the fix; ``nightly_*`` matches nightly_load and is not reported. With the typo fixed: exit 0."""
    home, env = airflow_home
    done = _check_config(env, home, "nightly_lod*")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"tasklens check-config: ERROR: {home / 'rules.yml'}: deadlines.nightly.match.dag_id: 'nightly_lod*' "
            "matches no DAG Airflow knows (1 DAGs). Fix: correct the glob") in done.stdout
    assert "'nightly_*'" not in done.stdout
    fixed = _check_config(env, home, "nightly_load")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "matches no DAG" not in fixed.stdout and "check-config: OK" in fixed.stdout

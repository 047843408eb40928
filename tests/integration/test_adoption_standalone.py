"""Adoption from a bare venv: ``pip install`` the built wheel next to Airflow, one Slack connection, ``airflow
standalone``, one of Airflow's own example DAGs (unmodified) failing through an env var, and the alert in Slack."""

from __future__ import annotations

import pytest

from compat.adoption import EXAMPLE_DAG, FAILING_TASK, adopt
from compat.foreign import adoption_requirements, build_wheel, cached_venv
from tasklens.testing import SlackSink

pytestmark = pytest.mark.integration


def test_first_alert_from_a_bare_venv_with_no_dag_edits(tmp_path, record_property):
    """A venv holding only Airflow 3.3.2, its providers from the lock and the tasklens wheel (nothing of this
    repository on its path) alerts Slack about the example task the env var made fail, and lists it in the UI.
    (The venv is built once per lock and shared with the upgrade test; ``benchmarks/adoption.py`` times a fresh one.)"""
    venv = cached_venv("venv-3.3", adoption_requirements())
    with SlackSink() as slack:
        wheel = build_wheel(tmp_path / "dist")
        result = adopt(tmp_path, wheel, slack.conn_uri(), slack.texts, venv=venv)
    for step in ("venv_install_s", "start_s", "first_alert_s", "total_s"):
        record_property(step, round(getattr(result, step), 1))
    assert "/site-packages/tasklens/" in result.tasklens_file, result.tasklens_file
    assert result.run_state == "failed"
    assert any(FAILING_TASK in text and EXAMPLE_DAG in text for text in result.alert_texts), result.alert_texts
    listed = {(alert["dag_id"], alert["task_id"]) for alert in result.ui_alerts}
    assert (EXAMPLE_DAG, FAILING_TASK) in listed, result.ui_alerts

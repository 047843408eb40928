"""Upgrade in place: a deployment running the previous release's wheel upgrades to the built one, runs ``tasklens db
upgrade``, and keeps every alert it had (listed in the UI, not sent again)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import tasklens
from compat.foreign import (
    CONSTRAINTS,
    PREVIOUS_RELEASE,
    Standalone,
    adoption_requirements,
    build_release_wheel,
    build_wheel,
    cached_venv,
    install,
    install_tasklens,
    installed_version,
    wait_for,
)
from tasklens.testing import SlackSink

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "dags_compat"


def alerts_of(airflow: Standalone) -> dict[int, dict]:
    return {a["id"]: a for a in airflow.api("GET", "/tasklens/api/alerts?dag_id=tl_compat&limit=500")["alerts"]}


def test_upgrade_keeps_every_alert(tmp_path):
    """Alerts recorded by the previous release are all still listed by the UI after the upgrade and ``tasklens db
    upgrade``, with their occurrences, and are not delivered a second time; a new failure is still recorded."""
    old_wheel = build_release_wheel(PREVIOUS_RELEASE, tmp_path)
    new_wheel = build_wheel(tmp_path / "dist-new")
    assert old_wheel.name != new_wheel.name, (old_wheel, new_wheel)  # a real version step
    venv = cached_venv("venv-3.3", adoption_requirements())
    install_tasklens(venv, old_wheel)  # replaces whatever an earlier run left there
    old_version = installed_version(venv)
    assert old_version != tasklens.__version__

    home = tmp_path / "home"
    with SlackSink() as slack:
        env = {"AIRFLOW_CONN_TASKLENS_SLACK": slack.conn_uri(), "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5"}
        with Standalone(venv, home, DAGS, env) as airflow:
            run_id = airflow.trigger("tl_compat")
            assert airflow.wait_for_run("tl_compat", run_id) == "failed"
            wait_for(lambda: [t for t in slack.texts() if "tl_compat" in t], 90, "no alert from the old release")
            before = alerts_of(airflow)
        sent_before = len(slack.texts())
        assert before

        install(venv, [new_wheel], CONSTRAINTS, upgrade=True)
        assert installed_version(venv) == tasklens.__version__
        upgraded = subprocess.run([str(venv / "bin" / "tasklens"), "db", "upgrade"], env=airflow.env,
                                  capture_output=True, text=True, timeout=120, check=False)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        assert "tasklens db upgrade" in upgraded.stdout

        with Standalone(venv, home, DAGS, env) as airflow:
            after = alerts_of(airflow)
            for alert_id, old in before.items():
                assert alert_id in after, (alert_id, sorted(after))
                for field in ("dag_id", "task_id", "title", "severity", "status", "fingerprint", "occurrences"):
                    assert after[alert_id][field] == old[field], (field, old, after[alert_id])
                status, detail = airflow.request("GET", f"/tasklens/api/alerts/{alert_id}")
                assert status == 200 and detail["id"] == alert_id
            time.sleep(3)  # several dispatcher passes: the old deliveries stay sent
            assert len(slack.texts()) == sent_before
            run_id = airflow.trigger("tl_compat")
            assert airflow.wait_for_run("tl_compat", run_id) == "failed"
            # The same failure again folds into its open alert (deduplicated, not sent twice): one more occurrence.
            seen_before = sum(alert["occurrences"] for alert in before.values())
            wait_for(lambda: sum(a["occurrences"] for a in alerts_of(airflow).values()) > seen_before, 90,
                     "the failure after the upgrade was not recorded")

"""The cluster policy's cost on the common task: no retry preset, nothing to check, no retry module loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from tasklens import policy

_PROBE = """
import json, sys
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from tasklens import policy
with DAG("tl_policy_plain", schedule=None):
    task = EmptyOperator(task_id="plain", retries=2)
policy.task_policy(task)
print(json.dumps({"callbacks": [type(cb).__name__ for cb in task.on_failure_callback],
                  "loaded": sorted(m for m in ("tasklens.retry", "airflow.sdk.definitions.retry_policy")
                                   if m in sys.modules)}))
"""


def test_a_task_with_no_preset_and_usable_retries_loads_no_retry_module():
    """A task the policy gives no preset and whose own retry settings are usable gets its failure callback, and
    neither tasklens's retry module nor Airflow's retry-policy module is imported for it (a process that parses a
    DAG pays for them only when a task needs them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__TASKLENS__")}
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe == {"callbacks": ["FailureCallback"], "loaded": []}


@pytest.mark.parametrize("settings", [{"retries": -1}, {"max_retry_delay": timedelta(seconds=-1)},
                                      {"retry_delay": timedelta(seconds=-5)}])
def test_negative_retry_settings_are_still_checked(settings):
    """The cheap first look still sends a negative retry count or delay to the full check, which rejects it."""
    with DAG("tl_policy_negative", schedule=None):
        task = EmptyOperator(task_id="n", **settings)
    with pytest.raises(AirflowClusterPolicyViolation, match="negative"):
        policy.task_policy(task)

"""Adoption as a platform team does it: a bare venv, ``pip install``, one connection, first alert, no DAG edits.

1. a fresh venv with only ``apache-airflow`` and the providers tasklens uses, pinned by ``constraints.txt``;
2. the built tasklens wheel installed into it;
3. one Slack connection through ``AIRFLOW_CONN_TASKLENS_SLACK``;
4. ``airflow standalone`` (127.0.0.1, a temp AIRFLOW_HOME);
5. Airflow's own bundled ``example_bash_decorator`` DAG (the standard provider's package folder, unmodified),
   whose ``runme_2`` task (``sleep 2``) fails once the deployment sets ``[core] default_task_execution_timeout``
   to 1 s through its environment variable;
6. the failure alert reaches a local Slack server.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compat.foreign import CONSTRAINTS, Standalone, adoption_requirements, install_tasklens, make_venv, wait_for

EXAMPLE_DAG = "example_bash_decorator"
FAILING_TASK = "runme_2"
#: The env var that makes the example's ``runme_2`` (``sleep 2``) fail with no file edited.
FAULT_ENV = {"AIRFLOW__CORE__DEFAULT_TASK_EXECUTION_TIMEOUT": "1"}


@dataclasses.dataclass
class Adoption:
    """Seconds per step and what Slack showed."""

    venv_install_s: float
    start_s: float
    first_alert_s: float
    run_state: str
    alert_texts: list[str]
    ui_alerts: list[dict[str, Any]]
    tasklens_file: str

    @property
    def total_s(self) -> float:
        return self.venv_install_s + self.start_s + self.first_alert_s


def standard_examples(venv: Path) -> Path:
    """The standard provider's bundled example DAG folder inside ``venv``."""
    (folder,) = venv.glob("lib/python3*/site-packages/airflow/providers/standard/example_dags")
    return folder


def adopt(workdir: Path, wheel: Path, slack_conn_uri: str, slack_texts: Callable[[], list[str]],
          timeout: float = 300, venv: Path | None = None) -> Adoption:
    """Run the six steps in ``workdir``; each step's seconds, the run's state and the Slack texts naming the DAG.

    ``venv``: an existing venv of Airflow and the providers (tests reuse one; the benchmark times a fresh one).
    """
    started = time.monotonic()
    if venv is None:
        venv = workdir / "venv"
        make_venv(venv, adoption_requirements())
    install_tasklens(venv, wheel, CONSTRAINTS)
    installed = time.monotonic()
    env = {"AIRFLOW_CONN_TASKLENS_SLACK": slack_conn_uri, **FAULT_ENV}
    with Standalone(venv, workdir / "home", standard_examples(venv), env) as airflow:
        healthy = time.monotonic()
        run_id = airflow.trigger(EXAMPLE_DAG, timeout=timeout)
        texts = wait_for(lambda: [t for t in slack_texts() if EXAMPLE_DAG in t and FAILING_TASK in t], timeout,
                         f"no Slack alert for {EXAMPLE_DAG}.{FAILING_TASK}")
        alerted = time.monotonic()
        state = airflow.wait_for_run(EXAMPLE_DAG, run_id, timeout=timeout)
        ui_alerts = airflow.api("GET", f"/tasklens/api/alerts?dag_id={EXAMPLE_DAG}")["alerts"]
    tasklens_file = subprocess.run([str(venv / "bin" / "python"), "-c", "import tasklens; print(tasklens.__file__)"],
                                   capture_output=True, text=True, check=True, env=airflow.env).stdout.strip()
    return Adoption(installed - started, healthy - installed, alerted - healthy, state, texts, ui_alerts,
                    tasklens_file)

"""Adoption time: from a bare venv to the first Slack alert, install included (goal: under 5 minutes).

Builds the wheel, then times ``compat.adoption.adopt`` in a fresh temp dir: a new venv with Airflow and the providers
from ``constraints.txt`` plus the wheel (pip's cache is used, as on any machine that installed before), ``airflow
standalone``, one of Airflow's bundled example DAGs failing through an env var, the alert at a local Slack server.
Prints the split and one ``adoption_s: <seconds>`` line.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))

from compat.adoption import adopt  # noqa: E402
from compat.foreign import build_wheel  # noqa: E402
from tasklens.testing import SlackSink  # noqa: E402

GOAL_S = 300


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tasklens-adoption-") as tmp, SlackSink() as slack:
        wheel = build_wheel(Path(tmp) / "dist")
        result = adopt(Path(tmp), wheel, slack.conn_uri(), slack.texts)
    print(f"venv + install:  {result.venv_install_s:6.1f} s")
    print(f"standalone up:   {result.start_s:6.1f} s")
    print(f"first alert:     {result.first_alert_s:6.1f} s  (trigger -> Slack, DAG parse included)")
    verdict = "met" if result.total_s < GOAL_S else "MISSED"
    print(f"total:           {result.total_s:6.1f} s  (goal < {GOAL_S} s: {verdict})")
    print(f"adoption_s: {result.total_s:.1f}")


if __name__ == "__main__":
    main()

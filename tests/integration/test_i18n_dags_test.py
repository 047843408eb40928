"""A German route through Airflow: a real task failure (`airflow dags test`) routed by `locale: de` reaches a local
Slack server in German, with a German date in Berlin time and the hostile exception text still escaped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasklens.testing import SlackSink
from tests.integration.stack import airflow_env, dags_test

pytestmark = pytest.mark.integration

DAGS = Path(__file__).with_name("dags")
RULES = """\
routes:
  - name: team_berlin
    match: {dag_id: "tl_alert_*"}
    channels: [slack]
    locale: de
    timezone: Europe/Berlin
    group_wait: 0s
"""


def test_a_german_route_delivers_a_german_slack_message(tmp_path):
    """The task process routes the failure by the German route; the dispatcher renders it in German (headline,
    field labels, severity, buttons, Berlin-time date) and posts it once to the local Slack server, escaped."""
    home = tmp_path / "home"
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    done = dags_test("tl_alert_failure", home=home, dags_folder=DAGS, env={
        "AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false",
        "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
    })
    output = done.stdout + done.stderr
    assert "tasklens stage" not in output, output[-3000:]
    with SlackSink() as sink:
        env = airflow_env(home, DAGS, {
            "AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri(),
            "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
        })
        sent = subprocess.run([sys.executable, "-m", "tasklens", "dispatch", "--once"], env=env,
                              capture_output=True, text=True, timeout=180)
        assert sent.returncode == 0 and "1 messages sent" in sent.stdout, sent.stdout + sent.stderr
        (body,) = sink.messages
    text = json.dumps(body, ensure_ascii=False)
    assert body["blocks"][0]["text"]["text"] == ":red_circle: Task fehlgeschlagen: tl_alert_failure.load_orders"
    assert "*Schweregrad*\\nkritisch" in text and "*Versuch*" in text and "Task-Log anzeigen" in text
    assert re.search(r"zuerst gesehen am \d{1,2}\. [A-Z][a-zä]+ 20\d\d(,| um) \d\d:\d\d:\d\d (MEZ|MESZ)", text), text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text

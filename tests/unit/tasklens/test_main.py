"""The tasklens CLI (check-config, test-alert, dispatch, replay), run in-process against local sinks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasklens import config
from tasklens.__main__ import main
from tasklens.store import HEAD_REVISION, get_store, reset_stores
from tasklens.testing import SlackSink, SmtpSink
from tests.unit.tasklens.test_store import make_alert, slack


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    config.reset()
    reset_stores()
    yield
    reset_stores()
    config.reset()


def test_check_config_ok_with_builtin_rules(capsys):
    """check-config prints OK, the rules source and the store when everything loads."""
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "check-config: OK" in out and "built-in rules" in out and f"schema {HEAD_REVISION}" in out


def test_check_config_reports_the_bad_key_and_exits_1(tmp_path, monkeypatch, capsys):
    """A broken rules file: exit 1 and the ConfigError naming file, key and fix."""
    rules = tmp_path / "rules.yml"
    rules.write_text("routes:\n  - name: r\n    channels: [slak]\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    assert main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "rules.yml" in out and "slak" in out


def test_check_config_names_a_missing_rules_file_and_what_runs_meanwhile(tmp_path, monkeypatch, capsys):
    """The rules file missing: exit 1, the file, the key and the fix, and that running DAGs use a fallback."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(tmp_path / "missing.yml"))
    config.reset()
    assert main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert f"ERROR: {tmp_path / 'missing.yml'}: rules_file: file not found. Fix: create it" in out
    assert "running DAGs are not affected: tasklens uses the built-in rules" in out


@pytest.mark.parametrize(
    ("rules_text", "default_preset", "expected"),
    [
        ("retry_policies:\n  spark:\n    preset: spark_jobs\n", None, "retry_policies.spark.preset"),
        (None, "transient_netwrk", "default_retry_preset"),
    ],
)
def test_check_config_reports_an_unknown_retry_preset(tmp_path, monkeypatch, capsys, rules_text, default_preset,
                                                      expected):
    """A misspelt preset fails check-config before deploy (not only at DAG parse), naming the key and the fix."""
    if rules_text is not None:
        rules = tmp_path / "rules.yml"
        rules.write_text(rules_text)
        monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    if default_preset is not None:
        monkeypatch.setenv("AIRFLOW__TASKLENS__DEFAULT_RETRY_PRESET", default_preset)
    config.reset()
    assert main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and expected in out and "did you mean" in out


def test_test_alert_slack_sends_one_message(monkeypatch, capsys):
    """test-alert --channel slack posts a test message through the configured webhook connection."""
    with SlackSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", sink.conn_uri())
        assert main(["test-alert", "--channel", "slack"]) == 0
    assert len(sink.messages) == 1 and "sent a test message" in capsys.readouterr().out


def test_test_alert_prints_what_went_wrong_and_exits_1(monkeypatch, capsys):
    """Slack unreachable: exit 1 and the exact reason (connection refused), with the connection id."""
    with SlackSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", sink.conn_uri())
        sink.down()
        assert main(["test-alert", "--channel", "slack"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "Connection refused" in out and "tasklens_slack" in out


def test_test_alert_email_sends_through_smtp(monkeypatch, capsys):
    """test-alert --channel email --to ... mails a test message through the SMTP connection."""
    with SmtpSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp.conn_json())
        assert main(["test-alert", "--channel", "email", "--to", "me@example.com"]) == 0
        (message,) = smtp.wait_for(1)
    assert message["To"] == "me@example.com"


def test_dispatch_once_delivers_the_outbox(monkeypatch, capsys):
    """dispatch --once sends what is due and reports it."""
    get_store(migrate=True).record([(make_alert(), [slack()])])
    with SlackSink() as sink:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", sink.conn_uri())
        assert main(["dispatch", "--once"]) == 0
    assert len(sink.messages) == 1 and "1 messages sent" in capsys.readouterr().out


def test_replay_requeues_undelivered(capsys):
    """replay puts dead deliveries back in the outbox."""
    store = get_store(migrate=True)
    store.record([(make_alert(), [slack()])])
    (claimed,) = store.claim("t")
    store.mark_dead([claimed.id], token=claimed.claim_token, error="down")
    assert main(["replay"]) == 0
    assert "re-queued 1" in capsys.readouterr().out and store.deliveries()[0]["state"] == "pending"


def test_db_upgrade_migrates_once_and_then_reports_head(capsys):
    """db upgrade brings a new store to the head schema; run again, it says there is nothing to do."""
    assert get_store().schema_revision() is None
    assert main(["db", "upgrade"]) == 0
    assert f"migrated from schema none to {HEAD_REVISION}" in capsys.readouterr().out
    assert get_store().schema_revision() == HEAD_REVISION
    assert main(["db", "upgrade"]) == 0
    assert f"already at schema {HEAD_REVISION}" in capsys.readouterr().out


def test_dispatch_refuses_an_unmigrated_store_and_names_the_fix(capsys):
    """The dispatcher process never migrates: on an old schema it exits 1 and says to run db upgrade."""
    assert main(["dispatch", "--once"]) == 1
    assert "tasklens db upgrade" in capsys.readouterr().out
    assert get_store().schema_revision() is None


def test_spool_ingest_stores_what_was_spooled(tmp_path, monkeypatch, capsys):
    """spool ingest stores a failure spooled while the store was unmigrated, and empties the spool."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", "")
    config.reset()
    from tasklens import pipeline
    from tasklens.events import TaskEvent

    pipeline.handle(TaskEvent(event="failed", dag_id="etl", task_id="load", run_id="r1", exception_type="ValueError"))
    assert list((tmp_path / "spool").glob("*.json")) and get_store().schema_revision() is None
    assert main(["spool", "ingest"]) == 1  # still unmigrated: the record stays
    assert "tasklens db upgrade" in capsys.readouterr().out and list((tmp_path / "spool").glob("*.json"))
    assert main(["db", "upgrade"]) == 0
    assert main(["spool", "ingest"]) == 0
    assert "stored 1 of 1" in capsys.readouterr().out
    assert [a["dag_id"] for a in get_store().list_alerts()] == ["etl"]
    assert not list((tmp_path / "spool").iterdir())


def test_python_dash_m_tasklens_runs_the_cli():
    """`python -m tasklens --help` works (the module entry point the dispatcher process uses)."""
    done = subprocess.run([sys.executable, "-m", "tasklens", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "check-config" in done.stdout and "replay" in done.stdout

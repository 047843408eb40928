"""Failure classes: the built-in classifier table, the rules file's own entries, routing by class, bad tables."""

from __future__ import annotations

import os
import time

import pytest

from tasklens import config, failures, pipeline
from tasklens.__main__ import main
from tasklens.alerts import AlertKind, Severity
from tasklens.events import TaskEvent
from tasklens.exceptions import ConfigError
from tasklens.routing import route
from tasklens.ruleset import load_ruleset, parse_rules_text

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "include", "tasklens_rules.example.yml")


def failure(exception_type: str | None = None, message: str | None = None, *, event: str = "failed",
            reason: str | None = None, state: str | None = None, dag_id: str = "etl") -> TaskEvent:
    return TaskEvent(event=event, dag_id=dag_id, task_id="load", run_id="r1", exception_type=exception_type,
                     exception_message=message, reason=reason, state=state or event)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (failure(event="killed", reason="the task process ended (SIGKILL) before it reported"), "infra"),
        (failure(reason="task failed outside its process (worker lost or heartbeat timeout)"), "infra"),
        (failure("AirflowTaskTerminated", "Task received SIGTERM signal"), "infra"),
        (failure("MemoryError", ""), "infra"),
        (failure("AirflowTaskTimeout", "Timeout, PID: 4242"), "timeout"),
        (failure("OperationalError", 'could not connect to server: Connection refused\n\tIs the server running on '
                                     'host "wh.internal" (10.0.0.5) and accepting TCP/IP connections on port 5432?'),
         "dependency"),
        (failure("HTTPError", "503 Server Error: Service Unavailable for url: https://api.example.com/v1"),
         "dependency"),
        (failure("HTTPError", "429 Client Error: Too Many Requests for url: https://api.example.com/v1"),
         "dependency"),
        (failure("gaierror", "[Errno -2] Name or service not known"), "dependency"),
        (failure("ValidationError", "1 validation error for Order"), "data"),
        (failure("AirflowFailException", "data quality score 71.0 is below 90"), "data"),
        (failure("KeyError", "'customer_id'"), "code"),
        (failure("HTTPError", "404 Client Error: Not Found"), "code"),
        (failure(event="up_for_retry", exception_type="ConnectionRefusedError"), "dependency"),
        (failure(event="failed", state="upstream_failed"), "upstream"),
        (failure(event="upstream_failed"), "upstream"),
    ],
)
def test_the_built_in_table_classifies_each_kind_of_failure(event, expected):
    """Each row of the issue's class list, from the event kind, the exception type, the message or the reason."""
    assert failures.classify(event) == expected


@pytest.mark.parametrize("kind", ["success", "running", "skipped"])
def test_events_that_are_not_failures_have_no_class(kind):
    """A success (or a start, a skip) is never classified."""
    assert failures.classify(TaskEvent(event=kind, dag_id="d", task_id="t", run_id="r")) is None


def test_the_rules_file_entries_come_first_and_a_catch_all_turns_the_built_ins_off():
    """Entries are tried in file order before the built-in table; `- class: code` at the end matches everything."""
    ruleset = parse_rules_text(
        "failure_classes:\n"
        "  - class: data\n    exception_type: KeyError\n    message: customer_\n"
        "  - class: dependency\n    events: [killed]\n"
    )
    table = ruleset.failure_classes
    assert failures.classify(failure("KeyError", "'customer_id'"), table) == "data"
    assert failures.classify(failure("KeyError", "'order_id'"), table) == "code"  # both criteria must hold
    assert failures.classify(failure(event="killed"), table) == "dependency"
    assert failures.classify(failure("AirflowTaskTimeout"), table) == "timeout"  # built-in rows still apply

    only_mine = parse_rules_text("failure_classes:\n  - class: data\n    exception_type: KeyError\n  - class: code\n")
    assert failures.classify(failure("AirflowTaskTimeout"), only_mine.failure_classes) == "code"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("failure_classes:\n  - class: infra\n    message: '(unclosed'\n", "failure_classes[0].message",
         "does not compile"),
        ("failure_classes:\n  - class: hardware\n", "failure_classes[0].class", "unknown failure class 'hardware'"),
        ("failure_classes:\n  - class: infra\n    events: [sucess]\n", "failure_classes[0].events[0]",
         "unknown failure event"),
        ("failure_classes:\n  - class: infra\n    exception: X\n", "failure_classes[0].exception", "unknown key"),
        ("failure_classes:\n  class: infra\n", "failure_classes", "expected a list"),
        ("routes:\n  - name: r\n    channels: [slack]\n    match:\n      failure_class: [infra, hw]\n",
         "routes[0].match.failure_class[1]", "unknown failure class 'hw'"),
    ],
)
def test_a_bad_classifier_table_names_the_entry_and_the_fix(text, key, words):
    """An invalid regex, an unknown class, event or key: ConfigError with the dotted key and a fix."""
    with pytest.raises(ConfigError) as caught:
        parse_rules_text(text, source="rules.yml")
    assert caught.value.key.endswith(key) and words in caught.value.problem and caught.value.fix


def test_check_config_names_the_bad_regex_and_the_last_good_table_stays_active(tmp_path, monkeypatch, capsys):
    """check-config exits 1 naming the entry; the running process keeps classifying with the last good table."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'alerts.db'}")
    rules = tmp_path / "rules.yml"
    rules.write_text("failure_classes:\n  - class: data\n    exception_type: KeyError\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    assert failures.classify(failure("KeyError"), config.ruleset().failure_classes) == "data"

    rules.write_text("failure_classes:\n  - class: data\n    message: '[KeyError'\n")
    os.utime(rules, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert failures.classify(failure("KeyError"), config.ruleset().failure_classes) == "data"
    assert main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert "failure_classes[0].message" in out and "does not compile" in out
    config.reset()


def test_the_example_file_splits_infra_from_code():
    """The example rules send infra failures to the platform channel and code failures to the DAG owners."""
    ruleset = load_ruleset(EXAMPLE)
    evaluate = __import__("tasklens.rules", fromlist=["evaluate_event"]).evaluate_event

    def channels(event: TaskEvent) -> set[str]:
        classified = TaskEvent.from_dict({**event.to_dict(), "failure_class": failures.classify(
            event, ruleset.failure_classes)})
        (alert,) = [a for a in evaluate(classified, ruleset) if a.kind != AlertKind.RESOLVE]
        assert alert.severity == Severity.CRITICAL
        return {d.channel for d in route(alert, ruleset)}

    assert channels(failure(event="killed", reason="SIGKILL")) == {"slack_platform"}
    assert channels(failure("KeyError", "'customer_id'")) == {"slack"}


def test_a_failure_is_classified_once_by_the_pipeline_and_stored_with_its_alert(alert_store, monkeypatch):
    """handle() classifies failures (the class reaches the stored event and the alert's labels), never successes."""
    calls: list[str] = []
    real_classify = failures.classify
    monkeypatch.setattr(failures, "classify", lambda event, table=(): calls.append(event.event)
                        or real_classify(event, table))
    pipeline.handle(TaskEvent(event="failed", dag_id="etl", task_id="load", run_id="r1", source="callback",
                              exception_type="OperationalError", exception_message="could not connect to server"))
    pipeline.handle(TaskEvent(event="success", dag_id="etl", task_id="load", run_id="r2"))
    assert calls == ["failed"]
    (alert,) = alert_store.list_alerts()
    assert alert["labels"]["failure_class"] == "dependency"
    snapshot = alert_store.snapshots([alert["id"]])[alert["id"]]
    assert snapshot.alert.failure_class == "dependency"
    (stored,) = alert_store.events_for("etl", "r1", "load")
    assert stored["payload"]["failure_class"] == "dependency"
    assert not pipeline.ERROR_COUNTS

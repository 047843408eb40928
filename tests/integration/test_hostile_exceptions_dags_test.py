"""Hostile exceptions in a real task process (`airflow dags test`): each failure reaches the event stream and the
alert store whole: an exception whose ``__str__`` raises, a 1 MB message, lone surrogates and undecodable bytes."""

from __future__ import annotations

import pytest

from tasklens.store import Store
from tests.integration.observability import DAGS, read_stream
from tests.integration.stack import dags_test

pytestmark = pytest.mark.integration

DAG_ID = "tl_hostile_exceptions"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile-home")
    events_path = home / "events.jsonl"
    done = dags_test(DAG_ID, home=home, dags_folder=DAGS, env={
        "AIRFLOW__TASKLENS__EVENTS_PATH": str(events_path),
        "AIRFLOW__TASKLENS__DISPATCHER_ENABLED": "false",
        # Airflow's own console log (``dags test`` prints the task log to stdout) cannot print a lone '\ud800': its
        # ``log.exception("Task failed with exception")`` raises UnicodeEncodeError before any listener runs, and the
        # task instance is left queued. Escaping on stdout lets Airflow get to the listener tasklens is tested with.
        "PYTHONIOENCODING": "utf-8:backslashreplace",
    })
    store = Store(f"sqlite:///{home / 'tasklens.db'}")
    yield done, events_path, store
    store.dispose()


def test_every_hostile_failure_is_a_valid_utf8_line_in_the_event_stream(run):
    """Each task's failed event is in the stream, every line valid UTF-8, surrogates replaced with U+FFFD, the
    1 MB message bounded and the unprintable exception named by its repr; no tasklens stage failed."""
    done, events_path, _ = run
    output = done.stdout + done.stderr
    assert "tasklens stage" not in output, output[-5000:]
    events_path.read_bytes().decode("utf-8")  # strict: one invalid byte fails the test
    failed = {line["task_id"]: line for line in read_stream(events_path) if line["event"] == "failed"}
    assert set(failed) == {"str_raises", "megabyte_message", "invalid_utf8"}, output[-5000:]

    assert failed["str_raises"]["exception_type"] == "UnprintableError"
    assert failed["str_raises"]["exception_message"] == "UnprintableError('state is broken')"
    assert failed["megabyte_message"]["exception_message"].startswith("row parse failed: xxx")
    assert len(failed["megabyte_message"]["exception_message"]) <= 2_000
    replaced = "cannot open /data/\ufffd\ufffd-orders.csv \ufffd (lone surrogate)"
    assert failed["invalid_utf8"]["exception_message"] == replaced
    for line in failed.values():
        assert "in " + line["task_id"] in line["traceback"]


def test_every_hostile_failure_is_an_alert_with_the_traceback_frames(run):
    """The store has one critical alert per task, each with the traceback's frames down to the raising function:
    the 1 MB message did not push them out."""
    _, _, store = run
    alerts = {a["task_id"]: a for a in store.list_alerts()}
    assert set(alerts) == {"str_raises", "megabyte_message", "invalid_utf8"}
    assert {a["severity"] for a in alerts.values()} == {"critical"}
    frames = {
        "str_raises": ["in str_raises", "raise UnprintableError", "UnprintableError: <exception str() failed>"],
        "megabyte_message": ["in megabyte_message", "in _parse_rows", "ValueError: row parse failed: xxx"],
        "invalid_utf8": ["in invalid_utf8", "in _decode_path", "OSError: cannot open /data/\ufffd\ufffd-orders.csv"],
    }
    for task_id, expected in frames.items():
        traceback = alerts[task_id]["data"]["traceback"]
        for fragment in expected:
            assert fragment in traceback, (task_id, fragment, traceback[-2000:])
    assert alerts["invalid_utf8"]["exception_message"].startswith("cannot open /data/\ufffd\ufffd-orders.csv")

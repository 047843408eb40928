"""Task-log context, the JSON Lines event stream, and the logger/timer API for task code."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import structlog
from structlog.testing import capture_logs

from tasklens import config, logs, metrics
from tasklens.events import EVENT_KINDS, TaskEvent


@pytest.fixture
def stream(tmp_path, monkeypatch):
    """An event stream in a fresh directory (which does not exist yet)."""
    path = tmp_path / "nested" / "dir" / "events.jsonl"
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    config.reset()
    logs.reset()
    metrics.reset()
    yield path
    logs.reset()
    config.reset()
    metrics.reset()


@pytest.fixture(autouse=True)
def clean_contextvars():
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


def make_event(**overrides) -> TaskEvent:
    fields = dict(event="failed", dag_id="dag.with.dots", task_id="task-with-dash", run_id="r1", try_number=2)
    fields.update(overrides)
    return TaskEvent(**fields)


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bind_task_context_adds_identity_to_later_log_lines():
    """A worker event binds dag_id/task_id/run_id/try_number/map_index and the event kind into contextvars."""
    logs.bind_task_context(make_event(source="worker"))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
        structlog.get_logger().info("later line")
    assert captured[0]["dag_id"] == "dag.with.dots"
    assert captured[0]["task_id"] == "task-with-dash"
    assert (captured[0]["run_id"], captured[0]["try_number"], captured[0]["map_index"]) == ("r1", 2, -1)
    assert captured[0]["tasklens_event"] == "failed"


@pytest.mark.parametrize("source", ["scheduler", "api", "callback"])
def test_bind_task_context_leaves_other_processes_alone(source):
    """Outside the task process nothing is bound (it would stamp one task on unrelated lines)."""
    logs.bind_task_context(make_event(source=source))
    assert structlog.contextvars.get_contextvars() == {}


def test_write_event_appends_one_json_line_per_event_and_creates_directories(stream):
    """Each event becomes one JSON line equal to ``to_dict()``; missing parent directories are created."""
    events = [make_event(event=kind) for kind in EVENT_KINDS]
    for event in events:
        logs.write_event(event)
    assert read_lines(stream) == [event.to_dict() for event in events]
    assert all(line["schema_version"] == 1 for line in read_lines(stream))


@pytest.mark.parametrize(
    ("masker", "secret"),
    [("airflow.sdk._shared.secrets_masker", "pa55-w0rd-xyz"), ("airflow._shared.secrets_masker", "c0re-s3cret-qq")],
)
def test_write_event_masks_registered_secrets(stream, masker, secret):
    """A secret registered with either of Airflow's maskers (task SDK in workers, core in servers) is replaced in
    every text field of the line."""
    __import__(masker, fromlist=["mask_secret"]).mask_secret(secret)
    logs.write_event(make_event(exception_message=f"auth failed: {secret}", reason=secret))
    text = stream.read_text()
    assert secret not in text
    assert read_lines(stream)[0]["exception_message"] == "auth failed: ***"


def test_lone_surrogates_do_not_break_the_line(stream):
    """Text that is not valid UTF-8 (lone surrogates, undecodable bytes) becomes U+FFFD; every line is valid UTF-8
    and parses."""
    undecodable = b"\xff\xfe".decode("utf-8", errors="surrogateescape")
    logs.write_event(make_event(exception_message="bad \udcff byte", traceback=f"File {undecodable}\ud800"))
    logs.write_business_event("rows\ud800", {"path": undecodable}, None)
    raw = stream.read_bytes()
    raw.decode("utf-8")  # strict: raises on an invalid byte
    event, business = read_lines(stream)
    assert event["exception_message"] == "bad \ufffd byte" and event["traceback"] == "File \ufffd\ufffd\ufffd"
    assert business["name"] == "rows\ufffd" and business["data"] == {"path": "\ufffd\ufffd"}


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


def test_business_event_with_an_unprintable_value_is_still_streamed(stream):
    """A business-event value whose ``__str__`` raises is written (as its repr), not dropped."""
    logs.write_business_event("odd", {"value": Unprintable(), "rows": 3}, None)
    [line] = read_lines(stream)
    assert line["data"]["rows"] == 3
    assert line["data"]["value"].startswith("<tests.unit.tasklens.test_logs.Unprintable object")


def test_empty_events_path_turns_the_stream_off(tmp_path, monkeypatch):
    """``events_path`` set to empty writes nothing anywhere."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", "")
    monkeypatch.chdir(tmp_path)
    config.reset()
    logs.reset()
    logs.write_event(make_event())
    assert config.events_path() is None and list(tmp_path.iterdir()) == []
    config.reset()


def test_unwritable_path_warns_once_counts_and_returns(tmp_path, monkeypatch, caplog):
    """A path that cannot be written logs one warning, counts tasklens.errors{stage=logs.stream} and never raises."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_PATH", str(blocker / "events.jsonl"))
    config.reset()
    logs.reset()
    counted = []
    monkeypatch.setattr(metrics, "count_error", counted.append)
    with caplog.at_level(logging.WARNING, logger="tasklens.logs"):
        logs.write_event(make_event())
        logs.write_event(make_event())
    warnings = [r.getMessage() for r in caplog.records if "cannot write the event stream" in r.getMessage()]
    assert len(warnings) == 1 and "events_path" in warnings[0]
    assert counted == ["logs.stream", "logs.stream"]
    config.reset()
    logs.reset()


def test_stream_rotates_by_size_and_keeps_every_line(stream, monkeypatch):
    """Past ``events_max_bytes`` the file rotates to .1, .2 ...; with enough backups no line is lost."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_MAX_BYTES", "2048")
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_BACKUP_COUNT", "50")
    config.reset()
    logs.reset()
    for number in range(60):
        logs.write_event(make_event(run_id=f"run-{number}"))
    files = sorted(stream.parent.glob("events.jsonl*"))
    rotated = [f for f in files if f.name[len("events.jsonl.") :].isdigit()]
    assert len(rotated) >= 3
    for f in rotated:
        assert f.stat().st_size < 2048 + 1024  # at most one line past the limit
    live = [stream] if stream.exists() else []  # re-created by the next write after a rotation
    run_ids = {line["run_id"] for f in rotated + live for line in read_lines(f)}
    assert run_ids == {f"run-{n}" for n in range(60)}


def test_backup_count_bounds_the_files_kept(stream, monkeypatch):
    """Only ``events_backup_count`` rotated files are kept; the oldest lines go first."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_MAX_BYTES", "1024")
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_BACKUP_COUNT", "2")
    config.reset()
    logs.reset()
    for number in range(40):
        logs.write_event(make_event(run_id=f"run-{number}"))
    names = sorted(p.name for p in stream.parent.iterdir() if not p.name.endswith(".lock"))
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert read_lines(stream.parent / "events.jsonl.2")[0]["run_id"] != "run-0"


def test_a_writer_holding_a_rotated_file_moves_to_the_new_one(stream, monkeypatch):
    """A second writer whose file was rotated by another writer writes one line there, then reopens the live file."""
    monkeypatch.setenv("AIRFLOW__TASKLENS__EVENTS_MAX_BYTES", "1024")
    config.reset()
    first = logs.EventStream(stream, 1024, 5)
    second = logs.EventStream(stream, 1024, 5)
    second.append(b'{"n":"second-0"}\n')
    while not (stream.parent / "events.jsonl.1").exists():
        first.append(b'{"n":"first"}\n' * 10)
    second.append(b'{"n":"second-1"}\n')  # lands in events.jsonl.1 (its old descriptor)
    second.append(b'{"n":"second-2"}\n')
    assert json.loads(stream.read_text().splitlines()[-1]) == {"n": "second-2"}
    all_lines = [
        json.loads(line)
        for f in stream.parent.glob("events.jsonl*")
        if not f.name.endswith(".lock")
        for line in f.read_text().splitlines()
    ]
    assert {"n": "second-1"} in all_lines and {"n": "second-0"} in all_lines
    first.close()
    second.close()


def test_business_event_is_logged_and_streamed_with_masked_data(stream):
    """``business_event`` logs the fact and appends an ``event: business`` line whose sensitive keys are masked."""
    with capture_logs() as captured:
        logs.get_logger().business_event("rows_loaded", rows=1200, password="hunter2", event="clash")
    assert captured[0]["event"] == "business_event"
    assert captured[0]["business_event"] == "rows_loaded" and captured[0]["rows"] == 1200
    assert captured[0]["password"] == "***" and captured[0]["data_event"] == "clash"
    [line] = read_lines(stream)
    assert line["event"] == logs.BUSINESS_EVENT and line["name"] == "rows_loaded"
    assert line["data"] == {"rows": 1200, "password": "***", "event": "clash"}
    assert line["schema_version"] == 1 and line["dag_id"] is None


@pytest.fixture
def running_task():
    from airflow.sdk.execution_time.context import set_current_context

    ti = SimpleNamespace(
        dag_id="sales.daily",
        task_id="load-orders",
        run_id="r7",
        map_index=3,
        try_number=2,
        state="running",
        start_date=datetime.now(timezone.utc),
        task=SimpleNamespace(task_type="PythonOperator", owner="sales", pool="default_pool", dag=None),
    )
    with set_current_context({"ti": ti}):
        yield ti


def test_get_logger_is_bound_to_the_running_task(stream, running_task):
    """Inside a task every line carries the task identity, and business lines in the stream name the attempt."""
    log = logs.get_logger()
    with capture_logs() as captured:
        log.info("loading", table="flights")
        log.bind(step="x").business_event("rows_loaded", rows=5)
    assert captured[0]["dag_id"] == "sales.daily" and captured[0]["table"] == "flights"
    assert (captured[1]["run_id"], captured[1]["try_number"], captured[1]["map_index"], captured[1]["step"]) == (
        "r7",
        2,
        3,
        "x",
    )
    [line] = read_lines(stream)
    assert (line["dag_id"], line["task_id"], line["run_id"], line["try_number"], line["map_index"]) == (
        "sales.daily",
        "load-orders",
        "r7",
        2,
        3,
    )


def test_performance_logs_and_records_the_operation_timer(stream, monkeypatch):
    """``performance`` logs duration and figures and emits tasklens.operation.duration with allow-listed labels."""
    observed = []
    monkeypatch.setattr(metrics, "observe_operation", lambda op, s, **labels: observed.append((op, s, labels)))
    with capture_logs() as captured:
        logs.get_logger().performance("load", 1.5, rows=10, stage="silver")
    assert captured[0]["operation"] == "load" and captured[0]["duration_s"] == 1.5 and captured[0]["rows"] == 10
    assert observed == [("load", 1.5, {"stage": "silver"})]


def test_timed_as_context_manager_and_decorator(stream, monkeypatch):
    """``timed`` works as ``with`` and as a decorator, passes results and exceptions through, and says the outcome."""
    observed = []
    monkeypatch.setattr(metrics, "observe_operation", lambda op, s, **labels: observed.append(op))

    @logs.timed("score")
    def score(x):
        return x + 1

    with capture_logs() as captured:
        with logs.timed("load", table="flights"):
            pass
        assert score(1) == 2
        with pytest.raises(KeyError), logs.timed("explode"):
            raise KeyError("x")
    assert observed == ["load", "score", "explode"]
    assert [(c["operation"], c["outcome"]) for c in captured] == [("load", "ok"), ("score", "ok"), ("explode", "error")]
    assert captured[0]["table"] == "flights" and captured[0]["duration_s"] >= 0


def test_timed_decorates_coroutines():
    """An ``async def`` decorated with ``timed`` stays a coroutine function and is timed when awaited."""
    import asyncio
    import inspect

    @logs.timed("fetch")
    async def fetch():
        return "ok"

    assert inspect.iscoroutinefunction(fetch)
    with capture_logs() as captured:
        assert asyncio.run(fetch()) == "ok"
    assert captured[0]["operation"] == "fetch"


def test_timed_never_raises_when_recording_fails(monkeypatch):
    """A failure inside tasklens while recording a duration does not reach the timed code."""

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(metrics, "observe_operation", broken)
    with logs.timed("load"):
        value = 1
    assert value == 1


def test_stream_survives_fork(stream):
    """A forked child appends to the same stream without deadlocking on a lock inherited from the parent."""
    logs.write_event(make_event(run_id="parent"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            logs.write_event(make_event(run_id="child"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert [line["run_id"] for line in read_lines(stream)] == ["parent", "child"]

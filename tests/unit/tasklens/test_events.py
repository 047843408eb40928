"""TaskEvent building from worker, ORM and callback objects."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from tasklens import events
from tasklens.events import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, TaskEvent

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeTask:
    task_type = "PythonOperator"
    owner = "data-platform"
    pool = "default_pool"

    def __init__(self, dag_tags: tuple[str, ...] = ("b", "a")) -> None:
        self.dag = SimpleNamespace(tags=set(dag_tags))


class RuntimeTaskInstance:
    """Shaped like the task SDK's RuntimeTaskInstance (the worker's object)."""

    def __init__(self, **overrides):
        self.dag_id = "dag.with.dots"
        self.task_id = "task-with-dash"
        self.run_id = "manual__2024-05-01T12:00:00+00:00"
        self.map_index = -1
        self.try_number = 2
        self.max_tries = 3
        self.state = "running"
        self.start_date = START
        self.end_date = None
        self.hostname = "worker-1"
        self.queue = "default"
        self.task = FakeTask()
        self.log_url = "http://airflow/log"
        self.__dict__.update(overrides)


class OrmTaskInstance:
    """Shaped like airflow.models.TaskInstance as the scheduler passes it (no ``task``, an ``operator`` column)."""

    def __init__(self, **overrides):
        self.dag_id = "etl"
        self.task_id = "load"
        self.run_id = "scheduled__2024"
        self.map_index = 4
        self.try_number = 1
        self.max_tries = 0
        self.state = SimpleNamespace(value="failed")  # an enum-like state
        self.start_date = START
        self.end_date = START + timedelta(seconds=90)
        self.operator = "BashOperator"
        self.pool = "etl_pool"
        self.duration = 90.0
        self.__dict__.update(overrides)

    @property
    def log_url(self):
        raise RuntimeError("no [api] base_url in this process")


def test_worker_ti_gives_identity_task_fields_and_sorted_tags():
    """A RuntimeTaskInstance-like object yields ids, try numbers, operator/owner/pool and sorted DAG tags."""
    event = events.from_task_instance("running", RuntimeTaskInstance())
    assert (event.dag_id, event.task_id, event.try_number, event.max_tries) == (
        "dag.with.dots",
        "task-with-dash",
        2,
        3,
    )
    assert (event.operator, event.owner, event.pool, event.dag_tags) == (
        "PythonOperator",
        "data-platform",
        "default_pool",
        ("a", "b"),
    )
    assert event.duration_s is None and event.end_date is None
    assert event.start_date == START.isoformat()
    assert event.source == "worker" and event.log_url == "http://airflow/log"


def test_orm_ti_without_task_uses_columns_and_survives_broken_log_url():
    """An ORM TaskInstance without ``task`` takes operator/pool from columns; a raising log_url becomes None."""
    event = events.from_task_instance("failed", OrmTaskInstance(), error="killed externally", source="scheduler")
    assert (event.operator, event.pool, event.owner) == ("BashOperator", "etl_pool", None)
    assert event.state == "failed" and event.map_index == 4
    assert event.duration_s == 90.0 and event.log_url is None
    assert event.exception_type is None and event.exception_message == "killed externally"
    assert event.source == "scheduler"


def test_log_url_is_airflows_own_and_read_once_per_attempt():
    """log_url comes from Airflow's RuntimeTaskInstance.log_url; a task's later events reuse it (Airflow reads its
    config on every access), and another try gets its own."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    reads: list[int] = []

    class CountingTI(SimpleNamespace):
        @property
        def log_url(self) -> str:
            reads.append(self.try_number)
            return RuntimeTaskInstance.log_url.fget(self)  # type: ignore[attr-defined]

    def ti(try_number: int) -> CountingTI:
        return CountingTI(dag_id="sales.daily", task_id="load", run_id="manual__2026 x", map_index=3,
                          try_number=try_number)

    first = events.from_task_instance("running", ti(1)).log_url
    assert events.from_task_instance("success", ti(1)).log_url == first
    assert reads == [1]
    assert first is not None
    assert first.endswith("/dags/sales.daily/runs/manual__2026%20x/tasks/load/mapped/3?try_number=1")
    assert events.from_task_instance("running", ti(2)).log_url.endswith("try_number=2")
    assert reads == [1, 2]


def test_missing_fields_fall_back_to_defaults():
    """A bare object with only ids still builds an event: try 1, map_index -1, state = event kind."""
    bare = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=None, try_number=None)
    event = events.from_task_instance("skipped", bare)
    assert (event.try_number, event.map_index, event.state, event.operator) == (1, -1, "skipped", None)
    assert event.hostname  # falls back to this machine's name


def _load_orders(message: str) -> None:
    raise ValueError(message)


def _run_task(message: str) -> None:
    try:
        _load_orders(message)
    except ValueError as exc:
        raise RuntimeError("task failed: " + message) from exc


def _raised(func, *args) -> BaseException:
    try:
        func(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_megabyte_message_is_bounded_and_the_traceback_keeps_its_frames():
    """A 1 MB message is cut to MAX_MESSAGE_CHARS; the traceback keeps every frame of both chained exceptions
    (not only the head of the message), each message line bounded, and ends with the raising exception."""
    error = _raised(_run_task, "x" * 1_000_000)
    event = events.from_task_instance("failed", RuntimeTaskInstance(), error=error)
    assert event.exception_type == "RuntimeError"
    assert len(event.exception_message) == MAX_MESSAGE_CHARS
    assert event.exception_message.startswith("task failed: xxx") and event.exception_message.endswith("[truncated]")
    assert len(event.traceback) <= MAX_TRACEBACK_CHARS
    for frame in ("in _raised", "in _run_task", "in _load_orders", "raise ValueError(message)"):
        assert frame in event.traceback
    assert "The above exception was the direct cause" in event.traceback
    assert "\nValueError: xxx" in event.traceback and "\nRuntimeError: task failed: xxx" in event.traceback
    longest_line = max(len(line) for line in event.traceback.splitlines())
    assert longest_line <= events.MAX_TRACEBACK_PART_CHARS


def test_long_traceback_keeps_the_raising_frames():
    """A traceback longer than MAX_TRACEBACK_CHARS (a long exception chain) keeps its end: the innermost frames
    and the exception that failed the task."""

    def chain(depth: int) -> None:
        if depth == 0:
            raise KeyError("first " + "y" * 300)
        try:
            chain(depth - 1)
        except KeyError as exc:
            raise KeyError(f"level {depth} " + "y" * 300) from exc

    error = _raised(chain, 60)
    event = events.from_task_instance("failed", RuntimeTaskInstance(), error=error)
    assert len(event.traceback) == MAX_TRACEBACK_CHARS
    assert event.traceback.startswith("…[truncated]")
    assert "first yyy" not in event.traceback
    assert event.traceback.endswith(f"KeyError: 'level 60 {'y' * 300}'\n")
    assert 'raise KeyError(f"level {depth} " + "y" * 300) from exc' in event.traceback[-1000:]


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class StrAndReprRaise(StrRaises):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


@pytest.mark.parametrize("error_type", [StrRaises, StrAndReprRaise])
def test_exception_whose_str_raises_still_builds_an_event(error_type):
    """An exception whose ``__str__`` (and ``__repr__``) raises still gives a failure event with its type, a
    stand-in message and the traceback's frames, from the listener and from a callback context."""
    error = _raised(_raise, error_type("boom"))
    for event in (
        events.from_task_instance("failed", RuntimeTaskInstance(), error=error),
        events.from_context("failed", {"ti": RuntimeTaskInstance(), "exception": error}),
    ):
        assert event.exception_type == error_type.__name__
        assert event.exception_message in ("StrRaises('boom')", "<unprintable StrAndReprRaise>")
        assert "in _raise" in event.traceback and error_type.__name__ in event.traceback
        json.dumps(event.to_dict())


def _raise(error: BaseException) -> None:
    raise error


def test_invalid_utf8_in_exception_text_is_replaced():
    """Lone surrogates, undecodable bytes and NULs in a message become valid UTF-8 (U+FFFD) in the message and the
    traceback, and the event serialises to JSON."""
    undecodable = b"\xff\xfe bad bytes".decode("utf-8", errors="surrogateescape")
    error = _raised(_raise, RuntimeError(undecodable + "\ud800\x00"))
    event = events.from_task_instance("failed", RuntimeTaskInstance(), error=error)
    assert event.exception_message == "\ufffd\ufffd bad bytes\ufffd"
    assert event.traceback.endswith("RuntimeError: \ufffd\ufffd bad bytes\ufffd\n")
    json.dumps(event.to_dict(), ensure_ascii=False).encode("utf-8")  # would raise on a lone surrogate


def test_registered_secret_is_masked_in_message_and_traceback():
    """A value registered with Airflow's secrets masker never appears in the event."""
    from airflow.sdk._shared.secrets_masker import mask_secret

    mask_secret("s3cr3t-token-value")
    try:
        raise ConnectionError("login failed with s3cr3t-token-value")
    except ConnectionError as exc:
        error = exc
    event = events.from_task_instance("failed", RuntimeTaskInstance(), error=error)
    assert "s3cr3t-token-value" not in event.exception_message
    assert "s3cr3t-token-value" not in event.traceback
    assert "***" in event.exception_message


def test_context_without_ti_uses_dag_run_and_task():
    """A callback context without ``ti`` (heartbeat-timeout path) still names the DAG, task and run."""
    context = {
        "dag_run": SimpleNamespace(dag_id="etl", run_id="r9"),
        "task": SimpleNamespace(task_id="load", task_type="BashOperator", owner="ops", pool="p", dag=None),
    }
    event = events.from_context("failed", context, reason="heartbeat timeout")
    assert (event.dag_id, event.task_id, event.run_id, event.reason) == ("etl", "load", "r9", "heartbeat timeout")
    assert event.source == "callback" and event.exception_message is None


def test_context_with_ti_and_exception():
    """A callback context with ``ti`` and ``exception`` builds the same event as the listener would."""
    event = events.from_context("failed", {"ti": RuntimeTaskInstance(), "exception": KeyError("k")})
    assert event.exception_type == "KeyError" and event.task_id == "task-with-dash"


def test_to_dict_round_trips_and_carries_schema_version():
    """``to_dict`` has ``schema_version`` and ``from_dict`` rebuilds an equal event, ignoring unknown keys."""
    event = events.from_task_instance("success", RuntimeTaskInstance(end_date=START + timedelta(seconds=3)))
    data = event.to_dict()
    assert data["schema_version"] == events.SCHEMA_VERSION
    assert data["duration_s"] == 3.0
    assert TaskEvent.from_dict({**json.loads(json.dumps(data)), "unknown": 1}) == event


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("failed", "failed"), (SimpleNamespace(value="up_for_retry"), "up_for_retry")]
)
def test_state_name_accepts_enums_and_strings(value, expected):
    """``state_name`` normalises enum members and plain strings."""
    assert events.state_name(value) == expected

"""tasklens.callbacks: the failure callback for paths listeners miss, and one-line adoption."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

import tasklens
from tasklens import callbacks, events, pipeline, retry

END = datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc)


@pytest.fixture
def handled(monkeypatch):
    seen: list[events.TaskEvent] = []
    monkeypatch.setattr(pipeline, "handle", seen.append)
    return seen


def _context(state: str, *, exception: BaseException | None = None, try_number: int = 1):
    with DAG("tl_cb_dag", schedule=None, tags=["team"]):
        task = EmptyOperator(task_id="t", **retry.preset("transient_network"))
    ti = SimpleNamespace(task=task, dag_id="tl_cb_dag", task_id="t", run_id="r1", map_index=-1,
                         try_number=try_number, max_tries=4, state=state, start_date=END - timedelta(seconds=5),
                         end_date=END, _ti_context_from_server=None)
    return {"ti": ti, "task_instance": ti, "exception": exception}, task


def test_on_failure_is_a_failure_callback():
    """``tasklens.on_failure()`` returns a fresh FailureCallback usable in default_args."""
    first, second = tasklens.on_failure(), tasklens.on_failure()
    assert isinstance(first, callbacks.FailureCallback)
    assert first is not second
    with DAG("tl_cb_default_args", schedule=None, default_args={"on_failure_callback": first}):
        op = EmptyOperator(task_id="t")
    assert op.on_failure_callback == [first]


def test_failure_outside_the_task_process_becomes_an_event(handled):
    """A heartbeat-timeout failure (no exception in the context) is reported with a reason."""
    context, _ = _context("failed")
    callbacks.FailureCallback()(context)
    assert [(e.event, e.dag_id, e.reason) for e in handled] == [
        ("failed", "tl_cb_dag", "task failed outside its process (worker lost or heartbeat timeout)")]


def test_attempt_the_listener_reported_is_not_reported_twice(handled):
    """In the task process the listener already reported the attempt; the callback stays silent."""
    context, _ = _context("failed", exception=RuntimeError("boom"))
    event = events.from_context("failed", context)
    callbacks.mark_listener_saw(event)
    assert callbacks.listener_saw(event)
    callbacks.FailureCallback()(context)
    assert handled == []


def test_up_for_retry_from_a_callback_carries_the_retry_time(handled):
    """A callback for an attempt that will be retried reports up_for_retry with next_retry_at and the reason."""
    context, task = _context("up_for_retry", exception=ConnectionResetError("reset"), try_number=2)
    callbacks.FailureCallback()(context)
    (event,) = handled
    assert event.event == "up_for_retry"
    assert event.next_retry_at == retry.next_retry_at(task, 2, END).isoformat()
    assert event.reason.startswith("transient_network: connection error or timeout")


def test_callback_never_raises(handled, monkeypatch):
    """A broken context is counted and dropped: a callback error must not touch the task."""
    callbacks.FailureCallback()({"ti": object()})
    assert handled == []

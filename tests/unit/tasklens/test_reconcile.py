"""The reconciler's verdicts (killed or lost report) from task-log evidence, and its leader lease."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.utils.log.file_task_handler import _log_stream_to_parsed_log_stream

from tasklens import reconcile
from tasklens.store import Store

# Lines as Airflow 3.3.2 writes them to a task's log (taken from a real run of tests/integration/test_killed_tasks.py).
STARTED = {"timestamp": "2026-11-27T09:36:41.723658Z", "level": "info", "event": "::endgroup::", "logger": "task"}
SIGKILLED = {
    "timestamp": "2026-11-27T09:36:42.165710Z", "level": "critical",
    "event": "Process terminated by signal. Likely out of memory error (OOM). For more information, see "
             "https://airflow.apache.org/docs/apache-airflow/stable/troubleshooting.html#process-terminated-by-signal.",
    "signal": -9, "signal_name": "SIGKILL", "logger": "task",
}
TASK_FAILED = {
    "timestamp": "2026-11-27T09:37:20.286803Z", "level": "error", "event": "Task failed with exception",
    "logger": "task", "filename": "task_runner.py", "lineno": 1676,
    "error_detail": [
        {"exc_type": "ConnectionError", "exc_value": "the first attempt fails", "exc_notes": [], "is_cause": False,
         "frames": [{"filename": "dag.py", "lineno": 3, "name": "flaky"}]},
        {"exc_type": "OSError", "exc_value": "the cause", "exc_notes": [], "is_cause": True, "frames": []},
    ],
}


def parsed(*records: dict | str) -> list:
    """The StructuredLogMessages Airflow's log reader makes of these lines."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return [message for _, _, message in _log_stream_to_parsed_log_stream(iter(lines))]


def test_sigkill_before_any_failure_report_is_a_kill():
    """The supervisor's 'terminated by signal' record with no failure logged by the task: killed, signal named."""
    evidence = reconcile.evidence_from_log(parsed(STARTED, SIGKILLED))
    assert evidence.killed and evidence.readable
    assert evidence.death == "SIGKILL, signal 9, often the out-of-memory killer"


def test_overtime_stop_is_not_a_kill_and_keeps_the_exception():
    """A process the supervisor stopped past task_success_overtime leaves no signal record: not a kill; the
    exception raised (not its cause) is the one reported."""
    evidence = reconcile.evidence_from_log(parsed(STARTED, TASK_FAILED))
    assert not evidence.killed and evidence.death is None and evidence.task_saw_failure
    assert (evidence.exception_type, evidence.exception_message) == ("ConnectionError", "the first attempt fails")


def test_death_after_the_task_failed_is_a_lost_report():
    """Killed while reporting a failure it had already logged: the failure is real, the report was lost."""
    evidence = reconcile.evidence_from_log(parsed(STARTED, TASK_FAILED, SIGKILLED))
    assert not evidence.killed and evidence.death is not None


def test_text_printed_by_the_task_is_not_evidence():
    """A task printing the supervisor's words is not a supervisor record (it names no signal)."""
    printed = "Process terminated by signal. Likely out of memory error (OOM)."
    segv = "******************************************* Received SIGSEGV ***"
    evidence = reconcile.evidence_from_log(parsed(STARTED, printed, segv))
    assert evidence.death is None and not evidence.killed


def test_unreadable_log_has_no_evidence():
    """The reader's own notes (no timestamp) do not count as the attempt's log."""
    evidence = reconcile.evidence_from_log(parsed({"event": "No logs available for this task."}))
    assert not evidence.readable and not evidence.killed


def test_up_for_retry_waits_for_the_overtime_and_failed_does_not():
    """up_for_retry is set before callbacks and listeners run (they get task_success_overtime + the 10 s
    escalation); failed is set after the process exited, so nothing can still be reporting it."""
    end = datetime(2026, 1, 1, tzinfo=timezone.utc)
    grace = timedelta(seconds=2)
    assert reconcile._report_deadline("failed", end, grace) == end + grace
    assert reconcile._report_deadline("up_for_retry", end, grace) == end + grace + timedelta(seconds=30)


@pytest.fixture
def lease_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'leases.db'}")
    yield store
    store.dispose()


def test_one_holder_at_a_time_and_takeover_after_expiry(lease_store):
    """A held lease is refused to others and renewed by its holder; an expired or released one is taken over."""
    first = reconcile.LeaderLease(lease_store, ttl_s=60, holder="api-1")
    second = reconcile.LeaderLease(lease_store, ttl_s=60, holder="api-2")
    assert first.acquire() and not second.acquire()
    assert first.acquire()  # renewal
    first.release()
    assert second.acquire() and not first.acquire()
    lapsed = reconcile.LeaderLease(lease_store, ttl_s=-1, holder="api-2")  # renewed with a lease already over
    assert lapsed.acquire() and first.acquire()


def test_reconciler_without_the_lease_runs_no_pass(lease_store, monkeypatch):
    """Another api-server worker leads: this one neither queries Airflow nor raises anything."""
    from tasklens import store as store_module

    monkeypatch.setattr(store_module, "get_store", lambda url=None: lease_store)
    passes: list[object] = []
    monkeypatch.setattr(reconcile, "reconcile_once", lambda **kw: passes.append(kw) or reconcile.PassResult())
    assert reconcile.LeaderLease(lease_store, ttl_s=60, holder="elsewhere").acquire()
    assert reconcile.Reconciler(interval_s=5).run_pass() is None
    assert passes == []


def test_leader_looks_back_fully_once_then_only_since_its_last_pass(lease_store, monkeypatch):
    """A new leader's first pass covers the whole lookback; later passes revisit a few minutes before the last."""
    from tasklens import store as store_module

    monkeypatch.setattr(store_module, "get_store", lambda url=None: lease_store)
    until = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    passes: list[dict] = []
    result = reconcile.PassResult(until=until)
    monkeypatch.setattr(reconcile, "reconcile_once", lambda **kw: passes.append(kw) or result)
    reconciler = reconcile.Reconciler(interval_s=5)
    reconciler.run_pass()
    reconciler.run_pass()
    assert passes == [{"since": None}, {"since": until - reconcile.REVISIT}]

"""tasklens.background: the one runner of the api-server's loops (dispatcher, reconciler, config check), and the
hand-off thread of a task's own writes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tasklens.background import BackgroundLoop, Handoff

# Generous bounds for a loaded 2-core machine: they only stop a broken loop from hanging the test run.
SETTLE_S = 30.0
HOUR_S = 3600.0


def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """A step that raises does not end the loop: it is logged and the next step runs."""
    calls: list[int] = []
    third = threading.Event()

    def step() -> float:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        if len(calls) <= 2:
            raise RuntimeError("database gone")
        return HOUR_S

    loop = BackgroundLoop("tl-test-failing", step, interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger="tasklens.background"):
        assert loop.start()
        assert third.wait(SETTLE_S)
        loop.stop(timeout_s=SETTLE_S)
    assert len(calls) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("tasklens tl-test-failing: a pass failed; retrying in 0.0s") == 2
    assert not loop.running


def test_an_error_handler_that_raises_does_not_end_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    """``on_error`` gets the step's exception; if it raises too, that is logged and the loop still goes on."""
    seen: list[BaseException] = []
    second = threading.Event()

    def step() -> None:
        if seen:
            second.set()
            return
        raise ValueError("first pass")

    def on_error(exc: BaseException) -> None:
        seen.append(exc)
        raise KeyError("handler bug")

    loop = BackgroundLoop("tl-test-handler", step, interval_s=0.0, on_error=on_error)
    with caplog.at_level(logging.WARNING, logger="tasklens.background"):
        loop.start()
        assert second.wait(SETTLE_S)
        loop.stop(timeout_s=SETTLE_S)
    assert [type(e) for e in seen] == [ValueError]
    assert "tasklens tl-test-handler: reporting a failed pass failed" in [r.getMessage() for r in caplog.records]


def test_the_wait_a_step_returns_replaces_the_interval() -> None:
    """A step may ask for the next pass sooner than the interval (the dispatcher: the next delivery is due)."""
    calls: list[int] = []
    third = threading.Event()

    def step() -> float:
        calls.append(1)
        if len(calls) == 3:
            third.set()
        return 0.0

    loop = BackgroundLoop("tl-test-sooner", step, interval_s=HOUR_S)
    loop.start()
    assert third.wait(SETTLE_S)  # with the hour-long interval, the second pass would never come in time
    loop.stop(timeout_s=SETTLE_S)


def test_wait_first_waits_one_interval_before_the_first_step() -> None:
    """With ``wait_first`` (the reconciler) no step runs before an interval has passed; without it one runs at once."""
    calls: list[str] = []
    ran = threading.Event()

    def step(name: str) -> None:
        calls.append(name)
        ran.set()

    waiting = BackgroundLoop("tl-test-wait-first", lambda: step("waiting"), interval_s=HOUR_S, wait_first=True)
    eager = BackgroundLoop("tl-test-eager", lambda: step("eager"), interval_s=HOUR_S)
    waiting.start()
    eager.start()
    assert ran.wait(SETTLE_S)
    waiting.stop(timeout_s=SETTLE_S)
    eager.stop(timeout_s=SETTLE_S)
    assert calls == ["eager"]


def test_stop_waits_only_its_timeout_for_a_step_in_progress() -> None:
    """Shutdown is never held up by a stuck step: ``stop`` returns after its timeout with the step still running."""
    entered = threading.Event()
    release = threading.Event()

    def stuck_step() -> None:
        entered.set()
        release.wait(SETTLE_S)

    loop = BackgroundLoop("tl-test-stuck", stuck_step, interval_s=HOUR_S)
    loop.start()
    assert entered.wait(SETTLE_S)
    loop.stop(timeout_s=0.05)
    assert not release.is_set()  # stop returned while the step was still blocked
    assert not loop.running  # the loop no longer counts as running; its daemon thread ends with the step
    release.set()


def test_start_is_idempotent_and_a_stopped_loop_starts_again() -> None:
    """A second start of a running loop does nothing; after stop, start runs a new thread."""
    passes: list[int] = []
    first, second = threading.Event(), threading.Event()

    def step() -> None:
        passes.append(1)
        (second if first.is_set() else first).set()

    loop = BackgroundLoop("tl-test-restart", step, interval_s=HOUR_S)
    assert loop.start()
    assert not loop.start()
    assert first.wait(SETTLE_S)
    loop.stop(timeout_s=SETTLE_S)
    assert loop.start()
    assert second.wait(SETTLE_S)
    loop.stop(timeout_s=SETTLE_S)
    assert passes == [1, 1]


# -- Handoff: a task's own writes, off its thread ----------------------------------------------------------------


def test_handoff_runs_calls_in_order_off_the_caller_s_thread_and_goes_on_after_a_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    """Calls run in submission order on the named thread; one that raises is logged and the next still runs."""
    handoff = Handoff("tl-test-handoff")
    ran: list[tuple[int, str]] = []

    def broken() -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.WARNING, logger="tasklens.background"):
        for number in range(3):
            handoff.submit(lambda n=number: ran.append((n, threading.current_thread().name)))
        handoff.submit(broken)
        handoff.submit(lambda: ran.append((3, threading.current_thread().name)))
        assert handoff.flush(SETTLE_S)
    assert ran == [(n, "tl-test-handoff") for n in range(4)]
    assert [r.getMessage() for r in caplog.records] == ["tasklens tl-test-handoff: a queued call failed"]


def test_handoff_drops_calls_beyond_its_backlog_instead_of_growing() -> None:
    """While the thread is stuck (a hung file system), calls beyond max_backlog are dropped and counted."""
    handoff = Handoff("tl-test-stuck", max_backlog=2)
    release = threading.Event()
    started = threading.Event()
    handoff.submit(lambda: (started.set(), release.wait(SETTLE_S)))
    assert started.wait(SETTLE_S)
    assert [handoff.submit(lambda: None) for _ in range(4)] == [True, True, False, False]
    assert handoff.dropped == 2
    release.set()
    assert handoff.flush(SETTLE_S)


def test_flush_gives_up_after_its_timeout() -> None:
    """flush() is bounded: a call that never ends makes it return False, not hang."""
    handoff = Handoff("tl-test-hung")
    release = threading.Event()
    handoff.submit(release.wait, SETTLE_S)
    assert handoff.flush(0.05) is False
    release.set()
    assert handoff.flush(SETTLE_S)


_EXIT_SCRIPT = """
import sys, time
from tasklens.background import Handoff
handoff = Handoff("tl-exit", exit_flush_s={flush_s})
def write(line):
    time.sleep({sleep_s})
    with open(sys.argv[1], "a") as f:
        f.write(line + "\\n")
if {fork}:
    import os
    handoff.submit(write, "parent")
    handoff.flush(30)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        sys.exit(0)
handoff.submit(write, "first")
handoff.submit(write, "second")
"""


@pytest.mark.parametrize("fork", [False, True], ids=["process", "forked child"])
def test_what_is_queued_is_written_when_the_process_exits(tmp_path: Path, fork: bool) -> None:
    """A process that ends right after submitting (a task process after its success event) still writes it, in a
    forked child too (its own thread, its own exit handler)."""
    out = tmp_path / "lines"
    script = _EXIT_SCRIPT.format(flush_s=30, sleep_s=0.2, fork=fork)
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=120, env=_env())
    assert out.read_text().splitlines() == [*(["parent"] if fork else []), "first", "second"]


def test_the_exit_wait_is_bounded(tmp_path: Path) -> None:
    """A write stuck longer than exit_flush_s does not hold the process: it exits, and says what was lost."""
    out = tmp_path / "lines"
    script = _EXIT_SCRIPT.format(flush_s=0.2, sleep_s=600, fork=False)
    result = subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=120, env=_env(),
                            capture_output=True, text=True)
    assert not out.exists()
    assert "tasklens tl-exit: calls still queued 0.2s after the process began to exit are lost" in result.stderr


def _env() -> dict[str, str]:
    plugins = str(Path(__file__).resolve().parents[3] / "plugins")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([plugins, os.environ.get("PYTHONPATH", "")])}

"""tasklens.background: the one runner of the api-server's loops (dispatcher, reconciler, config check)."""

from __future__ import annotations

import logging
import threading

import pytest

from tasklens.background import BackgroundLoop

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

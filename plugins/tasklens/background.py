"""Background threads: one runner for the api-server's loops, and one hand-off thread for a task's own writes.

A :class:`BackgroundLoop` is a named daemon thread that calls ``step`` every ``interval_s`` until stopped. The step
may return how long to wait before the next one (the dispatcher sleeps until the next delivery is due). The loop
never raises: a step that fails is logged and tried again next interval. :meth:`~BackgroundLoop.stop` waits at most
its timeout for the step in progress, so an api-server shutdown is never held up by a slow database::

    loop = BackgroundLoop("tasklens-config-check", check, interval_s=60)
    loop.start()
    ...
    loop.stop(timeout_s=5)

A :class:`Handoff` runs calls in order on one daemon thread, off the caller's: a task's event-stream line and StatsD
datagram are written there, so the task's thread pays for building the event only. It drains at process exit within
a bounded wait, and a forked child starts its own thread::

    writes = Handoff("tasklens-event-writer")
    writes.submit(write_line, event)
    writes.flush(timeout_s=2)
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BackgroundLoop", "Handoff"]

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Run ``step`` in a daemon thread called ``name``, every ``interval_s`` (or the seconds ``step`` returns).

    ``wait_first`` waits one interval before the first step (the reconciler lets the api-server settle).
    ``on_error`` handles a step's exception (the default logs it); it must not raise either, and if it does, that is
    logged too. Start and stop are idempotent and thread-safe; a stopped loop can be started again.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        *,
        interval_s: float,
        wait_first: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.wait_first = wait_first
        self.on_error = on_error
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Start the thread; False when it was already running."""
        with self._lock:
            if self.running:
                return False
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name, daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the loop to end and wait up to ``timeout_s`` for the step in progress (a daemon thread that is still
        busy after that ends with the process)."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self, stop: threading.Event) -> None:
        if self.wait_first and stop.wait(self.interval_s):
            return
        while not stop.is_set():
            wait = self.interval_s
            try:
                requested = self.step()
                if requested is not None:
                    wait = requested
            except Exception as exc:
                self._report(exc)
            stop.wait(max(0.0, wait))

    def _report(self, exc: Exception) -> None:
        try:
            if self.on_error is None:
                log.warning("tasklens %s: a pass failed; retrying in %.1fs", self.name, self.interval_s,
                            exc_info=exc)
            else:
                self.on_error(exc)
        except Exception:
            log.warning("tasklens %s: reporting a failed pass failed", self.name, exc_info=True)


class Handoff:
    """Run submitted calls in order on one daemon thread called ``name``, started on the first call.

    At most ``max_backlog`` calls wait (a stuck file system must not grow the process without bound): beyond that
    :meth:`submit` drops the call and returns False. At process exit the thread gets ``exit_flush_s`` to finish what
    is queued; the handler is registered when the thread starts, in the process that uses it, because Airflow's task
    runner clears the exit handlers a forked task process inherits and runs only those registered after the fork.
    A call that raises is logged; the thread goes on.
    """

    def __init__(self, name: str, *, max_backlog: int = 10_000, exit_flush_s: float = 2.0) -> None:
        self.name = name
        self.max_backlog = max_backlog
        self.exit_flush_s = exit_flush_s
        self._start_fresh()
        os.register_at_fork(after_in_child=self._start_fresh)  # the child has the queue, not the thread

    def _start_fresh(self) -> None:
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def submit(self, func: Callable[..., Any], *args: Any) -> bool:
        """Queue ``func(*args)``; False when the backlog is full and the call was dropped."""
        if self._thread is None:
            self._start()
        if self._calls.qsize() >= self.max_backlog:
            self.dropped += 1
            return False
        self._calls.put((func, args))
        return True

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait up to ``timeout_s`` for the calls queued so far; True when they all ran."""
        if self._thread is None or self._thread is threading.current_thread():
            return True
        done = threading.Event()
        self._calls.put((done.set, ()))
        return done.wait(timeout_s)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, args=(self._calls,), name=self.name, daemon=True)
            thread.start()
            self._thread = thread
        atexit.register(self._flush_at_exit)

    def _flush_at_exit(self) -> None:
        if not self.flush(self.exit_flush_s):
            log.warning("tasklens %s: calls still queued %.1fs after the process began to exit are lost", self.name,
                        self.exit_flush_s)

    def _run(self, calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
        while True:
            func, args = calls.get()
            try:
                func(*args)
            except Exception:
                log.warning("tasklens %s: a queued call failed", self.name, exc_info=True)

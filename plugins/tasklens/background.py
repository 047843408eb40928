"""One runner for the api-server's background loops (the dispatcher, the reconciler, the config check).

A :class:`BackgroundLoop` is a named daemon thread that calls ``step`` every ``interval_s`` until stopped. The step
may return how long to wait before the next one (the dispatcher sleeps until the next delivery is due). The loop
never raises: a step that fails is logged and tried again next interval. :meth:`~BackgroundLoop.stop` waits at most
its timeout for the step in progress, so an api-server shutdown is never held up by a slow database::

    loop = BackgroundLoop("tasklens-config-check", check, interval_s=60)
    loop.start()
    ...
    loop.stop(timeout_s=5)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["BackgroundLoop"]

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

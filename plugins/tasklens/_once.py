"""Log a warning once per key and process: a stage that keeps failing must not flood the task log."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

__all__ = ["WarnOnce"]


class WarnOnce:
    """``warn(key, message, *args)`` logs the first time ``key`` is seen; ``forget()`` starts over (tests)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def first(self, key: str) -> bool:
        """True the first time ``key`` is seen in this process."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def warn(self, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        if self.first(key):
            self.logger.warning(message, *args, exc_info=exc_info)

    def forget(self) -> None:
        with self._lock:
            self._seen.clear()

    def _after_fork_in_child(self) -> None:
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.Lock()

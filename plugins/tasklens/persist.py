"""Store writes within a time budget: run on one writer thread per process, spooled when the store cannot take them.

A task process waits for its write at most ``[tasklens] store_timeout_s`` (plus a small margin) and then spools it
(:mod:`tasklens.spool`): Airflow SIGTERMs a task ``[core] task_success_overtime`` (20 s) after it ends, and a write
cut off there would be lost. Long-lived processes (the scheduler, the api-server) do not wait at all: the writer
thread writes, and spools on failure, while their loop goes on.

Spooled records are written again later by :func:`tasklens.pipeline.ingest_spool` (the dispatcher runs it each pass,
and a process whose own write just succeeded runs it in the background); the store counts an attempt once, so a
write that landed late and was also spooled still counts once.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tasklens import config
from tasklens.exceptions import StoreError
from tasklens.spool import Spool

__all__ = ["WAIT_MARGIN_S", "persist", "run_in_background", "spool", "spooled_count", "wait_idle"]

log = logging.getLogger(__name__)

#: Above the store's own timeout, for the SQL work once the lock or connection is there.
WAIT_MARGIN_S = 1.0
#: Jobs waiting for the writer thread beyond this are spooled at once (the store is stuck, the caller must not be).
MAX_BACKLOG = 1000

_spooled = 0


class _Job:
    __slots__ = ("done", "error", "op", "payload", "spool_on_error", "write")

    def __init__(self, write: Callable[[], None], op: str | None, payload: Mapping[str, Any] | None,
                 spool_on_error: bool) -> None:
        self.write = write
        self.op = op
        self.payload = payload
        self.spool_on_error = spool_on_error  # async jobs: nobody waits, so the thread spools a failure
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Writer:
    """One daemon thread per process running store writes in order."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.current: _Job | None = None
        self.thread = threading.Thread(target=self._run, name="tasklens-store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            self.current = job
            try:
                job.write()
            except Exception as exc:  # recorded for the waiting caller, or spooled below
                job.error = exc
            job.done.set()
            self.current = None
            if isinstance(job.error, StoreError) and job.spool_on_error:
                _spool_quietly(job, job.error)

    def pending(self) -> list[_Job]:
        """Jobs not finished yet (the one running first)."""
        waiting = list(self.jobs.queue)
        current = self.current
        return ([current] if current is not None and not current.done.is_set() else []) + waiting


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _get_writer() -> _Writer:
    global _writer
    writer = _writer
    if writer is None or writer.pid != os.getpid():  # a forked child has no thread of its parent's
        with _writer_lock:
            writer = _writer
            if writer is None or writer.pid != os.getpid():
                writer = _writer = _Writer()
    return writer


def spool(op: str, payload: Mapping[str, Any]) -> None:
    """Spool one write for later. Raises ``OSError`` when the disk refuses as well."""
    global _spooled
    Spool(config.spool_dir()).append(op, payload)
    _spooled += 1


def spooled_count() -> int:
    """Writes this process spooled (for tests and the fault benchmark)."""
    return _spooled


def _spool_quietly(job: _Job, reason: BaseException | str) -> None:
    if job.op is None or job.payload is None:
        return
    try:
        spool(job.op, job.payload)
        log.warning("tasklens: the alert store could not take a write in time (%s); it is spooled in %s and will "
                    "be stored when the store is back", _describe(reason), config.spool_dir())
    except Exception:
        log.error("tasklens: a write could neither be stored nor spooled; it is lost", exc_info=True)
        raise


def _describe(reason: BaseException | str) -> str:
    if isinstance(reason, str):
        return reason
    return f"{type(reason).__name__}: {str(reason)[:300]}"


def persist(write: Callable[[], None], op: str, payload: Mapping[str, Any], *, wait: bool) -> bool:
    """Run ``write`` on the writer thread; spool ``(op, payload)`` if it raises :class:`StoreError` or, when
    ``wait``, does not finish within the budget. Returns True when the write is known to be stored.

    When ``wait``, any other error of ``write`` is raised here; without ``wait``, ``write`` must handle its own.
    Raises ``OSError`` if spooling fails too."""
    writer = _get_writer()
    if writer.jobs.qsize() >= MAX_BACKLOG:
        spool(op, payload)
        return False
    job = _Job(write, op, payload, spool_on_error=not wait)
    writer.jobs.put(job)
    if not wait:
        return False
    budget_s = config.store_timeout_s() + WAIT_MARGIN_S
    if not job.done.wait(budget_s):
        job.spool_on_error = False  # spooled here; should the write still land, the store counts it once
        _spool_quietly(job, f"no answer within {budget_s:.1f}s")
        return False
    if isinstance(job.error, StoreError):
        _spool_quietly(job, job.error)
        return False
    if job.error is not None:
        raise job.error  # not the store's availability (a bug, bad input): the caller's stage counts it
    return True


def run_in_background(work: Callable[[], object]) -> None:
    """Queue ``work`` on the writer thread without waiting (its errors are logged, never raised)."""

    def guarded() -> None:
        try:
            work()
        except Exception:
            log.warning("tasklens: background store work failed; it is retried later", exc_info=True)

    _get_writer().jobs.put(_Job(guarded, None, None, spool_on_error=False))


def wait_idle(timeout_s: float = 10.0) -> bool:
    """Wait until this process's writer thread has nothing queued or running (tests, orderly shutdown); False
    when ``timeout_s`` passed first."""
    writer = _writer
    if writer is None or writer.pid != os.getpid():
        return True
    marker = _Job(lambda: None, None, None, spool_on_error=False)
    writer.jobs.put(marker)
    return marker.done.wait(timeout_s)


@atexit.register
def _spool_unfinished_at_exit() -> None:
    """Writes still queued (or running) when the process exits are spooled rather than lost."""
    writer = _writer
    if writer is None or writer.pid != os.getpid():
        return
    for job in writer.pending():
        if job.op is not None and not job.done.wait(0.05 if job is writer.current else 0):
            job.spool_on_error = False
            try:
                _spool_quietly(job, "the process exited before the write finished")
            except Exception:  # noqa: S110 - logged by _spool_quietly; exit must go on
                pass

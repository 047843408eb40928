"""Fault injectors and the outcome record shared by the fault suite (tests/faults) and benchmarks/faults.py.

Every injector is a real thing: another process holding SQLite's write lock, a PostgreSQL server stopped with
``pg_ctl``, a TCP proxy that stops passing bytes (an approximation of a network that drops packets: the kernel
still accepts the connection, nothing answers), bound to 127.0.0.1 and stopped by PID or by closing its sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tasklens.testing import free_port


@dataclasses.dataclass
class FaultOutcome:
    """What one injected fault did to the promise: the columns of the README's reliability table."""

    fault: str
    failures_injected: int = 0
    alerts_stored: int = 0
    messages_delivered: int = 0
    duplicates: int = 0
    tasks_changed: int | None = 0  # None: no task is involved in the fault (shown as "-")
    worst_added_s: float | None = None  # longest time tasklens held a task (or the scheduler) on the faulty path
    time_to_alert_s: float | None = None  # from the end of the fault to the last expected message
    violations: list[str] = dataclasses.field(default_factory=list)

    @property
    def survived(self) -> bool:
        return not self.violations

    def expect(self, condition: bool, violation: str) -> None:
        if not condition:
            self.violations.append(violation)

    def row(self) -> list[str]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        return [
            self.fault, str(self.failures_injected), str(self.alerts_stored), str(self.messages_delivered),
            str(self.duplicates), "-" if self.tasks_changed is None else str(self.tasks_changed),
            seconds(self.worst_added_s), seconds(self.time_to_alert_s),
            "yes" if self.survived else "NO: " + "; ".join(self.violations),
        ]


TABLE_HEADER = ["fault", "failures injected", "alerts stored", "messages delivered", "duplicates",
                "tasks changed", "worst added time", "time to alert", "survived"]


def markdown_table(outcomes: Iterable[FaultOutcome]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(outcome.row()) + " |" for outcome in outcomes]
    return "\n".join(lines)


class SqliteWriteLock:
    """Another process holding a SQLite database's write lock (``BEGIN EXCLUSIVE``) until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SqliteWriteLock:
        code = (
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(3600)\n"
        )
        self.process = subprocess.Popen([sys.executable, "-c", code, str(self.path)], stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "locked":
            self.release()
            raise RuntimeError(f"could not lock {self.path}: {line!r}")
        return self

    def release(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # the lock goes with the process, as with a crashed writer
            self.process.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.release()


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port`` that can stop passing bytes (:meth:`stall`).

    While stalled, connections are still accepted by the kernel but no byte goes either way: a client waits for an
    answer that does not come, as behind a network that drops packets. :meth:`flow` passes bytes again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="stalling-proxy", daemon=True)

    def __enter__(self) -> StallingProxy:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._pairs]:
            sock.close()

    def stall(self) -> None:
        self._stalled.set()

    def flow(self) -> None:
        self._stalled.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stalled.is_set():
                time.sleep(0.05)  # nothing is read or accepted: clients see silence
                continue
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:  # the server is stopped: the client's connection closes, and the proxy keeps serving
            client.close()
            return
        for one, other in ((client, upstream), (upstream, client)):
            one.setblocking(True)
            self._pairs[one] = other
            self._selector.register(one, selectors.EVENT_READ)

    def _pump(self, sock: socket.socket) -> None:
        other = self._pairs.get(sock)
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data and other is not None:
            try:
                other.sendall(data)
                return
            except OSError:
                pass
        for one in (sock, other):
            if one is not None and one in self._pairs:
                self._selector.unregister(one)
                self._pairs.pop(one, None)
                one.close()


def spool_records(spool_dir: Path) -> list[dict[str, Any]]:
    """The records waiting in a spool directory, with ``spooled_at`` (epoch seconds, from the file name)."""
    records = []
    for path in sorted(spool_dir.glob("*.json")) if spool_dir.is_dir() else []:
        record = json.loads(path.read_text())
        record["spooled_at"] = int(path.name.split("-", 1)[0]) / 1e9
        records.append(record)
    return records


def worst_wait_before_spooling(records: Iterable[dict[str, Any]]) -> float | None:
    """Longest time between a task event and its spooling: how long tasklens held the process before giving up."""
    waits = []
    for record in records:
        ts = record.get("payload", {}).get("ts")
        if ts:
            waits.append(record["spooled_at"] - datetime.fromisoformat(ts).timestamp())
    return max(waits) if waits else None


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(what)


def messages_naming(texts: Iterable[str], needle: str) -> int:
    return sum(1 for text in texts if needle in text)


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``variables`` set in ``os.environ`` (Airflow connections, ``[tasklens]`` keys) for the block, then restored;
    tasklens's cached configuration and stores are dropped on the way in and out so they follow."""
    from tasklens import config
    from tasklens.store import reset_stores

    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    config.reset()
    reset_stores()
    try:
        yield
    finally:
        reset_stores()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.reset()


def count_per_needle(texts: Iterable[str], needles: Mapping[str, str], outcome: FaultOutcome,
                     *, expected: int = 1) -> None:
    """Each needle must be named by exactly ``expected`` messages: fewer is a lost alert, more a duplicate (both
    violations; the extra messages are added to the duplicates)."""
    texts = list(texts)
    for label, needle in needles.items():
        seen = messages_naming(texts, needle)
        outcome.expect(seen >= expected, f"{seen} of {expected} messages name {label}")
        outcome.expect(seen <= expected, f"{label} was sent {seen} times, not {expected}")
        outcome.duplicates += max(0, seen - expected)

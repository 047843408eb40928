"""Helpers for your own tests of DAGs and tasks that use tasklens (like structlog's ``capture_logs``).

::

    from tasklens.testing import capture_alerts, capture_events, failed_event

    def test_my_rules():
        with capture_events() as seen, capture_alerts() as alerts:
            tasklens.pipeline.handle(failed_event(dag_id="sales", task_id="load"))
        assert seen[0].event == "failed"
        assert alerts[0].title

* :func:`capture_events` collects every :class:`~tasklens.events.TaskEvent` that passes through
  ``tasklens.pipeline.handle`` while the block runs; the events still run through every stage.
* :func:`capture_alerts` collects every :class:`~tasklens.alerts.Alert` the alert stage routes to the store while
  the block runs. It needs no store of its own: with ``replace_store=True`` (the default) nothing is written, so no
  database is touched; with ``replace_store=False`` the alerts are recorded as usual (point ``[tasklens] store_url``
  at a temporary SQLite file).
* :class:`StatsdSink` is a UDP socket collecting the StatsD lines tasklens sends (``sink.env()`` gives the Airflow
  ``[metrics]`` settings); :class:`SlackSink` a local HTTP server standing in for a Slack webhook or the Web API;
  :class:`SmtpSink` an SMTP server (aiosmtpd, a test dependency) collecting what the email channel sends.
* :func:`task_event`, :func:`failed_event`, :func:`retry_event` and :func:`success_event` build TaskEvents.
* :func:`wait_for_task_writes` waits for the stream lines and StatsD datagrams of task reports handled in this
  process (``dag.test()`` in a test): tasklens writes them off the task's thread.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import email
import email.message
import http.server
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tasklens import pipeline
from tasklens.alerts import Alert, Delivery
from tasklens.events import TaskEvent
from tasklens.pipeline import wait_for_task_writes

if TYPE_CHECKING:
    from tasklens.ruleset import Ruleset
    from tasklens.store import RecordResult

__all__ = [
    "Reply",
    "SlackSink",
    "SmtpSink",
    "StatsdSink",
    "capture_alerts",
    "capture_events",
    "failed_event",
    "free_port",
    "parse_statsd_line",
    "retry_event",
    "success_event",
    "task_event",
    "wait_for_task_writes",
]


# --------------------------------------------------------------------------- capturing


@contextlib.contextmanager
def capture_events() -> Iterator[list[TaskEvent]]:
    """Collect the TaskEvents handled by ``tasklens.pipeline.handle`` inside the block (they still run)."""
    seen: list[TaskEvent] = []
    original: Callable[[TaskEvent], None] = pipeline.handle

    def recording(event: TaskEvent) -> None:
        seen.append(event)
        original(event)

    pipeline.handle = recording
    try:
        yield seen
    finally:
        pipeline.handle = original  # type: ignore[assignment]


@contextlib.contextmanager
def capture_alerts(*, replace_store: bool = True) -> Iterator[list[Alert]]:
    """Collect the Alerts the alert stage routes inside the block; ``replace_store`` keeps them out of the store."""
    seen: list[Alert] = []
    original = pipeline._record

    def recording(alerts: Sequence[Alert], ruleset: Ruleset, *, event: TaskEvent | None = None,
                  deliveries_for: Callable[[Alert], Iterable[Delivery]] | None = None) -> RecordResult | None:
        seen.extend(alerts)
        if replace_store:
            return None
        return original(alerts, ruleset, event=event, deliveries_for=deliveries_for)

    pipeline._record = recording
    try:
        yield seen
    finally:
        pipeline._record = original


# --------------------------------------------------------------------------- TaskEvent factories


def task_event(event: str = "running", **fields: Any) -> TaskEvent:
    """A TaskEvent with test defaults (``dag_id="example_dag"``, ``task_id="example_task"``, ``source="test"``)."""
    defaults: dict[str, Any] = {"dag_id": "example_dag", "task_id": "example_task",
                                "run_id": "manual__2026-01-01T00:00:00+00:00", "operator": "PythonOperator",
                                "owner": "airflow", "source": "test"}
    return TaskEvent(event=event, **{**defaults, **fields})


def failed_event(**fields: Any) -> TaskEvent:
    """A failed attempt with no retries left (``ValueError: boom`` unless given)."""
    return task_event("failed", **{"state": "failed", "exception_type": "ValueError",
                                   "exception_message": "boom", "duration_s": 1.0, **fields})


def retry_event(**fields: Any) -> TaskEvent:
    """A failed attempt that Airflow will retry."""
    return task_event("up_for_retry", **{"state": "up_for_retry", "exception_type": "ValueError",
                                         "exception_message": "boom", "duration_s": 1.0, **fields})


def success_event(**fields: Any) -> TaskEvent:
    """A successful attempt (one second long unless given)."""
    return task_event("success", **{"state": "success", "duration_s": 1.0, **fields})


# --------------------------------------------------------------------------- a Slack stand-in


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Reply:
    """One programmed answer: HTTP ``status``, optional ``Retry-After`` (seconds, or a raw header value as a str)
    and a ``delay_s`` before answering."""

    status: int = 200
    retry_after: float | str | None = None
    delay_s: float = 0.0
    body: str | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    sink: SlackSink

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", errors="replace")}
        reply = self.sink._next_reply(self.path, body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        api = "/api/" in self.path
        if reply.body is not None:
            payload = reply.body
        elif reply.status == 200:
            channel = body.get("channel") if isinstance(body, dict) else None
            answer = {"ok": True, "channel": channel, "ts": f"{time.time():.6f}"}
            payload = json.dumps(answer) if api else "ok"
        elif reply.status == 429:
            payload = json.dumps({"ok": False, "error": "ratelimited"}) if api else "rate_limited"
        else:
            payload = json.dumps({"ok": False, "error": "internal_error"}) if api else "internal_error"
        data = payload.encode("utf-8")
        if reply.status == 200:  # recorded before answering, so a client that saw the 200 finds the message
            self.sink._delivered(self.path, body)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json" if api else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            if reply.retry_after is not None:
                value = reply.retry_after
                self.send_header("Retry-After", value if isinstance(value, str) else f"{value:g}")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return


class SlackSink:
    """A threaded HTTP server recording Slack webhook / Web API posts, with programmable answers.

    ``responses``: a deque of :class:`Reply` consumed one per POST; when empty, ``default`` answers
    (``Reply(200)``), except that ``fail_ratio`` of POSTs answer ``fail_reply`` (500) at random (seeded).
    ``rate_limit_per_s``: answer 429 with Retry-After when POSTs come faster than that (like Slack).
    """

    def __init__(self, *, fail_ratio: float = 0.0, seed: int = 0, rate_limit_per_s: float | None = None) -> None:
        self.port = free_port()
        self.responses: collections.deque[Reply] = collections.deque()
        self.default = Reply(200)
        self.fail_ratio = fail_ratio
        self.fail_reply = Reply(500)
        self.rate_limit_per_s = rate_limit_per_s
        self.posts: list[Any] = []
        self.messages: list[Any] = []
        self.paths: list[str] = []
        self.post_times: list[float] = []
        self.answers: list[int] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._last_accepted: float | None = None

    # -- lifecycle --
    def __enter__(self) -> SlackSink:
        self.up()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()

    def up(self) -> None:
        """Start (or restart after :meth:`down`) serving on the same port."""
        if self._server is not None:
            return
        handler = type("Handler", (_Handler,), {"sink": self})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Close the port: clients get "connection refused" until :meth:`up`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- addresses --
    @property
    def url(self) -> str:
        """Base URL of the sink (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/XXX"

    def conn_uri(self, **extra: Any) -> str:
        """``AIRFLOW_CONN_<ID>`` value (JSON) of a ``slackwebhook`` connection posting to this sink."""
        conn: dict[str, Any] = {
            "conn_type": "slackwebhook",
            "host": f"{self.url}/services",
            "password": "T000/B000/XXX",
        }
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)

    def bot_conn_uri(self) -> str:
        """``AIRFLOW_CONN_<ID>`` value (JSON) of a ``slack`` (bot token) connection posting to this sink's Web API."""
        return json.dumps(
            {"conn_type": "slack", "password": "xoxb-test-token", "extra": {"base_url": f"{self.url}/api/"}}
        )

    # -- answers --
    def _next_reply(self, path: str, body: Any) -> Reply:
        now = time.monotonic()
        with self._lock:
            self.posts.append(body)
            self.paths.append(path)
            self.post_times.append(now)
            if self.responses:
                reply = self.responses.popleft()
            elif (
                self.rate_limit_per_s
                and self._last_accepted is not None
                and now - self._last_accepted < 1.0 / self.rate_limit_per_s
            ):
                wait = 1.0 / self.rate_limit_per_s - (now - self._last_accepted)
                reply = Reply(429, retry_after=max(1.0, round(wait, 3)))
            elif self.fail_ratio and self._random.random() < self.fail_ratio:
                reply = self.fail_reply
            else:
                reply = self.default
            if reply.status == 200:
                self._last_accepted = now
            self.answers.append(reply.status)
        return reply

    def _delivered(self, path: str, body: Any) -> None:
        with self._lock:
            self.messages.append(body)

    def texts(self) -> list[str]:
        """The full text of every delivered message (``text`` plus every block's text), for assertions."""
        out = []
        for message in self.messages:
            out.append(json.dumps(message, ensure_ascii=False))
        return out


# --------------------------------------------------------------------------- a StatsD stand-in


def parse_statsd_line(line: str) -> tuple[str, dict[str, str], str, str]:
    """Parse a line the way statsd_exporter does with InfluxDB tags: ``name,k=v,k2=v2:value|type``."""
    name_part, _, rest = line.partition(":")
    name, *tags = name_part.split(",")
    labels = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        assert sep and key and value, f"statsd_exporter would reject tag {tag!r} in {line!r}"
        labels[key] = value
    value, stat_type = rest.split("|")[:2]
    return name, labels, value, stat_type


def _is_tasklens(line: str) -> bool:
    name = line.split(",")[0].split(":")[0]
    return name.startswith("tasklens.") or ".tasklens." in name


class StatsdSink:
    """A UDP socket on 127.0.0.1 (free port) collecting every StatsD line sent to it, until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._receive, name="statsd-sink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return
            if data == b"stop":
                return
            self.lines.extend(line for line in data.decode("utf-8").split("\n") if line)

    def drain(self) -> list[str]:
        """Every line received so far (a marker sent to ourselves makes sure earlier packets are read)."""
        done = threading.Event()
        marker = f"sink.marker.{id(done)}:1|c"
        self.sock.sendto(marker.encode(), ("127.0.0.1", self.port))
        for _ in range(1000):
            if marker in self.lines:
                break
            done.wait(0.01)
        return [line for line in self.lines if not line.startswith("sink.marker.")]

    def tasklens_lines(self) -> list[str]:
        """Raw tasklens lines received so far (with or without a ``statsd_prefix``)."""
        return [line for line in self.drain() if _is_tasklens(line)]

    def tasklens(self, dag_id: str | None = None) -> list[tuple[str, dict[str, str], str, str]]:
        """Parsed tasklens lines, optionally only those labelled with ``dag_id``."""
        parsed = [parse_statsd_line(line) for line in self.tasklens_lines()]
        return [p for p in parsed if dag_id is None or p[1].get("dag_id") == dag_id]

    def close(self) -> None:
        self.sock.sendto(b"stop", ("127.0.0.1", self.port))
        self._thread.join(5)
        self.sock.close()

    def env(self) -> dict[str, str]:
        """Airflow ``[metrics]`` settings pointing StatsD at this sink."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }


# --------------------------------------------------------------------------- SMTP


class _SmtpCollector:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.envelopes: list[Any] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append(envelope)
        return "250 OK"


class SmtpSink:
    """An aiosmtpd SMTP server on 127.0.0.1 collecting every message (``.messages``)::

        with SmtpSink() as smtp:
            monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp.conn_json())
            ... deliver ...
            smtp.messages                                      # email.message.Message objects
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._collector = _SmtpCollector()
        self._controller: Any = None

    def __enter__(self) -> SmtpSink:
        from aiosmtpd.controller import Controller  # noqa: PLC0415 - aiosmtpd is a test dependency, loaded only here

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[email.message.Message]:
        return list(self._collector.messages)

    @property
    def envelopes(self) -> list[Any]:
        return list(self._collector.envelopes)

    def conn_json(self, **extra: Any) -> str:
        """``AIRFLOW_CONN_<ID>`` value (JSON) of a plain ``smtp`` connection (no SSL, no STARTTLS) to this sink."""
        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "tasklens@example.com", **extra},
            }
        )

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[email.message.Message]:
        """Messages once at least ``count`` arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self._collector.messages) < count:
            time.sleep(0.02)
        return self.messages

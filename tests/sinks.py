"""Local stand-ins for Slack and an SMTP server, bound to 127.0.0.1 on free ports, for tests and benchmarks.

Slack::

    with SlackSink() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SLACK", slack.conn_uri())
        slack.responses.append(Reply(429, retry_after=2))   # the next POST gets a 429, later ones 200
        slack.fail_ratio = 0.3                              # or: 30 % of POSTs answer 500 (seeded)
        ... deliver ...
        slack.messages                                     # JSON bodies answered 200 (what Slack showed)
        slack.posts                                        # every JSON body received, whatever the answer
        slack.down(); slack.up()                           # port closed (connection refused), then back

SMTP::

    with SmtpSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_TASKLENS_SMTP", smtp.conn_json())
        ... deliver ...
        smtp.messages                                      # email.message.Message objects
"""

from __future__ import annotations

import collections
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
from typing import Any

__all__ = ["Reply", "SlackSink", "SmtpSink", "free_port"]


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
            payload = json.dumps({"ok": True, "ts": f"{time.time():.6f}"}) if api else "ok"
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


class _Collector:
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
    """An aiosmtpd SMTP server on 127.0.0.1 collecting every message (``.messages``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._collector = _Collector()
        self._controller: Any = None

    def __enter__(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
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

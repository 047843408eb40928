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

import email
import email.message
import json
import logging
import threading
import time
from typing import Any

__all__ = ["Reply", "SlackSink", "SmtpSink", "free_port"]


from tasklens.testing import Reply, SlackSink, free_port  # moved to tasklens.testing


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

"""Fault scenarios against real components (faults 8-15, 18, 20): each injects one fault and returns a FaultOutcome.

Real parts: a :class:`~tasklens.store.Store` on SQLite or on a throwaway PostgreSQL server
(``tests/integration/postgres.py``), the real :class:`~tasklens.dispatch.Dispatcher`, the real Slack and email
channels through the provider hooks against local servers (``tasklens.testing``), the real alert stage
(``pipeline.handle``), a real secrets backend class configured through ``[secrets] backend``, and real dispatcher and
task processes where a process boundary is the point (SIGKILL, "no network call from the task").

Where only time stands between the fault and its outcome (a Retry-After of 300 s, an escalation after 30 minutes,
40 days of retention), the dispatcher's clock is a fake that the scenario moves forward; those scenarios say so and
report no wall-clock times. The columns mean here: ``failures_injected`` alerts pushed through the fault,
``tasks_changed`` ``None`` (no Airflow task instance is involved: where a task's process is the point, it is the
listener's call in a fresh interpreter), ``worst_added_s`` how long the alert stage held the task's process,
``time_to_alert_s`` from the end of the fault to the last expected message.
"""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from tasklens import dispatch, pipeline
from tasklens.alerts import AlertKind
from tasklens.dispatch import ChannelConfig, Dispatcher, DispatcherSettings
from tasklens.events import TaskEvent, from_task_instance
from tasklens.store import Store, deliveries_table, events_table, get_store, occurrences_table
from tasklens.testing import Reply, SlackSink, SmtpSink
from tests.faults.harness import FaultOutcome, count_per_needle, environment, messages_naming, wait_until
from tests.integration.postgres import PostgresServer
from tests.integration.secrets_backends import FlakySecretsBackend
from tests.integration.test_delivery_guarantee import KILLED_DISPATCHER
from tests.integration.test_long_ids_postgres import LONG_DAG, LONG_RUNS, LONG_TASK
from tests.unit.tasklens.test_events import RuntimeTaskInstance
from tests.unit.tasklens.test_store import FakeClock, assert_every_value_fits_its_column, make_alert, resolve_of, slack

REPO = Path(__file__).resolve().parents[2]
#: Every channel of a scenario sends at once: rate limits are not the fault under test.
UNLIMITED = 0.0
EMAIL_ROUTE = slack(channel="email", channel_type="email")


# -- shared bits ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"tasklens-fault-{prefix}-") as path:
        yield Path(path)


@contextlib.contextmanager
def _postgres_database(postgres: PostgresServer | None, name: str) -> Iterator[str]:
    """A fresh database on ``postgres`` (or on a server started for the block); yields its SQLAlchemy URL."""
    with contextlib.ExitStack() as stack:
        server = postgres or stack.enter_context(PostgresServer())
        yield server.create_database(f"{name}_{os.getpid()}_{time.monotonic_ns()}")


def _configs(mapping: Mapping[str, ChannelConfig]) -> Callable[[str], ChannelConfig | None]:
    return mapping.get


def _slack_config(**options: Any) -> ChannelConfig:
    return ChannelConfig("slack", options, rate_per_s=UNLIMITED)


def _email_config(**options: Any) -> ChannelConfig:
    return ChannelConfig("email", {"to": ["oncall@example.com"], **options}, rate_per_s=UNLIMITED)


def mail_text(message: email.message.Message) -> str:
    """Subject and every text part of a mail, decoded (strict UTF-8: an invalid byte raises)."""
    parts = [str(message["Subject"] or "")]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return "\n".join(parts)


def _undrained(store: Store) -> list[str]:
    """What a drained outbox may not hold: rows still claimed, rows still due."""
    problems = []
    unsent = [d for d in store.deliveries() if d["state"] in ("pending", "failed")]
    claimed = [d["id"] for d in unsent if d["claimed_by"] is not None]
    if claimed:
        problems.append(f"deliveries {claimed} left claimed")
    if store.next_due() is not None:
        problems.append("deliveries left unsent")
    return problems


def drain_concurrently(stores: Sequence[Store], dispatchers: Sequence[Dispatcher], *, deadline_s: float = 60.0,
                       start_together: bool = False) -> list[str]:
    """Each dispatcher passes in its own thread, back to back, until the outbox is empty; returns the errors."""
    errors: list[str] = []
    barrier = threading.Barrier(len(dispatchers))

    def loop(dispatcher: Dispatcher) -> None:
        end = time.monotonic() + deadline_s
        try:
            if start_together:
                barrier.wait(timeout=30)
            while time.monotonic() < end:
                dispatcher.run_once()
                if stores[0].next_due() is None:
                    return
                time.sleep(0.05)
        except Exception as exc:  # reported as a violation by the caller
            errors.append(f"{dispatcher.worker}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop, args=(d,), name=f"dispatcher-{d.worker}") for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def handle_in_task(events: Sequence[TaskEvent]) -> list[float]:
    """Each event through the real alert stage as a worker's listener runs it; how long each held the "task".

    The stage binds the task's identity into structlog's context (the task log); this process is not a task, so the
    context is restored afterwards.
    """
    saved = structlog.contextvars.get_contextvars()
    held = []
    try:
        for event in events:
            started = time.monotonic()
            pipeline.handle(event)
            held.append(time.monotonic() - started)
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)
    return held


def _count_sent(outcome: FaultOutcome, texts: Sequence[str], needles: Mapping[str, str]) -> None:
    count_per_needle(texts, needles, outcome)
    outcome.messages_delivered += sum(1 for text in texts if any(n in text for n in needles.values()))


# -- 8: a lease running out mid-pass -----------------------------------------------------------------------------


def lease_expires_mid_pass(*, messages: int = 6, send_s: float = 1.5, lease_s: float = 1.0) -> FaultOutcome:
    """Fault 8: two dispatchers on one store, leases of ``lease_s``, a Slack that takes ``send_s`` per post. The
    second takes rows over from the first mid-pass; no message may go out twice."""
    outcome = FaultOutcome(f"dispatcher lease ({lease_s:g} s) expires mid-pass, sends of {send_s:g} s",
                           tasks_changed=None)
    with _scratch("lease") as tmp, SlackSink() as sink, \
            environment({"AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri()}):
        sink.default = Reply(200, delay_s=send_s)
        url = f"sqlite:///{tmp / 'lease.db'}"
        stores = [Store(url), Store(url, migrate=False)]  # one engine per dispatcher, as in two api-servers
        try:
            needles = {f"alert {i}": f"lease_task_{i:02d}" for i in range(messages)}
            for i, needle in enumerate(needles.values()):
                stores[0].record([(make_alert(task_id=needle), [slack(channel=f"c{i}", group_key=f"g{i}")])])
            outcome.failures_injected = messages
            outcome.alerts_stored = len(stores[0].list_alerts())
            settings = DispatcherSettings(lease_s=lease_s, timeout_s=send_s + 2.0, backoff_jitter_s=0.0)
            dispatchers = [
                Dispatcher(store, settings=settings, channel_config=lambda name: _slack_config(), worker=name)
                for store, name in zip(stores, ("first", "second"))
            ]
            started = time.monotonic()
            for error in drain_concurrently(stores, dispatchers):
                outcome.violations.append(f"a dispatcher pass raised: {error}")
            outcome.time_to_alert_s = time.monotonic() - started
            _count_sent(outcome, sink.texts(), needles)
            outcome.expect(len(sink.posts) == messages, f"{len(sink.posts)} posts for {messages} messages")
            outcome.violations.extend(_undrained(stores[0]))
            lost = sum(d.totals.lost for d in dispatchers)
            outcome.expect(lost > 0, "no lease ran out mid-pass (the fault was not injected)")
        finally:
            for store in stores:
                store.dispose()
    return outcome


# -- 9: a dispatcher SIGKILLed between a send and its mark -------------------------------------------------------


def _python_env(extra: Mapping[str, str]) -> dict[str, str]:
    paths = [str(REPO / "plugins"), str(REPO / "include"), str(REPO)]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(paths)}


def dispatcher_killed_between_send_and_mark() -> FaultOutcome:
    """Fault 9: a real dispatcher process is SIGKILLed right after Slack (then, in a second round, the SMTP server)
    accepted a message and before it marked it sent. The next dispatcher sends it again once the lease ran out: at
    most one duplicate per kill, the other channel once, both emails with one Message-ID."""
    outcome = FaultOutcome("dispatcher SIGKILLed between send and mark", tasks_changed=None)
    settings = DispatcherSettings(lease_s=1.0, timeout_s=2.0)
    configs = _configs({"slack": _slack_config(), "email": _email_config()})
    times = []
    with _scratch("sigkill") as tmp, SlackSink() as slack_sink, SmtpSink() as smtp_sink:
        conns = {"AIRFLOW_CONN_TASKLENS_SLACK": slack_sink.conn_uri(),
                 "AIRFLOW_CONN_TASKLENS_SMTP": smtp_sink.conn_json()}
        with environment(conns):
            for killed_after in ("slack", "email"):
                needle = f"killed_after_{killed_after}"
                url = f"sqlite:///{tmp / f'{killed_after}.db'}"
                store = Store(url)
                try:
                    store.record([(make_alert(task_id=needle), [slack(), EMAIL_ROUTE])])
                    outcome.alerts_stored += len(store.list_alerts())
                    killed = subprocess.run(
                        [sys.executable, "-c", KILLED_DISPATCHER, url, killed_after], env=_python_env(conns),
                        capture_output=True, text=True, timeout=180, check=False,
                    )
                    if killed.returncode != -signal.SIGKILL:
                        outcome.violations.append(f"the dispatcher process was not killed after {killed_after}: "
                                                  f"exit {killed.returncode}: {killed.stderr[-500:]}")
                        continue
                    outcome.failures_injected += 1
                    killed_at = time.monotonic()
                    survivor = Dispatcher(store, settings=settings, channel_config=configs)
                    deadline = time.monotonic() + 60
                    while store.next_due() is not None and time.monotonic() < deadline:
                        survivor.run_once()
                        time.sleep(0.1)
                    times.append(time.monotonic() - killed_at)
                    copies = {
                        "slack": messages_naming(slack_sink.texts(), needle),
                        "email": sum(1 for m in smtp_sink.messages if needle in mail_text(m)),
                    }
                    outcome.messages_delivered += sum(copies.values())
                    for channel, seen in copies.items():
                        outcome.expect(seen >= 1, f"the {channel} message of {needle} was lost")
                        outcome.duplicates += max(0, seen - 1)
                        outcome.expect(seen <= 2, f"the {channel} message of {needle} arrived {seen} times")
                        if channel != killed_after:
                            outcome.expect(seen == 1, f"{channel} (not killed) got {needle} {seen} times")
                    message_ids = {m["Message-ID"] for m in smtp_sink.messages if needle in mail_text(m)}
                    outcome.expect(len(message_ids) == 1 and None not in message_ids,
                                   f"the emails of {needle} carry Message-IDs {message_ids}")
                    outcome.violations.extend(f"{needle}: {p}" for p in _undrained(store))
                finally:
                    store.dispose()
    outcome.time_to_alert_s = max(times) if times else None
    return outcome


# -- 10: two dispatchers on PostgreSQL escalate the same alerts --------------------------------------------------


def concurrent_escalations_on_postgresql(postgres: PostgresServer | None = None, *, alerts: int = 20,
                                         dispatchers: int = 2) -> FaultOutcome:
    """Fault 10: ``dispatchers`` real dispatchers (threads, own engines) pass at the same moment over a PostgreSQL
    outbox whose ``alerts`` alerts are all due for escalation: exactly one escalation per alert, in the store and
    in the escalation channel (email through aiosmtpd)."""
    outcome = FaultOutcome(f"{dispatchers} dispatchers escalate the same alerts (PostgreSQL)", tasks_changed=None)
    configs = _configs({"slack": _slack_config(), "email": _email_config()})
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_postgres_database(postgres, "tasklens_escalate"))
        slack_sink = stack.enter_context(SlackSink())
        smtp_sink = stack.enter_context(SmtpSink())
        stack.enter_context(environment({
            "AIRFLOW_CONN_TASKLENS_SLACK": slack_sink.conn_uri(), "AIRFLOW_CONN_TASKLENS_SMTP": smtp_sink.conn_json(),
        }))
        stores = [Store(url)] + [Store(url, migrate=False) for _ in range(dispatchers - 1)]
        stack.callback(lambda: [s.dispose() for s in stores])
        needles = {f"alert {i}": f"escalated_task_{i:03d}" for i in range(alerts)}
        for i, needle in enumerate(needles.values()):
            route = slack(group_key=f"g{i}", escalate_after_s=1, escalation_channels=("email",))
            stores[0].record([(make_alert(task_id=needle), [route])])
        outcome.failures_injected = alerts
        outcome.alerts_stored = len(stores[0].list_alerts())
        time.sleep(1.2)  # every alert is now past its escalate_after
        started = time.monotonic()
        workers = [Dispatcher(s, settings=DispatcherSettings(backoff_jitter_s=0.0), channel_config=configs,
                              worker=f"d{n}") for n, s in enumerate(stores)]
        for error in drain_concurrently(stores, workers, start_together=True):
            outcome.violations.append(f"a dispatcher pass raised: {error}")
        mails = smtp_sink.wait_for(alerts, timeout_s=10)
        outcome.time_to_alert_s = time.monotonic() - started
        per_alert = Counter(d["alert_id"] for d in stores[0].deliveries() if d["kind"] == "escalation")
        outcome.expect(len(per_alert) == alerts, f"{len(per_alert)} of {alerts} alerts escalated")
        doubled = {alert_id: n for alert_id, n in per_alert.items() if n != 1}
        outcome.expect(not doubled, f"escalations queued more than once: {doubled}")
        time.sleep(1)  # a late second escalation would arrive now
        mail_texts = [mail_text(m) for m in smtp_sink.messages]
        _count_sent(outcome, mail_texts, needles)
        outcome.messages_delivered += len(slack_sink.messages)
        outcome.expect(len(mails) >= alerts, f"{len(mails)} escalation emails for {alerts} alerts")
        outcome.violations.extend(_undrained(stores[0]))
    return outcome


# -- 11: bad Retry-After values ------------------------------------------------------------------------------------


def _http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


def bad_retry_after_values(*, backoff_max_s: float = 300.0) -> FaultOutcome:
    """Fault 11: five Slack channels each get a real 429 whose Retry-After is inf, 1e12, -5, garbage or an HTTP-date
    2 minutes ahead. Every pass completes, no wait exceeds ``backoff_max_s``, no row stays claimed, every message is
    delivered once. The dispatcher's clock is simulated (the cap is 300 s); ``time_to_alert_s`` is that clock's."""
    outcome = FaultOutcome("Retry-After inf/1e12/-5/garbage/HTTP-date (simulated clock)", tasks_changed=None)
    headers = ["inf", "1e12", "-5", "in a minute", _http_date_in(120)]
    clock = FakeClock()
    with _scratch("retry-after") as tmp, SlackSink() as sink, \
            environment({"AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri()}):
        store = Store(f"sqlite:///{tmp / 'retry_after.db'}", clock=clock)
        try:
            needles = {f"Retry-After {h!r}": f"retry_after_task_{i}" for i, h in enumerate(headers)}
            for i, needle in enumerate(needles.values()):
                store.record([(make_alert(task_id=needle), [slack(channel=f"c{i}", group_key=f"g{i}")])])
            outcome.alerts_stored = len(store.list_alerts())
            sink.responses.extend(Reply(429, retry_after=header) for header in headers)
            dispatcher = Dispatcher(
                store, clock=clock, sleep=clock.advance,
                settings=DispatcherSettings(backoff_jitter_s=0.0, backoff_max_s=backoff_max_s),
                channel_config=lambda name: _slack_config(),
            )
            started = clock.now
            try:
                first = dispatcher.run_once()
            except Exception as exc:
                outcome.violations.append(f"the pass meeting the 429s raised {type(exc).__name__}: {exc}")
                return outcome
            outcome.failures_injected = sink.answers.count(429)
            outcome.expect(first.failed == outcome.failures_injected,
                           f"{first.failed} of {outcome.failures_injected} rate-limited deliveries were scheduled for "
                           "a retry (the pass broke on the others' Retry-After)")
            rows = store.deliveries()
            claimed = [d["id"] for d in rows if d["claimed_by"] is not None]
            outcome.expect(not claimed, f"rows {claimed} left claimed after the 429s")
            waits = [(d["next_attempt_at"] - clock.now).total_seconds() for d in rows]
            outcome.expect(max(waits) <= backoff_max_s,
                           f"a wait of {max(waits):.0f} s exceeds the {backoff_max_s:g} s cap")
            try:
                dispatcher.drain()
            except Exception as exc:
                outcome.violations.append(f"a later pass raised {type(exc).__name__}: {exc}")
            outcome.time_to_alert_s = (clock.now - started).total_seconds()
            _count_sent(outcome, sink.texts(), needles)
            outcome.violations.extend(_undrained(store))
            outcome.expect({d["state"] for d in store.deliveries()} == {"sent"}, "not every delivery was sent")
        finally:
            store.dispose()
    return outcome


# -- 12: a secrets backend blip during get_connection --------------------------------------------------------------


@contextlib.contextmanager
def flaky_secrets_backend(connections: Mapping[str, str], failures: int = 1) -> Iterator[None]:
    """``[secrets] backend`` = :class:`FlakySecretsBackend` serving ``connections`` (the first ``failures`` lookups
    of each fail) for the block; Airflow's default backends afterwards."""
    from airflow.sdk.configuration import clear_secrets_backends_cache

    FlakySecretsBackend.lookups.clear()
    variables = {
        "AIRFLOW__SECRETS__BACKEND": f"{FlakySecretsBackend.__module__}.{FlakySecretsBackend.__name__}",
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections": dict(connections), "failures": failures}),
    }
    with environment(variables):
        clear_secrets_backends_cache()
        try:
            yield
        finally:
            clear_secrets_backends_cache()
    clear_secrets_backends_cache()  # the next lookup builds the default backends again


def secrets_backend_blip() -> FaultOutcome:
    """Fault 12: the secrets backend fails the first lookup of the Slack and the SMTP connection. Both deliveries
    are retried (not dead, the alert not flagged undelivered) and sent on the next attempt (simulated clock)."""
    outcome = FaultOutcome("secrets backend blip during get_connection", tasks_changed=None)
    clock = FakeClock()
    with _scratch("secrets") as tmp, SlackSink() as slack_sink, SmtpSink() as smtp_sink:
        connections = {"tasklens_vault_slack": slack_sink.conn_uri(),
                       "tasklens_vault_smtp": smtp_sink.conn_json(to="oncall@example.com")}
        configs = _configs({
            "slack": ChannelConfig("slack", {"conn_id": "tasklens_vault_slack"}, rate_per_s=UNLIMITED),
            "email": ChannelConfig("email", {"conn_id": "tasklens_vault_smtp"}, rate_per_s=UNLIMITED),
        })
        store = Store(f"sqlite:///{tmp / 'secrets.db'}", clock=clock)
        try:
            with flaky_secrets_backend(connections):
                store.record([(make_alert(task_id="secrets_blip"), [slack(), EMAIL_ROUTE])])
                outcome.alerts_stored = len(store.list_alerts())
                dispatcher = Dispatcher(store, clock=clock, sleep=clock.advance,
                                        settings=DispatcherSettings(backoff_jitter_s=0.0), channel_config=configs)
                first = dispatcher.run_once()
                outcome.failures_injected = len(first.errors)
                outcome.expect(outcome.failures_injected == 2, f"{outcome.failures_injected} of 2 lookups failed "
                                                               "(the blip was not injected)")
                outcome.expect(first.failed == 2, f"{first.failed} of 2 deliveries kept for a retry after the blip")
                outcome.expect(first.dead == 0, f"{first.dead} deliveries marked dead after a blip")
                outcome.expect(not store.list_alerts()[0]["undelivered"], "the alert was flagged undelivered")
                started = clock.now
                dispatcher.drain()
                outcome.time_to_alert_s = (clock.now - started).total_seconds()
                mails = smtp_sink.wait_for(1, timeout_s=10)
            _count_sent(outcome, slack_sink.texts(), {"the Slack message": "secrets_blip"})
            _count_sent(outcome, [mail_text(m) for m in mails], {"the email": "secrets_blip"})
            outcome.expect({d["state"] for d in store.deliveries()} == {"sent"}, "not every delivery was sent")
        finally:
            store.dispose()
    return outcome


# -- 13: no webhook token anywhere ---------------------------------------------------------------------------------

WEBHOOK_SECRET = "SeCrEtWeBhOoK123"  # made up; the scenario looks for it (and the B... part of the path) everywhere
LEAKY_CONNECTIONS = {
    # A space in the host: http.client.InvalidURL quotes the URL path, token included.
    "leaky_invalid_url": {"conn_type": "slackwebhook", "host": "http://127.0.0.1:9/ser vices",
                          "password": f"T0AAAA/B0BBBB/{WEBHOOK_SECRET}"},
    # A webhook URL with a non-HTTP scheme: slack_sdk's SlackRequestError quotes the whole URL.
    "leaky_request_error": {"conn_type": "slackwebhook",
                            "password": f"ftp://hooks.example.com/services/T0AAAA/B0BBBB/{WEBHOOK_SECRET}"},
}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the formatter appends exc_info's traceback


@contextlib.contextmanager
def _captured_logs() -> Iterator[_Capture]:
    root = logging.getLogger()
    handler, level = _Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def no_secret_in_errors() -> FaultOutcome:
    """Fault 13: two malformed webhook connections (``InvalidURL``, ``SlackRequestError``; both errors quote the
    token). The api-server's background dispatcher gives up on them; the token is in no delivery's or alert's
    last_error, the UI's JSON (``tasklens.ui.queries``, what ``/tasklens/api`` serves; its auth is not exercised
    here), ``GET /tasklens/health`` (the real app, in-process) and no log line at any level."""
    # The api-server's side (FastAPI, the UI's queries): imported only by the scenario that needs it.
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tasklens.ui import queries
    from tasklens.ui.app import create_app

    outcome = FaultOutcome("webhook token in errors, UI, health or logs", tasks_changed=None)
    with _scratch("secrets-leak") as tmp:
        rules = tmp / "rules.yml"
        channels = "".join(f"  {name}:\n    type: slack\n    conn_id: tasklens_{name}\n" for name in LEAKY_CONNECTIONS)
        rules.write_text("channels:\n" + channels, encoding="utf-8")
        variables = {
            "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{tmp / 'leaky.db'}",
            "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
            "AIRFLOW__TASKLENS__SPOOL_DIR": str(tmp / "spool"),
            "AIRFLOW__TASKLENS__EVENTS_PATH": "",
            **{f"AIRFLOW_CONN_TASKLENS_{name.upper()}": json.dumps(conn) for name, conn in LEAKY_CONNECTIONS.items()},
        }
        with environment(variables), _captured_logs() as logs:
            store = get_store(migrate=True)
            for name in LEAKY_CONNECTIONS:
                store.record([(make_alert(task_id=f"leak_{name}"), [slack(channel=name, group_key=name)])])
            outcome.failures_injected = len(LEAKY_CONNECTIONS)
            outcome.alerts_stored = len(store.list_alerts())
            dispatch.start_background_dispatcher(store, interval_s=0.2)
            try:
                wait_until(lambda: {d["state"] for d in store.deliveries()} == {"dead"}, 30, "dead deliveries")
            except TimeoutError:
                outcome.violations.append(f"deliveries ended {[d['state'] for d in store.deliveries()]}, not dead")
            finally:
                dispatch.stop_background_dispatcher()
            app = FastAPI()
            app.mount("/tasklens", create_app(lazy=True))
            health = TestClient(app).get("/tasklens/health")
            page = queries.list_alerts(store, queries.AlertFilter(), dag_ids=None, limit=50)
            details = [queries.alert_detail(store, a["id"]) for a in page.alerts]
            outputs = {
                "deliveries' last_error": json.dumps([d["last_error"] for d in store.deliveries()]),
                "alerts' last_error": json.dumps([a["last_error"] for a in store.list_alerts()]),
                "UI JSON": json.dumps([page.alerts, details], default=str),
                "/tasklens/health": health.text,
                "logs": "\n".join(logs.lines),
            }
        for where, text in outputs.items():
            outcome.expect(WEBHOOK_SECRET not in text and "B0BBBB" not in text, f"the webhook token is in {where}")
        errors = [error or "" for error in json.loads(outputs["deliveries' last_error"])]
        outcome.expect(all("unusable webhook URL" in e for e in errors),
                       f"the errors do not say what is wrong: {errors}")
        # Anonymous callers get the status only (details need Airflow's auth: tests/unit/tasklens/ui/test_app.py).
        outcome.expect(health.status_code in (200, 503) and set(health.json()) == {"status"},
                       f"anonymous /tasklens/health answered {health.status_code} with more than its status")
    return outcome


# -- 14: long non-ASCII ids on PostgreSQL --------------------------------------------------------------------------

LONG_IDS_RULES = """\
routes:
  - name: every_failure
    channels: [slack]
    group_by: [dag_id, task_id, run_id]
    group_wait: 0s
"""


def _long_id_failure(run_id: str, dag_id: str) -> TaskEvent:
    return TaskEvent(
        event="failed", dag_id=dag_id, task_id=LONG_TASK, run_id=run_id, try_number=1, max_tries=0,
        # one exception type per DAG: the same error in two DAGs would be one incident (one message)
        exception_type="ValueError" if dag_id == LONG_DAG else "LookupError", exception_message="订单表为空",
        traceback="Traceback ...\nValueError: 订单表为空",
    )


def long_non_ascii_ids_on_postgresql(postgres: PostgresServer | None = None) -> FaultOutcome:
    """Fault 14: 250-character CJK dag and task ids fail in two runs whose 310-character ids differ only at the end,
    and a DAG whose id differs in its last character fails too, through the real alert stage on PostgreSQL (whose
    VARCHAR(n) rejects longer values). Every attempt is stored once, distinct ids stay distinct, both alerts are
    posted to Slack."""
    outcome = FaultOutcome("long non-ASCII DAG and task ids (PostgreSQL)", tasks_changed=None)
    other_dag = LONG_DAG[:-1] + "周"
    events = [_long_id_failure(LONG_RUNS[0], LONG_DAG), _long_id_failure(LONG_RUNS[1], LONG_DAG),
              _long_id_failure(LONG_RUNS[0], other_dag)]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_postgres_database(postgres, "tasklens_long"))
        tmp = stack.enter_context(_scratch("long-ids"))
        sink = stack.enter_context(SlackSink())
        (tmp / "rules.yml").write_text(LONG_IDS_RULES, encoding="utf-8")
        stack.enter_context(environment({
            "AIRFLOW__TASKLENS__STORE_URL": url, "AIRFLOW__TASKLENS__RULES_FILE": str(tmp / "rules.yml"),
            "AIRFLOW__TASKLENS__EVENTS_PATH": str(tmp / "events.jsonl"),
            "AIRFLOW__TASKLENS__SPOOL_DIR": str(tmp / "spool"), "AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri(),
        }))
        store = get_store(migrate=True)  # as `tasklens db upgrade` would
        pipeline.ERROR_COUNTS.clear()
        outcome.worst_added_s = max(handle_in_task(events))
        outcome.failures_injected = len(events)
        outcome.expect(not pipeline.ERROR_COUNTS, f"tasklens stages failed: {dict(pipeline.ERROR_COUNTS)}")
        alerts = {a["dag_id"]: a for a in store.list_alerts()}
        outcome.alerts_stored = len(alerts)
        outcome.expect(set(alerts) == {LONG_DAG, other_dag}, f"{len(alerts)} alerts for the two long DAG ids")
        outcome.expect(store.occurrence_count() == 3, f"{store.occurrence_count()} of 3 attempts stored")
        with store.engine.connect() as conn:
            run_ids = set(conn.execute(sa.select(occurrences_table.c.run_id)).scalars())
            event_runs = list(conn.execute(sa.select(events_table.c.run_id)).scalars())
            group_keys = list(conn.execute(sa.select(deliveries_table.c.group_key)).scalars())
        outcome.expect(len(run_ids) == 2, f"the two long run ids were stored as {len(run_ids)}")
        outcome.expect(len(event_runs) == 3, f"{len(event_runs)} of 3 events stored")
        outcome.expect(len(set(group_keys)) == 2, f"{len(set(group_keys))} group keys for two DAGs")
        try:
            assert_every_value_fits_its_column(store)
        except AssertionError as exc:
            outcome.violations.append(f"a stored value exceeds its column: {exc}")
        clock = FakeClock()
        clock.now = store.clock()
        dispatcher = Dispatcher(store, clock=clock, sleep=clock.advance)  # Slack's 1 message/s, on the fake clock
        dispatcher.drain()
        texts = sink.texts()
        outcome.messages_delivered = len(texts)
        outcome.expect(len(texts) == 2, f"{len(texts)} Slack messages for two alerts")
        outcome.duplicates = max(0, len(texts) - 2)
        outcome.expect(all(LONG_TASK[:20] in t and "订单表为空" in t for t in texts), "a message lost the long id")
        outcome.violations.extend(_undrained(store))
    return outcome


# -- 15: hostile exceptions ----------------------------------------------------------------------------------------


class UnprintableError(Exception):
    """Its ``__str__`` raises, as some library exceptions' do when their state is broken."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of UnprintableError exploded")


def _parse_rows(size: int) -> None:
    raise ValueError("row parse failed: " + "x" * size)


def _decode_path() -> None:
    undecodable = b"/data/\xff\xfe-orders.csv".decode("utf-8", errors="surrogateescape")
    raise OSError(f"cannot open {undecodable} \ud800 (lone surrogate)")


def _raise_unprintable() -> None:
    raise UnprintableError("state is broken")


HOSTILE_TASKS: dict[str, tuple[Callable[[], None], list[str], str]] = {
    # task id: (what raises, frames the stored traceback and the email keep, what the Slack message must show)
    "str_raises": (_raise_unprintable, ["in _raise_unprintable", "UnprintableError"], "UnprintableError"),
    "megabyte_message": (lambda: _parse_rows(1_000_000), ["in _parse_rows", "ValueError: row parse failed: xxx"],
                         "row parse failed: xxx"),
    "invalid_utf8": (_decode_path, ["in _decode_path", "OSError: cannot open /data/\ufffd\ufffd-orders.csv"],
                     "cannot open /data/\ufffd\ufffd-orders.csv"),
}
HOSTILE_RULES = """\
channels:
  email:
    type: email
    to: [oncall@example.com]
routes:
  - name: every_failure
    channels: [slack, email]
    group_by: [dag_id, task_id, run_id]
    group_wait: 0s
"""


def hostile_exceptions() -> FaultOutcome:
    """Fault 15: tasks fail with an exception whose ``__str__`` raises, a 1 MB message and lone surrogates with
    undecodable bytes. Through the real alert stage (as the worker's listener calls it) and the dispatcher, each is a
    valid UTF-8 line in the event stream, an alert in the store with its traceback frames, a Slack message and an
    email (strict UTF-8, frames kept)."""
    outcome = FaultOutcome("hostile exceptions (raising __str__, 1 MB, surrogates)", tasks_changed=None)
    with _scratch("hostile") as tmp, SlackSink() as slack_sink, SmtpSink() as smtp_sink:
        (tmp / "rules.yml").write_text(HOSTILE_RULES, encoding="utf-8")
        stream = tmp / "events.jsonl"
        variables = {
            "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{tmp / 'hostile.db'}",
            "AIRFLOW__TASKLENS__RULES_FILE": str(tmp / "rules.yml"), "AIRFLOW__TASKLENS__EVENTS_PATH": str(stream),
            "AIRFLOW__TASKLENS__SPOOL_DIR": str(tmp / "spool"),
            "AIRFLOW_CONN_TASKLENS_SLACK": slack_sink.conn_uri(), "AIRFLOW_CONN_TASKLENS_SMTP": smtp_sink.conn_json(),
        }
        with environment(variables):
            store = get_store(migrate=True)
            pipeline.ERROR_COUNTS.clear()
            events = []
            for task_id, (raiser, _, _) in HOSTILE_TASKS.items():
                ti = RuntimeTaskInstance(dag_id="tl_hostile", task_id=task_id, run_id="manual__hostile",
                                         try_number=1, max_tries=0, state="failed")
                try:
                    raiser()
                except Exception as exc:
                    events.append(from_task_instance("failed", ti, error=exc))
            outcome.failures_injected = len(events)
            outcome.worst_added_s = max(handle_in_task(events))
            outcome.expect(not pipeline.ERROR_COUNTS, f"tasklens stages failed: {dict(pipeline.ERROR_COUNTS)}")
            alerts = {a["task_id"]: a for a in store.list_alerts()}
            outcome.alerts_stored = len(alerts)
            clock = FakeClock()
            clock.now = store.clock()
            report = Dispatcher(store, clock=clock, sleep=clock.advance).drain()
            outcome.expect(not report.errors, f"deliveries failed: {report.errors[:3]}")
            mails = smtp_sink.wait_for(len(HOSTILE_TASKS), timeout_s=10)
            outcome.violations.extend(_undrained(store))
        try:
            lines = [json.loads(line) for line in stream.read_bytes().decode("utf-8").splitlines()]
        except (OSError, ValueError) as exc:
            outcome.violations.append(f"the event stream is not valid UTF-8 JSON lines: {type(exc).__name__}: {exc}")
            lines = []
        failed = {line["task_id"]: line for line in lines if line.get("event") == "failed"}
        outcome.expect(failed.get("str_raises", {}).get("exception_message") == "UnprintableError('state is broken')",
                       "the stream lost the unprintable exception's message")
        outcome.expect(len(failed.get("megabyte_message", {}).get("exception_message") or "x" * 2001) <= 2000,
                       "the 1 MB message was not bounded in the stream")
        slack_texts = slack_sink.texts()
        if any("_raw" in message for message in slack_sink.messages):
            outcome.violations.append("a Slack post was not valid UTF-8 JSON")
        try:
            mail_texts = [mail_text(m) for m in mails]
        except UnicodeDecodeError as exc:
            outcome.violations.append(f"an email part is not valid UTF-8: {exc}")
            mail_texts = []
        for task_id, (_, frames, shown) in HOSTILE_TASKS.items():
            outcome.expect(task_id in failed, f"{task_id}: no failed line in the event stream")
            traceback = str((alerts.get(task_id) or {}).get("data", {}).get("traceback") or "")
            outcome.expect(task_id in alerts, f"{task_id}: no alert stored")
            outcome.expect(all(f in traceback for f in frames), f"{task_id}: the stored traceback lost its frames")
            on_slack = [t for t in slack_texts if task_id in t]
            outcome.expect(len(on_slack) == 1 and shown in on_slack[0], f"{task_id}: not shown once on Slack")
            by_mail = [t for t in mail_texts if task_id in t]
            outcome.expect(len(by_mail) == 1 and all(f in by_mail[0] for f in frames),
                           f"{task_id}: not mailed once with its frames")
            outcome.duplicates += max(0, len(on_slack) - 1) + max(0, len(by_mail) - 1)
        outcome.messages_delivered = len(slack_sink.messages) + len(mails)
    return outcome


# -- 18: resolve and escalation edge cases -------------------------------------------------------------------------


class _EdgeCase:
    """One edge case: its own store (fake clock) and dispatcher; the channels are shared sinks."""

    def __init__(self, tmp: Path, name: str, configs: Callable[[str], ChannelConfig | None]) -> None:
        self.name = name
        self.clock = FakeClock()
        self.store = Store(f"sqlite:///{tmp / f'{name}.db'}", clock=self.clock)
        self.dispatcher = Dispatcher(self.store, clock=self.clock, sleep=self.clock.advance, channel_config=configs,
                                     settings=DispatcherSettings(backoff_jitter_s=0.0))
        self.alert = make_alert(task_id=f"edge_{name}")

    def states(self, channel: str | None = None) -> list[tuple[str, str, str]]:
        return [(d["channel"], d["kind"], d["state"]) for d in self.store.deliveries()
                if channel is None or d["channel"] == channel]


def resolve_and_escalation_edge_cases() -> FaultOutcome:
    """Fault 18, four cases with the real Slack and email channels (simulated clock):

    * died: an alert resolved within group_wait whose Slack delivery is rejected for good gets no resolve notice;
    * fallback: Slack fails then rejects the alert, email (its fallback) gets the alert and then the resolve;
    * prune: retention 40 days later keeps an open alert's sent message, so its resolve still goes to Slack;
    * routes: two routes escalate after 10 and 30 minutes, each at its own time, each once.
    """
    outcome = FaultOutcome("resolve/escalation edge cases (simulated clock)", tasks_changed=None)
    with _scratch("edges") as tmp, SlackSink() as slack_sink, SlackSink() as pager_sink, SmtpSink() as smtp_sink:
        configs = _configs({
            "slack": _slack_config(), "ops": _slack_config(), "pager": _slack_config(conn_id="tasklens_pager"),
            "email": _email_config(),
        })
        variables = {"AIRFLOW_CONN_TASKLENS_SLACK": slack_sink.conn_uri(),
                     "AIRFLOW_CONN_TASKLENS_PAGER": pager_sink.conn_uri(),
                     "AIRFLOW_CONN_TASKLENS_SMTP": smtp_sink.conn_json()}
        cases: list[_EdgeCase] = []
        with environment(variables):
            died = _EdgeCase(tmp, "died", configs)
            died.store.record([(died.alert, [slack(group_wait_s=30)])])
            died.clock.advance(5)
            died.store.record([(resolve_of(died.alert), ())])
            slack_sink.responses.append(Reply(404, body="no_service"))
            died.dispatcher.drain()
            outcome.expect(died.states() == [("slack", "alert", "dead"), ("slack", "resolve", "dead")],
                           f"died: deliveries {died.states()}")
            cases.append(died)

            fallback = _EdgeCase(tmp, "fallback", configs)
            fallback.store.record([(fallback.alert, [slack(fallback_channels=("email",))])])
            slack_sink.responses.extend([Reply(500), Reply(404, body="no_service")])
            fallback.dispatcher.run_once()
            fallback.clock.advance(10)
            fallback.store.record([(resolve_of(fallback.alert), ())])
            fallback.dispatcher.drain()
            outcome.expect(fallback.states("email") == [("email", "alert", "sent"), ("email", "resolve", "sent")],
                           f"fallback: email deliveries {fallback.states('email')}")
            cases.append(fallback)

            prune = _EdgeCase(tmp, "prune", configs)
            prune.store.record([(prune.alert, [slack()])])
            prune.dispatcher.run_once()
            prune.clock.advance(40 * 86400)
            prune.store.prune(older_than=timedelta(days=30))
            prune.store.record([(resolve_of(prune.alert), ())])
            prune.dispatcher.drain()
            outcome.expect(prune.states() == [("slack", "alert", "sent"), ("slack", "resolve", "sent")],
                           f"prune: deliveries {prune.states()}")
            cases.append(prune)

            routes = _EdgeCase(tmp, "routes", configs)
            routes.store.record([(routes.alert, [
                slack(route="team", escalate_after_s=600, escalation_channels=("email",)),
                slack(route="oncall", channel="ops", group_key="ops", escalate_after_s=1800,
                      escalation_channels=("pager",)),
            ])])
            escalations_seen = []
            for advance in (0, 600, 1200, 3600):
                routes.clock.advance(advance)
                routes.dispatcher.drain()
                escalations_seen.append(tuple(sorted(c for c, kind, _ in routes.states() if kind == "escalation")))
            outcome.expect(escalations_seen == [(), ("email",), ("email", "pager"), ("email", "pager")],
                           f"routes: escalations after 0/10/30/90 min {escalations_seen}")
            cases.append(routes)
            mails = smtp_sink.wait_for(3, timeout_s=10)
        outcome.failures_injected = len(cases)
        outcome.alerts_stored = sum(len(case.store.list_alerts()) for case in cases)
        slack_texts, pager_texts = slack_sink.texts(), pager_sink.texts()
        mail_texts = [mail_text(m) for m in mails]
        expected = {  # (sink, needle): messages
            ("slack", "edge_died"): 0, ("slack", "edge_fallback"): 0, ("email", "edge_fallback"): 2,
            ("slack", "edge_prune"): 2, ("slack", "edge_routes"): 2, ("email", "edge_routes"): 1,
            ("pager", "edge_routes"): 1,
        }
        texts = {"slack": slack_texts, "pager": pager_texts, "email": mail_texts}
        for (where, needle), want in expected.items():
            seen = messages_naming(texts[where], needle)
            outcome.expect(seen >= want, f"{needle}: {seen} of {want} messages on {where}")
            outcome.expect(want > 0 or seen == 0, f"{needle}: {seen} messages on {where}, where none belongs")
            outcome.duplicates += max(0, seen - want) if want else 0
        outcome.messages_delivered = len(slack_texts) + len(pager_texts) + len(mail_texts)
        for case in cases:
            outcome.violations.extend(f"{case.name}: {p}" for p in _undrained(case.store))
            case.store.dispose()
    return outcome


# -- 20: no network call from a failing task's process -------------------------------------------------------------

# A task process's failure path, in a fresh interpreter: the worker listener's on_task_instance_failed with a
# RuntimeTaskInstance-shaped object (as Airflow calls it after a task raised). An audit hook records every socket
# connect or send; the modules loaded afterwards show whether any delivery code was even imported.
TASK_PROCESS = r"""
import json, sys, time
network = []

def audit(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        network.append(f"{event} {args[1]!r}" if len(args) > 1 else event)

sys.addaudithook(audit)
from tasklens import listener
from tests.unit.tasklens.test_events import RuntimeTaskInstance

ti = RuntimeTaskInstance(dag_id="tl_inline", task_id="fails_now", run_id="manual__inline", try_number=1,
                         max_tries=0, state="failed")
try:
    raise ValueError("no inline delivery")
except ValueError as exc:
    started = time.monotonic()
    listener.on_task_instance_failed(previous_state="running", task_instance=ti, error=exc)
    held = time.monotonic() - started
# The channel registry (tasklens.channels itself: type names and options, no provider code) is read by the rules;
# the modules that send (tasklens.dispatch, tasklens.channels.<type>) must stay out of a task process.
delivery_modules = sorted(m for m in sys.modules if m.startswith(("tasklens.dispatch", "tasklens.channels."))
                          or m in ("slack_sdk", "smtplib"))
print(json.dumps({"network": network, "modules": delivery_modules, "held_s": held}))
"""
INLINE_RULES = "routes:\n  - name: all\n    channels: [slack]\n    group_wait: 0s\n"


def no_inline_delivery() -> FaultOutcome:
    """Fault 20: a task's process reports a failure (the worker listener, in its own interpreter) while Slack is up:
    it opens no socket, imports no delivery code, and Slack gets nothing until a dispatcher runs, which then posts
    the alert once."""
    outcome = FaultOutcome("failing task's process makes no network call", tasks_changed=None)
    with _scratch("inline") as tmp, SlackSink() as sink:
        (tmp / "rules.yml").write_text(INLINE_RULES, encoding="utf-8")
        variables = {
            "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{tmp / 'inline.db'}",
            "AIRFLOW__TASKLENS__RULES_FILE": str(tmp / "rules.yml"), "AIRFLOW__TASKLENS__EVENTS_PATH": "",
            "AIRFLOW__TASKLENS__SPOOL_DIR": str(tmp / "spool"), "AIRFLOW_CONN_TASKLENS_SLACK": sink.conn_uri(),
        }
        with environment(variables):
            store = get_store(migrate=True)  # as `tasklens db upgrade` would, before any task runs
            task = subprocess.run([sys.executable, "-c", TASK_PROCESS], env=_python_env(variables),
                                  capture_output=True, text=True, timeout=180, check=False)
            outcome.failures_injected = 1
            try:
                report = json.loads(task.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                outcome.violations.append(f"the task process failed: exit {task.returncode}: {task.stderr[-800:]}")
                return outcome
            outcome.worst_added_s = report["held_s"]
            outcome.expect(report["network"] == [], f"the task process used the network: {report['network']}")
            outcome.expect(report["modules"] == [], f"the task process imported delivery code: {report['modules']}")
            outcome.expect(sink.posts == [], f"Slack got {len(sink.posts)} posts before any dispatcher ran")
            alerts = store.list_alerts()
            outcome.alerts_stored = len(alerts)
            outcome.expect(len(alerts) == 1 and alerts[0]["kind"] == AlertKind.FAILURE.value,
                           f"stored {[a['kind'] for a in alerts]}, not one failure")
            started = time.monotonic()
            Dispatcher(store).run_once()
            outcome.time_to_alert_s = time.monotonic() - started
            _count_sent(outcome, sink.texts(), {"the failure": "fails_now"})
            outcome.violations.extend(_undrained(store))
    return outcome


__all__ = [
    "bad_retry_after_values",
    "concurrent_escalations_on_postgresql",
    "dispatcher_killed_between_send_and_mark",
    "hostile_exceptions",
    "lease_expires_mid_pass",
    "long_non_ascii_ids_on_postgresql",
    "no_inline_delivery",
    "no_secret_in_errors",
    "resolve_and_escalation_edge_cases",
    "secrets_backend_blip",
]

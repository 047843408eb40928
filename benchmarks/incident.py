"""Incidents: one warehouse outage, how many Slack messages, and does each name the failures?

Replays a realistic outage: 40 tasks in 12 DAGs fail with the same database error within 8 minutes, 60 tasks end
``upstream_failed`` (Airflow runs no callback and no listener for them: none of the variants messages them), and 3
unrelated failures happen in the same window; then every failed task succeeds on a rerun. Four variants, same run,
local Slack servers:

- **notifier**: Airflow's own ``SlackWebhookNotifier`` on every failed task (``notify()``, one post each);
- **digests**: tasklens without correlation (``incident_window_s = 0``): the real alert stage writes the store, the
  real dispatcher sends through ``SlackWebhookHook`` (digests per DAG run, resolve notices);
- **incidents**: the same with incidents on (one message per incident, later members as updates at most once a
  minute, one resolve), and again with ``incident_update_interval_s = 600``;
- **incidents, bot token**: incidents through a ``slack`` bot-token connection to a local Slack Web API
  (tests/channel_servers.py ``SlackApiServer``): new messages (``chat.postMessage``) and in-place updates
  (``chat.update``: the incident's later members and resolve, the unrelated alerts' resolves) counted apart; the
  failures named are those of the messages as they read at the end.

Time is a fake clock for the store and the dispatcher (8 minutes replay in seconds); the posts are real HTTP.
For each variant: messages sent and how many of the 40 root failures the messages name (a task named in any
message), and whether an unrelated failure was folded into the incident's messages.

Then the grouping on a labelled replay: 240 failures of 10 distinct causes across 30 DAGs over 2 hours (numbers,
hosts, ids, paths and times differ within a cause), correlated by the store; pairwise precision and recall of "same
incident" against "same cause".

    python benchmarks/incident.py

Ends with ``name: value`` lines: each variant's new messages and the bot token's updates.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOME = Path(tempfile.mkdtemp(prefix="tasklens-bench-incident-"))
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__TASKLENS__EVENTS_PATH": "",
    "AIRFLOW__TASKLENS__SPOOL_DIR": str(HOME / "spool"),
})
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "true")
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

START = datetime(2026, 11, 27, 2, 3, tzinfo=timezone.utc)
PG_DOWN = ('could not connect to server: Connection refused\n\tIs the server running on host "wh.internal" '
           "({ip}) and accepting\n\tTCP/IP connections on port 5432?")
UNRELATED = [("ml_features", "join", "KeyError", "'customer_id'"),
             ("crm_sync", "pull", "HTTPError", "404 Client Error: Not Found for url: https://crm.example.com/v2/x"),
             ("finance_close", "check", "ZeroDivisionError", "division by zero")]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def outage(seed: int = 1) -> list[tuple[float, str, str, str, str]]:
    """(seconds after START, dag_id, task_id, exception type, message): 40 root failures in 12 DAGs over 8 minutes
    and 3 unrelated failures in the same window, in time order."""
    rng = random.Random(seed)
    rows = []
    for i in range(40):
        dag = f"warehouse_dag_{i % 12:02d}"
        rows.append((rng.uniform(0, 480), dag, f"load_{i:02d}", "OperationalError",
                     PG_DOWN.format(ip=f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}")))
    for dag, task, exc, msg in UNRELATED:
        rows.append((rng.uniform(0, 480), dag, task, exc, msg))
    return sorted(rows)


def _named(texts: list[str], failures: list[tuple[float, str, str, str, str]]) -> set[str]:
    joined = "\n".join(texts)
    return {f"{dag}.{task}" for _, dag, task, _, _ in failures if f"{dag}.{task}" in joined}


def notifier_variant(sink: object, failures: list[tuple[float, str, str, str, str]]) -> list[str]:
    """Airflow's SlackWebhookNotifier, one per failed task (what a user wires as on_failure_callback)."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    before = len(sink.messages)  # type: ignore[attr-defined]
    for _, dag, task, exc, msg in failures:
        SlackWebhookNotifier(slack_webhook_conn_id="tasklens_slack",
                             text=f"Task {dag}.{task} failed: {exc}: {msg.splitlines()[0]}").notify({})
    return sink.texts()[before:]  # type: ignore[attr-defined]


def tasklens_variant(sink: object, failures: list[tuple[float, str, str, str, str]], *, window_s: float,
                     name: str, update_s: float = 60.0) -> list[str]:
    """The real alert stage and dispatcher on a fresh store, replayed on a fake clock, through the webhook."""
    before = len(sink.messages)  # type: ignore[attr-defined]
    replay(failures, window_s=window_s, name=name, update_s=update_s)
    return sink.texts()[before:]  # type: ignore[attr-defined]


def bot_variant(api: object, failures: list[tuple[float, str, str, str, str]]) -> tuple[int, int, list[str]]:
    """Incidents through a bot-token connection: (chat.postMessage calls, chat.update calls, the channel's messages
    as they read at the end)."""
    from tasklens.dispatch import ChannelConfig

    os.environ["AIRFLOW_CONN_TASKLENS_SLACK_BOT"] = api.conn_json()  # type: ignore[attr-defined]
    bot = ChannelConfig(type="slack", options={"conn_id": "tasklens_slack_bot", "channel": "#alerts"})
    before = len(api.requests)  # type: ignore[attr-defined]
    replay(failures, window_s=900, name="incidents-bot", update_s=60.0,
           channel_config=lambda channel: bot if channel == "slack" else None)
    methods = [path.rsplit("/", 1)[-1] for path, *_ in api.requests[before:]]  # type: ignore[attr-defined]
    final = [json.dumps(m, ensure_ascii=False) for m in api.messages.values()]  # type: ignore[attr-defined]
    return methods.count("chat.postMessage"), methods.count("chat.update"), final


def replay(failures: list[tuple[float, str, str, str, str]], *, window_s: float, name: str, update_s: float,
           channel_config: Callable[[str], Any] | None = None) -> None:
    """The real alert stage and dispatcher on a fresh store, replayed on a fake clock."""
    from tasklens import config, pipeline
    from tasklens.dispatch import Dispatcher, DispatcherSettings, channel_config_from_ruleset
    from tasklens.events import TaskEvent
    from tasklens.store import get_store, reset_stores

    os.environ["AIRFLOW__TASKLENS__STORE_URL"] = f"sqlite:///{HOME / f'{name}.db'}"
    os.environ["AIRFLOW__TASKLENS__INCIDENT_WINDOW_S"] = str(window_s)
    os.environ["AIRFLOW__TASKLENS__INCIDENT_UPDATE_INTERVAL_S"] = str(update_s)
    config.reset()
    reset_stores()
    clock = Clock()
    store = get_store(migrate=True)
    store.clock = clock
    dispatcher = Dispatcher(store, settings=DispatcherSettings(backoff_jitter_s=0.0), clock=clock,
                            sleep=clock.advance, base_url="http://airflow.example",
                            channel_config=channel_config or channel_config_from_ruleset)
    for at, dag, task, exc, msg in failures:
        while clock.now < START + timedelta(seconds=at):  # the api-server's dispatcher runs every second
            dispatcher.run_once()
            clock.advance(1.0)
        clock.now = START + timedelta(seconds=at)
        event = TaskEvent(event="failed", dag_id=dag, task_id=task, run_id="scheduled__2026-11-27T02:00:00+00:00",
                          ts=clock.now.isoformat(), end_date=clock.now.isoformat(), exception_type=exc,
                          exception_message=msg, source="callback")
        pipeline._raise_alerts(pipeline._classified(event))
    clock.advance(600)
    dispatcher.drain()
    for _, dag, task, _, _ in failures:  # the reruns succeed: the api-server settles them
        pipeline.record_settled_success(TaskEvent(
            event="success", dag_id=dag, task_id=task, run_id="scheduled__2026-11-27T02:00:00+00:00",
            ts=clock.now.isoformat(), end_date=clock.now.isoformat(), duration_s=1.0, try_number=2), ())
    clock.advance(5)
    dispatcher.drain()
    reset_stores()


CAUSES = [
    ("OperationalError", lambda r: PG_DOWN.format(ip=f"10.0.{r.randint(0, 9)}.{r.randint(1, 254)}")),
    ("OperationalError", lambda r: f'FATAL:  password authentication failed for user "etl_{r.randint(1, 9)}"'),
    ("KeyError", lambda r: "'customer_id'"),
    ("KeyError", lambda r: "'order_id'"),
    ("HTTPError", lambda r: f"503 Server Error: Service Unavailable for url: https://api.vendor.com/v1/orders?"
                            f"page={r.randint(1, 99)}"),
    ("FileNotFoundError", lambda r: f"[Errno 2] No such file or directory: '/data/raw/2026-11-{r.randint(10, 28)}/"
                                    f"part-{r.randint(0, 999):04d}.parquet'"),
    ("AirflowTaskTimeout", lambda r: f"Timeout, PID: {r.randint(1000, 99999)}"),
    ("ValidationError", lambda r: f"{r.randint(2, 40)} validation errors for Order"),
    ("S3UploadFailedError", lambda r: f"Failed to upload /tmp/{r.getrandbits(40):x}.csv to bucket-{r.randint(1, 3)}"
                                      f"/exports/{r.getrandbits(32):08x}: An error occurred (SlowDown)"),
    ("ZeroDivisionError", lambda r: "division by zero"),
]


def grouping(failures_per_cause: int = 24, seed: int = 7) -> tuple[float, float, int, int]:
    """Pairwise precision and recall of the store's correlation on a labelled replay; also incidents and failures."""
    from tasklens import config, incident_store, rules
    from tasklens.events import TaskEvent
    from tasklens.failures import classify
    from tasklens.store import Store

    rng = random.Random(seed)
    config.reset()
    ruleset = config.ruleset()
    store = Store(f"sqlite:///{HOME / 'grouping.db'}")
    rows = []
    for cause, (exc, message) in enumerate(CAUSES):
        burst = rng.uniform(0, 6600)  # each cause is one outage: a 10-minute burst somewhere in 2 hours
        for n in range(failures_per_cause):
            at = START + timedelta(seconds=burst + rng.uniform(0, 600))
            rows.append((at, cause, f"dag_{rng.randint(0, 29):02d}", f"task_{cause}_{n}", exc, message(rng)))
    rows.sort()
    labels: dict[int, int] = {}
    for at, cause, dag, task, exc, message in rows:
        store.clock = lambda at=at: at
        event = TaskEvent(event="failed", dag_id=dag, task_id=task, run_id="r1", exception_type=exc,
                          exception_message=message, end_date=at.isoformat())
        event = TaskEvent.from_dict({**event.to_dict(), "failure_class": classify(event, ruleset.failure_classes)})
        alerts = [a for a in rules.evaluate_event(event, ruleset) if a.kind.value == "failure"]
        (alert_id,) = store.record([(alerts[0], [])]).alert_ids
        labels[alert_id] = cause
    incident_of = {a: i.id for a, i in incident_store.correlate(store, list(labels), window_s=900,
                                                                 now=START).items()}
    store.dispose()
    same_incident = same_cause = both = 0
    for a, b in itertools.combinations(labels, 2):
        together = incident_of.get(a) is not None and incident_of.get(a) == incident_of.get(b)
        related = labels[a] == labels[b]
        same_incident += together
        same_cause += related
        both += together and related
    return both / max(1, same_incident), both / max(1, same_cause), len(set(incident_of.values())), len(rows)


def main() -> None:
    from tasklens.testing import SlackSink
    from tests.channel_servers import SlackApiServer

    failures = outage()
    roots = [f for f in failures if f[3] == "OperationalError"]
    unrelated = [f for f in failures if f[3] != "OperationalError"]
    results = {}
    with SlackSink() as sink:
        os.environ["AIRFLOW_CONN_TASKLENS_SLACK"] = sink.conn_uri()
        results["notifier"] = notifier_variant(sink, failures)
        results["digests"] = tasklens_variant(sink, failures, window_s=0, name="digests")
        results["incidents"] = tasklens_variant(sink, failures, window_s=900, name="incidents")
        results["incidents, 10-min updates"] = tasklens_variant(sink, failures, window_s=900, update_s=600,
                                                                name="incidents-600")
    with SlackApiServer() as api:
        posts, updates, final = bot_variant(api, failures)
    results["incidents, bot token"] = final
    for name, texts in results.items():
        named = _named(texts, roots)
        incident_texts = [t for t in texts if re.search(r"\d+ tasks in \d+ DAGs", t)]
        folded = _named(incident_texts, unrelated)
        print(f"# {name}: {len(texts)} messages; {len(named)}/40 root failures named; "
              f"unrelated failures folded into the incident: {len(folded)}")
    precision, recall, incidents, count = grouping()
    print(f"# grouping: {count} failures of {len(CAUSES)} causes -> {incidents} incidents; "
          f"pairwise precision {precision:.3f}, recall {recall:.3f}")
    print(f"# incidents, bot token: {posts} chat.postMessage (new messages), {updates} chat.update (the incident's "
          "later members and resolve, the unrelated alerts' resolves)")
    print(f"incident: {len(results['notifier'])} notifier messages -> {len(results['incidents'])} messages "
          f"({len(results['notifier']) / max(1, len(results['incidents'])):.1f}x fewer)")
    counts = {name: len(texts) for name, texts in results.items()} | {"incidents, bot token": posts}
    for name, count in counts.items():
        print(f"{re.sub(r'[^a-z0-9]+', '_', name)}_messages: {count}")
    print(f"incidents_bot_token_updates: {updates}")


if __name__ == "__main__":
    main()

"""The tasklens alert store on a real PostgreSQL server: concurrent writers and competing dispatchers.

Each test gets a fresh database on a throwaway server (``tests/integration/postgres.py``); writers and dispatchers
are separate OS processes (spawned, like Celery workers and api-servers are), each with its own ``Store``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue as queue_module
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa

from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.store import Store, alerts_table, deliveries_table, occurrences_table
from tests.integration.postgres import PostgresServer, postgres_server
from tests.unit.tasklens.test_dispatch import SlowChannels, real_clock_dispatcher, run_dispatchers_until_drained
from tests.unit.tasklens.test_store import make_alert, slack

pytestmark = pytest.mark.integration

__all__ = ["postgres_server"]  # the fixture, re-exported for pytest

WRITERS = 8
UNIQUE_PER_WRITER = 40
SHARED_PROBLEMS = 5  # every writer reports a different attempt of the same problem: one alert, 8 occurrences
SAME_ATTEMPT = 5  # every writer reports the very same attempt: one alert, one occurrence, 7 duplicates
PROCESS_TIMEOUT_S = 180
_database_ids = count()

DELIVERY = Delivery(
    route="default", channel="email_oncall", channel_type="email", group_key="g", repeat_interval_s=3600
)


def _alert(fingerprint: str, *, task_id: str, try_number: int, run_id: str = "run_1") -> Alert:
    return Alert(
        fingerprint=fingerprint,
        rule="task_failed",
        kind=AlertKind.FAILURE,
        severity=Severity.CRITICAL,
        title=f"{task_id} failed",
        summary="ValueError: boom",
        dag_id="pg_dag",
        task_id=task_id,
        run_id=run_id,
        try_number=try_number,
        max_tries=3,
        exception_type="ValueError",
        exception_message="boom",
    )


def _writer_alerts(writer: int) -> list[Alert]:
    """What one writer reports: its own problems interleaved with problems every writer reports."""
    own = [_alert(f"w{writer}-{i}", task_id=f"own_{writer}_{i}", try_number=1) for i in range(UNIQUE_PER_WRITER)]
    shared = [_alert(f"shared-{k}", task_id=f"shared_{k}", try_number=writer + 1) for k in range(SHARED_PROBLEMS)]
    same = [_alert(f"same-{k}", task_id=f"same_{k}", try_number=1) for k in range(SAME_ATTEMPT)]
    mixed: list[Alert] = []
    for i, alert in enumerate(own):
        mixed.append(alert)
        if i % 4 == 0 and shared:
            mixed.append(shared.pop())
        if i % 4 == 2 and same:
            mixed.append(same.pop())
    return mixed + shared + same


def _write(url: str, writer: int, barrier: Any, results: Any) -> None:
    """Child process: a fresh Store (which migrates if needed), then one transaction per alert, as the pipeline does."""
    store = Store(url)
    barrier.wait(timeout=60)
    totals: Counter[str] = Counter()
    for alert in _writer_alerts(writer):
        result = store.record([(alert, [DELIVERY])])
        totals.update(new=result.new_alerts, folded=result.folded, duplicates=result.duplicates)
    store.dispose()
    results.put((writer, dict(totals)))


def _dispatch(url: str, name: str, barrier: Any, results: Any) -> None:
    """Child process: claim small batches until the outbox is empty, marking each batch sent."""
    store = Store(url, migrate=False)
    barrier.wait(timeout=60)
    claimed: list[int] = []
    while True:
        batch = store.claim(name, limit=7, lease_s=300)
        if not batch:
            break
        ids = [d.id for d in batch]
        claimed.extend(ids)
        store.mark_sent(ids, token=batch[0].claim_token)
    store.dispose()
    results.put((name, claimed))


def _run_children(target: Any, args_per_child: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per args tuple behind a shared barrier; return what each put on the queue."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_per_child))
    results = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_per_child]
    for process in processes:
        process.start()
    collected: list[Any] = []
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    try:
        while len(collected) < len(processes):
            try:
                collected.append(results.get(timeout=1))
            except queue_module.Empty:
                # A child that crashed never reports: fail at once instead of waiting for the deadline.
                crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if crashed or time.monotonic() > deadline:
                    pytest.fail(f"child processes crashed or hung (exit codes {[p.exitcode for p in processes]})")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return collected


@pytest.fixture
def store_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for one test (the compose init script creates ``tasklens`` the same way)."""
    return postgres_server.create_database(f"tasklens_{next(_database_ids)}")


def _scalar(engine: sa.Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def test_eight_concurrent_writers_lose_and_duplicate_nothing(store_url: str) -> None:
    """Eight processes migrating and writing one fresh PostgreSQL store at once keep every alert exactly once:
    distinct problems stay distinct, a problem seen by all folds into one alert, an attempt seen by all counts once."""
    reports = dict(_run_children(_write, [(store_url, w) for w in range(WRITERS)]))

    engine = sa.create_engine(store_url)
    try:
        expected_alerts = WRITERS * UNIQUE_PER_WRITER + SHARED_PROBLEMS + SAME_ATTEMPT
        assert _scalar(engine, sa.select(sa.func.count()).select_from(alerts_table)) == expected_alerts
        with engine.connect() as conn:
            fingerprints = Counter(conn.execute(sa.select(alerts_table.c.fingerprint)).scalars())
            occurrences = dict(conn.execute(sa.select(alerts_table.c.fingerprint, alerts_table.c.occurrences)).all())
            deliveries_per_alert = Counter(conn.execute(sa.select(deliveries_table.c.alert_id)).scalars())
        assert max(fingerprints.values()) == 1
        assert all(occurrences[f"w{w}-{i}"] == 1 for w in range(WRITERS) for i in range(UNIQUE_PER_WRITER))
        assert all(occurrences[f"shared-{k}"] == WRITERS for k in range(SHARED_PROBLEMS))
        assert all(occurrences[f"same-{k}"] == 1 for k in range(SAME_ATTEMPT))
        assert _scalar(engine, sa.select(sa.func.count()).select_from(occurrences_table)) == (
            WRITERS * UNIQUE_PER_WRITER + SHARED_PROBLEMS * WRITERS + SAME_ATTEMPT
        )
        # One notification per alert: folds inside repeat_interval and duplicate reports queue nothing.
        assert len(deliveries_per_alert) == expected_alerts
        assert set(deliveries_per_alert.values()) == {1}
    finally:
        engine.dispose()

    totals = sum((Counter(r) for r in reports.values()), Counter())
    assert totals["new"] == expected_alerts
    assert totals["folded"] == SHARED_PROBLEMS * (WRITERS - 1)
    assert totals["duplicates"] == SAME_ATTEMPT * (WRITERS - 1)


def test_two_dispatchers_never_deliver_a_row_twice(store_url: str) -> None:
    """Two dispatcher processes draining one PostgreSQL outbox (FOR UPDATE SKIP LOCKED) split it with no row
    claimed by both, none left behind, and every row marked sent exactly once."""
    store = Store(store_url)
    for i in range(300):
        store.record([(_alert(f"outbox-{i}", task_id=f"t{i}", try_number=1), [DELIVERY])])
    with store.engine.connect() as conn:
        all_ids = set(conn.execute(sa.select(deliveries_table.c.id)).scalars())
    store.dispose()
    assert len(all_ids) == 300

    claims = dict(_run_children(_dispatch, [(store_url, "dispatcher-a"), (store_url, "dispatcher-b")]))

    first, second = claims["dispatcher-a"], claims["dispatcher-b"]
    assert len(first) == len(set(first)) and len(second) == len(set(second))
    assert set(first).isdisjoint(second)
    assert set(first) | set(second) == all_ids
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(deliveries_table.c.state, deliveries_table.c.attempts)).all()
    finally:
        engine.dispose()
    assert Counter(rows) == Counter({("sent", 1): 300})


def test_claim_lease_keeps_rows_from_a_second_dispatcher_until_it_expires(store_url: str) -> None:
    """On PostgreSQL a claimed row is invisible to another dispatcher while its lease runs (database clock) and
    claimable after."""
    store = Store(store_url)
    try:
        store.record([(_alert("lease", task_id="lease", try_number=1), [DELIVERY])])
        first = store.claim("dispatcher-a", lease_s=1)
        assert len(first) == 1
        assert store.claim("dispatcher-b", lease_s=60) == []
        deadline = time.monotonic() + 30
        second: list[Any] = []
        while not second and time.monotonic() < deadline:
            time.sleep(0.2)
            second = store.claim("dispatcher-b", lease_s=60)
        assert [d.id for d in second] == [first[0].id]
    finally:
        store.dispose()


def test_leases_run_on_the_database_clock_on_postgresql(store_url: str) -> None:
    """A dispatcher whose host clock is an hour behind holds its lease for lease_s of PostgreSQL's time: one with
    a correct clock cannot take its rows a moment later."""
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    old = Store(store_url, clock=lambda: two_hours_ago)
    old.record([(_alert("skew", task_id="skew", try_number=1), [DELIVERY])])  # due since two hours ago
    old.dispose()
    store = Store(store_url)
    try:
        behind = store.claim("behind", lease_s=60, now=datetime.now(timezone.utc) - timedelta(hours=1))
        assert len(behind) == 1
        assert store.claim("correct", lease_s=60, now=datetime.now(timezone.utc)) == []
    finally:
        store.dispose()


def test_a_lease_expiring_mid_pass_never_sends_a_message_twice_on_postgresql(store_url: str) -> None:
    """Lease 1 s, sends of 1.5 s, two dispatchers with their own engines on one PostgreSQL outbox: each message
    goes out exactly once."""
    stores = [Store(store_url), Store(store_url)]
    try:
        for i in range(6):
            stores[0].record([(make_alert(task_id=f"t{i}"), [slack(channel=f"c{i}", group_key=f"g{i}")])])
        channels = SlowChannels(send_s=1.5)
        dispatchers = [real_clock_dispatcher(s, channels, f"d{n}") for n, s in enumerate(stores)]
        run_dispatchers_until_drained(stores[0], dispatchers)
        assert sorted(n.channel for n in channels.sent) == [f"c{i}" for i in range(6)]
        assert sum(d.totals.lost for d in dispatchers) > 0  # one took rows over from the other mid-pass
    finally:
        for s in stores:
            s.dispose()


def test_dispatchers_escalating_at_once_escalate_each_alert_once(store_url: str) -> None:
    """Four dispatchers (threads, own engines) queue escalations of the same 100 due alerts at the same moment:
    exactly one escalation per alert (FOR UPDATE SKIP LOCKED and a conditional update)."""
    store = Store(store_url)
    escalating = dataclasses.replace(DELIVERY, escalate_after_s=60, escalation_channels=("pager",))
    for i in range(100):
        store.record([(_alert(f"esc-{i}", task_id=f"esc{i}", try_number=1), [escalating])])
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    stores = [Store(store_url, migrate=False) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    queued: list[int] = []
    errors: list[BaseException] = []

    def escalate(own: Store) -> None:
        try:
            barrier.wait(timeout=30)
            queued.extend(own.queue_escalations(now=later))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=escalate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors, errors
        per_alert = Counter(d["alert_id"] for d in store.deliveries() if d["kind"] == "escalation")
        assert len(queued) == 100 and len(per_alert) == 100 and set(per_alert.values()) == {1}
    finally:
        for s in [store, *stores]:
            s.dispose()


def test_success_resolves_only_its_task_on_postgresql(store_url: str) -> None:
    """A success's resolve candidates close its own open alert (and queue a resolve notice), nothing else."""
    store = Store(store_url)
    try:
        store.record([(_alert("a", task_id="extract", try_number=1), [DELIVERY])])
        store.record([(_alert("b", task_id="load", try_number=1), [DELIVERY])])
        resolve = dataclasses.replace(
            _alert("a", task_id="extract", try_number=2), kind=AlertKind.RESOLVE, data={"resolved_by": "recovered"}
        )
        unrelated = dataclasses.replace(resolve, fingerprint="zzz", task_id="transform", rule="task_retry")
        result = store.record([(unrelated, []), (resolve, [])])
        statuses = {row["task_id"]: row["status"] for row in store.list_alerts()}
        kinds = Counter(row["kind"] for row in store.deliveries())
    finally:
        store.dispose()
    assert result.resolved == 1
    assert statuses == {"extract": "resolved", "load": "open"}
    assert kinds == Counter({"alert": 2, "resolve": 1})


def test_send_slots_on_postgresql(store_url: str) -> None:
    """The shared rate-limit schedule works on PostgreSQL too (row lock, ON CONFLICT, timestamps round-trip)."""
    store = Store(store_url)
    try:
        now = store.clock()
        taken = [store.take_send_slot("slack", now=now, interval_s=1.0) for _ in range(2)]
        store.block_channel("slack", until=now + timedelta(seconds=30))
        later = store.take_send_slot("slack", now=now + timedelta(seconds=10), interval_s=1.0)
    finally:
        store.dispose()
    assert taken == [0.0, 1.0] and later == 20.0


def test_store_schema_on_postgresql_matches_head_revision(store_url: str) -> None:
    """Migrating a fresh PostgreSQL database lands on the head revision with the four tasklens tables."""
    from tasklens.store import HEAD_REVISION

    store = Store(store_url)
    try:
        assert store.schema_revision() == HEAD_REVISION
        tables = set(sa.inspect(store.engine).get_table_names())
    finally:
        store.dispose()
    assert {"tasklens_alerts", "tasklens_occurrences", "tasklens_deliveries", "tasklens_events",
            "tasklens_channel_slots"} <= tables

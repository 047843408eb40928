"""The alert store: recording, dedup, occurrences per attempt, resolve, outbox claims, migrations."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tasklens import incident_store, posted_messages  # noqa: F401 - their tables are part of the schema
from tasklens import store as store_module
from tasklens.alerts import Alert, AlertKind, Delivery, Severity, Status, fingerprint
from tasklens.store import HEAD_REVISION, Store


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_alert(
    *,
    dag_id: str = "etl",
    task_id: str = "load",
    run_id: str = "run1",
    try_number: int = 1,
    map_index: int = -1,
    rule: str = "task_failed",
    kind: AlertKind = AlertKind.FAILURE,
    severity: Severity = Severity.CRITICAL,
    exception_type: str | None = "ValueError",
    **extra: object,
) -> Alert:
    return Alert(
        fingerprint=fingerprint(dag_id, task_id, rule, exception_type if kind == AlertKind.FAILURE else None),
        rule=rule,
        kind=kind,
        severity=severity,
        title=f"Task failed: {dag_id}.{task_id}",
        summary="ValueError: boom",
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=try_number,
        exception_type=exception_type,
        **{"exception_message": "boom", **extra},  # type: ignore[arg-type]
    )


def resolve_of(alert: Alert) -> Alert:
    return dataclasses.replace(
        alert, kind=AlertKind.RESOLVE, fingerprint=fingerprint(alert.dag_id, alert.task_id, alert.rule),
        exception_type=None, exception_message=None, data={"resolved_by": "task_recovered"},
    )


def slack(**kwargs: object) -> Delivery:
    values: dict[str, object] = {
        "route": "default", "channel": "slack", "channel_type": "slack", "group_key": "route=default;run=run1",
    }
    values.update(kwargs)
    return Delivery(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    yield s
    s.dispose()


def test_record_commits_alert_and_one_pending_delivery_per_channel(store):
    """A new alert is stored open with one pending outbox row per routed channel."""
    result = store.record([(make_alert(), [slack(), slack(channel="email", channel_type="email")])])
    assert result.new_alerts == 1
    alert = store.get_alert(result.alert_ids[0])
    assert alert["status"] == "open" and alert["occurrences"] == 1 and alert["severity"] == "critical"
    assert [(d["channel"], d["state"], d["kind"]) for d in store.deliveries(alert["id"])] == [
        ("slack", "pending", "alert"),
        ("email", "pending", "alert"),
    ]


def test_same_fingerprint_while_open_folds_into_one_alert_without_new_message(store, clock):
    """A second attempt with the same fingerprint adds an occurrence, not an alert nor a message."""
    store.record([(make_alert(try_number=1), [slack()])])
    clock.advance(60)
    result = store.record([(make_alert(run_id="run2", try_number=1), [slack()])])
    assert result.folded == 1 and result.new_alerts == 0
    alerts = store.list_alerts()
    assert len(alerts) == 1 and alerts[0]["occurrences"] == 2 and alerts[0]["run_id"] == "run2"
    assert len(store.deliveries()) == 1


def test_repeat_interval_passed_queues_a_repeat_message(store, clock):
    """After repeat_interval an occurrence of an open alert is announced again."""
    store.record([(make_alert(), [slack(repeat_interval_s=600)])])
    clock.advance(601)
    store.record([(make_alert(run_id="run2"), [slack(repeat_interval_s=600)])])
    assert [d["kind"] for d in store.deliveries()] == ["alert", "repeat"]


def test_same_attempt_reported_by_several_sources_counts_once(store):
    """Listener, scheduler listener, the doubled dag-processor callback and the reconciler: one occurrence."""
    alert = make_alert()
    for _ in range(4):
        store.record([(alert, [slack()])])
    assert store.occurrence_count() == 1
    assert store.list_alerts()[0]["occurrences"] == 1
    assert len(store.deliveries()) == 1


def test_duplicate_attempt_with_other_fingerprint_is_not_a_new_alert(store):
    """The scheduler's string error (no exception type) for an attempt the worker reported adds nothing."""
    store.record([(make_alert(exception_type="ValueError"), [slack()])])
    result = store.record([(make_alert(exception_type=None), [slack()])])
    assert result.duplicates == 1
    assert len(store.list_alerts()) == 1


def test_custom_alerts_with_different_titles_in_one_attempt_both_count(store):
    """Two different custom alerts raised by one attempt are two occurrences."""
    base = make_alert(rule="custom", kind=AlertKind.CUSTOM, exception_type=None)
    first = dataclasses.replace(base, fingerprint="a" * 32, title="drift")
    second = dataclasses.replace(base, fingerprint="b" * 32, title="nulls")
    store.record([(first, [slack()]), (second, [slack()])])
    assert store.occurrence_count() == 2 and len(store.list_alerts()) == 2


def test_resolve_closes_open_alert_and_notifies_channels_that_got_it(store, clock):
    """A RESOLVE (no exception type in its fingerprint) closes the failure and queues a resolve notice."""
    failure = make_alert()
    store.record([(failure, [slack(), slack(channel="email", channel_type="email")])])
    clock.advance(30)
    result = store.record([(resolve_of(failure), ())])
    assert result.resolved == 1
    alert = store.list_alerts()[0]
    assert alert["status"] == "resolved" and alert["resolved_by"] == "task_recovered"
    resolves = [d for d in store.deliveries() if d["kind"] == "resolve"]
    assert sorted(d["channel"] for d in resolves) == ["email", "slack"]


def test_resolve_without_open_alert_changes_nothing(store):
    """Every success carries RESOLVE candidates; with nothing open they are dropped."""
    result = store.record([(resolve_of(make_alert()), ())])
    assert result.resolved == 0 and store.list_alerts() == [] and store.deliveries() == []


def test_failure_after_resolve_opens_a_new_alert(store):
    """A fingerprint that failed again after being resolved is a new alert (and a new message)."""
    failure = make_alert()
    store.record([(failure, [slack()])])
    store.record([(resolve_of(failure), ())])
    store.record([(make_alert(run_id="run2"), [slack()])])
    assert [a["status"] for a in store.list_alerts()] == ["open", "resolved"]


def test_muted_alert_is_stored_without_deliveries_and_unmutes_on_next_unmuted_occurrence(store):
    """Muted routes store the alert as muted; an occurrence outside the mute window notifies."""
    store.record([(make_alert(), [slack()], True)])
    assert store.list_alerts()[0]["status"] == "muted" and store.deliveries() == []
    store.record([(make_alert(run_id="run2"), [slack()], False)])
    assert store.list_alerts()[0]["status"] == "open"
    assert len(store.deliveries()) == 1


def test_acknowledged_alert_counts_occurrences_but_sends_no_repeats(store, clock):
    """Acknowledging stops repeat messages; occurrences still count."""
    result = store.record([(make_alert(), [slack(repeat_interval_s=1)])])
    assert store.acknowledge(result.alert_ids[0], by="alice")
    clock.advance(10)
    store.record([(make_alert(run_id="run2"), [slack(repeat_interval_s=1)])])
    alert = store.get_alert(result.alert_ids[0])
    assert alert["status"] == "acknowledged" and alert["occurrences"] == 2 and alert["acked_by"] == "alice"
    assert len(store.deliveries()) == 1


def test_group_wait_batches_deliveries_of_one_group_to_the_first_due_time(store, clock):
    """Alerts of one group within group_wait share the first one's due time, so they go out as one digest."""
    store.record([(make_alert(task_id="a"), [slack(group_wait_s=30)])])
    clock.advance(10)
    store.record([(make_alert(task_id="b"), [slack(group_wait_s=30)])])
    due = {d["next_attempt_at"] for d in store.deliveries()}
    assert due == {datetime(2025, 1, 1, 12, 0, 30, tzinfo=timezone.utc)}


def test_claim_returns_due_rows_once_until_the_lease_expires(store, clock):
    """A claimed delivery is invisible to other dispatchers until its lease ends."""
    store.record([(make_alert(), [slack()])])
    first = store.claim("a", lease_s=60)
    assert [c.channel for c in first] == ["slack"]
    assert store.claim("b", lease_s=60) == []
    clock.advance(61)
    assert [c.id for c in store.claim("b", lease_s=60)] == [first[0].id]


def test_claim_skips_deliveries_not_yet_due(store, clock):
    """A delivery inside its group_wait is not claimed before it is due."""
    store.record([(make_alert(), [slack(group_wait_s=30)])])
    assert store.claim("a") == []
    clock.advance(30)
    assert len(store.claim("a")) == 1


def test_sent_delivery_is_not_claimed_again(store):
    """mark_sent is final."""
    store.record([(make_alert(), [slack()])])
    claimed = store.claim("a")
    store.mark_sent([c.id for c in claimed], token=claimed[0].claim_token)
    assert store.claim("b") == []
    assert store.deliveries()[0]["state"] == "sent"


def test_failed_delivery_comes_back_at_its_next_attempt(store, clock):
    """mark_failed keeps the row and makes it due again later."""
    store.record([(make_alert(), [slack()])])
    claimed = store.claim("a")
    store.mark_failed(
        [claimed[0].id], token=claimed[0].claim_token, error="HTTP 500",
        next_attempt_at=clock.now + timedelta(seconds=5),
    )
    assert store.claim("a") == []
    clock.advance(5)
    again = store.claim("a")
    assert again[0].attempts == 1 and store.deliveries()[0]["last_error"] == "HTTP 500"


def test_dead_delivery_flags_alert_undelivered_and_queues_fallback(store):
    """Giving up never drops an alert: it is flagged with the error and goes to the fallback channel."""
    store.record([(make_alert(), [slack(fallback_channels=("email",))])])
    claimed = store.claim("a")
    queued = store.mark_dead(
        [claimed[0].id], token=claimed[0].claim_token, error="HTTP 404", fallback=[("email", "email")]
    ).queued
    alert = store.list_alerts()[0]
    assert alert["undelivered"] is True and "HTTP 404" in alert["last_error"]
    rows = store.deliveries()
    assert [(r["channel"], r["state"]) for r in rows] == [("slack", "dead"), ("email", "pending")]
    assert queued == (rows[1]["id"],)


def test_replay_requeues_dead_deliveries(store):
    """tasklens replay puts dead deliveries back in the outbox and clears the undelivered flag."""
    store.record([(make_alert(), [slack()])])
    (claimed,) = store.claim("a")
    store.mark_dead([claimed.id], token=claimed.claim_token, error="down")
    assert store.replay() == 1
    assert store.deliveries()[0]["state"] == "pending" and store.list_alerts()[0]["undelivered"] is False


def test_escalation_is_queued_once_after_escalate_after(store, clock):
    """An alert still open after escalate_after goes to the escalation channels exactly once."""
    store.record([(make_alert(), [slack(escalate_after_s=1800, escalation_channels=("email",))])])
    assert store.queue_escalations() == []
    clock.advance(1800)
    assert len(store.queue_escalations()) == 1
    assert store.queue_escalations() == []
    kinds = [(d["channel"], d["kind"]) for d in store.deliveries()]
    assert kinds == [("slack", "alert"), ("email", "escalation")]


def test_an_alert_whose_severity_rises_joins_the_new_route_at_once_and_escalates_from_then(store, clock):
    """A warning on the warning route (repeat 1h, no escalation). 20 min later an occurrence at critical matches the
    critical route too (escalate to email after 30m): its message goes out at once, and its escalation comes 30 min
    after the rise, not after the first sighting. Folding the same route again joins nothing."""
    warning_route = slack(route="warning")
    critical_route = slack(route="critical", escalate_after_s=1800, escalation_channels=("email",))
    store.record([(make_alert(severity=Severity.WARNING), [warning_route])])
    clock.advance(1200)
    result = store.record([(make_alert(severity=Severity.CRITICAL, try_number=2), [warning_route, critical_route])])
    assert [(d["route"], d["kind"]) for d in store.deliveries()] == [("warning", "alert"), ("critical", "alert")]
    assert len(result.queued_delivery_ids) == 1
    (row,) = store.list_alerts()
    assert row["severity"] == "critical"
    clock.advance(1799)
    assert store.queue_escalations() == []
    clock.advance(1)
    assert len(store.queue_escalations()) == 1
    clock.advance(600)
    store.record([(make_alert(severity=Severity.CRITICAL, try_number=3), [warning_route, critical_route])])
    assert [(d["channel"], d["kind"]) for d in store.deliveries()][2:] == [("email", "escalation")]
    assert store.queue_escalations() == []


def test_acknowledged_alert_does_not_escalate(store, clock):
    """Acknowledging an alert stops its escalation."""
    result = store.record([(make_alert(), [slack(escalate_after_s=60, escalation_channels=("email",))])])
    store.acknowledge(result.alert_ids[0], by="bob")
    clock.advance(120)
    assert store.queue_escalations() == []


def test_terminal_events_are_stored_once_and_feed_recent_durations(store):
    """Success events give the duration history, newest first; a repeated event is stored once."""
    for run, duration in (("r1", 10.0), ("r2", 20.0), ("r2", 20.0)):
        event = {"event": "success", "dag_id": "etl", "task_id": "load", "run_id": run, "try_number": 1,
                 "map_index": -1, "duration_s": duration, "ts": "2025-01-01T00:00:00+00:00"}
        store.record([], event=event)
    assert store.recent_durations("etl", "load") == (20.0, 10.0)
    assert len(store.events_for("etl", "r2", "load")) == 1


def test_long_exception_message_is_bounded(store):
    """A 1 MB exception message is stored truncated, not rejected."""
    result = store.record([(make_alert(exception_message="x" * 1_000_000), [slack()])])
    stored = store.get_alert(result.alert_ids[0])["exception_message"]
    assert len(stored) == store_module.MAX_EXCEPTION_MESSAGE and stored.endswith("…[truncated]")


LONG_DAG = "数据管道" * 62 + "日次"  # 250 characters: the longest dag_id Airflow allows, all of them \w
LONG_TASK = "任务" * 125


def assert_every_value_fits_its_column(store: Store) -> None:
    """Every stored string fits its VARCHAR(n) in characters (what PostgreSQL enforces) and is valid UTF-8."""
    with store.engine.connect() as conn:
        for table in store_module.metadata.sorted_tables:
            limits = {c.name: c.type.length for c in table.columns if isinstance(c.type, sa.String) and c.type.length}
            for row in conn.execute(sa.select(table)).mappings():
                for name, limit in limits.items():
                    value = row[name]
                    if value is not None:
                        assert len(value) <= limit, (table.name, name, len(value), limit)
                        value.encode("utf-8")


def test_long_ids_keys_and_names_fit_their_columns_and_stay_distinct(store):
    """250-character CJK ids, a 400-character run_id and over-long rule, route, channel and group key are stored
    fitted to their columns; two runs differing only past the cut stay two alerts, a later try of the same
    task folds into its alert and the task's success resolves both (the fitted keys are stable)."""
    long_runs = ["manual__" + "r" * 392 + "-a", "manual__" + "r" * 392 + "-b"]
    rule = "custom_rule_" + "ü" * 300
    delivery = slack(route="route_" + "路" * 300, channel="slack_" + "频" * 300, group_key="g" * 2000)
    alerts = [
        make_alert(dag_id=LONG_DAG, task_id=LONG_TASK, run_id=run, rule=rule, exception_type="E" * 300)
        for run in long_runs
    ]
    alerts = [dataclasses.replace(a, fingerprint=f"{a.fingerprint}-{'f' * 100}-{i}") for i, a in enumerate(alerts)]
    first = store.record([(alerts[0], [delivery])])
    second = store.record([(alerts[1], [delivery])])
    again = store.record([(dataclasses.replace(alerts[0], try_number=2), [delivery])])
    for run in long_runs:
        store.record([], event={"event": "failed", "dag_id": LONG_DAG, "task_id": LONG_TASK, "run_id": run,
                                "try_number": 1})

    assert first.new_alerts == 1 and second.new_alerts == 1 and again.folded == 1
    assert len(set(first.alert_ids + second.alert_ids)) == 2 and again.alert_ids == first.alert_ids
    assert store.occurrence_count() == 3
    assert_every_value_fits_its_column(store)
    stored = store.get_alert(first.alert_ids[0])
    assert stored["dag_id"] == LONG_DAG and stored["task_id"] == LONG_TASK
    other = store.get_alert(second.alert_ids[0])
    assert stored["run_id"].startswith("manual__rrr") and stored["run_id"] != other["run_id"]
    with store.engine.connect() as conn:
        run_ids = set(conn.execute(sa.select(store_module.events_table.c.run_id)).scalars())
    assert len(run_ids) == 2
    # A success of the task closes both (same task and rule), matched through the fitted keys.
    resolved = store.record([(resolve_of(alerts[1]), [])])
    assert resolved.resolved == 2 and sorted(resolved.alert_ids) == sorted(first.alert_ids + second.alert_ids)


def test_hostile_text_is_stored_as_valid_utf8(store):
    """Lone surrogates, undecodable bytes and NULs in ids, texts, labels and data are stored replaced (U+FFFD),
    never rejected, and read back as valid UTF-8."""
    bad = b"\xff".decode("utf-8", "surrogateescape") + "\ud800\x00"
    alert = dataclasses.replace(
        make_alert(run_id=f"run{bad}", exception_message=f"boom {bad}", labels={"owner": bad},
                   data={"traceback": f"File {bad}", bad: [bad]}, log_url=f"http://x/{bad}"),
        title=f"title {bad}",
    )
    result = store.record([(alert, [slack(group_key=f"g{bad}")])],
                          event={"event": "failed", "dag_id": "etl", "task_id": "load", "run_id": f"run{bad}",
                                 "try_number": 1, "exception_message": bad})
    stored = store.get_alert(result.alert_ids[0])
    assert stored["exception_message"] == "boom \ufffd\ufffd" and stored["title"] == "title \ufffd\ufffd"
    assert stored["labels"] == {"owner": "\ufffd\ufffd"}
    assert stored["data"] == {"traceback": "File \ufffd\ufffd", "\ufffd\ufffd": ["\ufffd\ufffd"]}
    assert stored["run_id"].startswith("run\ufffd\ufffd~")  # cleaned, and hashed so it stays distinct
    assert_every_value_fits_its_column(store)
    (event,) = store.events_for("etl", stored["run_id"], "load")
    assert event["payload"]["exception_message"] == "\ufffd\ufffd"


def test_snapshots_carry_stored_state_and_alert_url(store):
    """Messages are rendered from the stored record (occurrences, status) with a link to the alert page."""
    result = store.record([(make_alert(), [slack()])])
    snapshot = store.snapshots(result.alert_ids, base_url="http://airflow:8080/")[result.alert_ids[0]]
    assert snapshot.status == Status.OPEN and snapshot.occurrences == 1
    assert snapshot.alert_url == f"http://airflow:8080/tasklens/alerts/{result.alert_ids[0]}"
    assert snapshot.alert.exception_type == "ValueError"


def test_outbox_stats_report_sizes_and_last_error_per_channel(store):
    """The health endpoint's numbers: pending count and the last error of each channel, no alert content."""
    store.record([(make_alert(), [slack()]), (make_alert(task_id="b"), [slack()])])
    claimed = store.claim("a", limit=1)
    store.mark_failed(
        [claimed[0].id], token=claimed[0].claim_token, error="HTTP 500",
        next_attempt_at=store.clock() + timedelta(seconds=9),
    )
    stats = store.outbox_stats()
    assert stats["pending"] == 2 and stats["by_state"]["failed"] == 1
    assert stats["last_error_by_channel"]["slack"]["error"] == "HTTP 500"


def test_migrations_are_idempotent_and_match_the_models(tmp_path):
    """Opening the store twice migrates once; the migrated schema equals the SQLAlchemy models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'm.db'}"
    first = Store(url)
    second = Store(url)
    assert first.schema_revision() == second.schema_revision() == HEAD_REVISION
    with second.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": store_module.VERSION_TABLE}
        )
        diff = compare_metadata(context, store_module.metadata)
    assert diff == []
    first.dispose()
    second.dispose()


def test_head_revision_constant_matches_the_migration_scripts():
    """store.HEAD_REVISION (the cheap schema check) is the newest Alembic revision."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(store_module.MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_store_is_its_own_database_with_prefixed_tables(store):
    """Every table lives in tasklens's own database and is prefixed, so it can share a PostgreSQL schema."""
    names = set(sa.inspect(store.engine).get_table_names())
    assert names == {
        "tasklens_alembic_version", "tasklens_alerts", "tasklens_deliveries", "tasklens_events",
        "tasklens_occurrences", "tasklens_meta", "tasklens_channel_slots", "tasklens_leases",
        "tasklens_incidents", "tasklens_incident_members", "tasklens_posted_messages",
    }


def test_sqlite_store_uses_wal_and_busy_timeout(store):
    """Concurrent writers wait for the lock (busy_timeout, the store's time budget) and readers do not block
    writers (WAL)."""
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000


def test_every_schema_identifier_fits_postgresql_63_characters(tmp_path):
    """Constraint and index names stay within PostgreSQL's identifier limit (it rejects longer ones)."""
    store = Store(f"sqlite:///{tmp_path / 'n.db'}")
    inspector = sa.inspect(store.engine)
    names = []
    for table in inspector.get_table_names():
        names.append(table)
        names += [i["name"] for i in inspector.get_indexes(table)]
        names += [u["name"] for u in inspector.get_unique_constraints(table)]
        names += [f["name"] for f in inspector.get_foreign_keys(table)]
    assert names and all(name and len(name) <= 63 for name in names), [n for n in names if not n or len(n) > 63]
    store.dispose()


def _failure_event(event: str, *, try_number: int = 1, ts: str = "2025-01-01T00:00:00+00:00") -> dict:
    return {"event": event, "dag_id": "etl", "task_id": "load", "run_id": "run1", "try_number": try_number,
            "map_index": -1, "ts": ts}


def test_one_failure_outcome_per_attempt_whatever_reports_it(store):
    """A 'killed' report after the worker's 'failed' for the same attempt raises no second alert (and vice versa)."""
    failed = make_alert()
    killed = make_alert(rule="task_killed", kind=AlertKind.KILLED, exception_type=None)
    first = store.record([(failed, [slack()])], event=_failure_event("failed"))
    second = store.record([(killed, [slack()])], event=_failure_event("killed"))
    assert first.new_alerts == 1 and second.new_alerts == 0 and second.duplicates == 1
    assert len(store.list_alerts()) == 1 and store.occurrence_count() == 1
    next_try = store.record([(killed, [slack()])], event=_failure_event("killed", try_number=2))
    assert next_try.duplicates == 0, "another attempt of the same task is a new report"


def test_reported_failure_attempts_lists_stored_failures_since(store):
    """The reconciler's view: attempts with a stored failure outcome, successes excluded."""
    store.record([], event=_failure_event("up_for_retry", ts="2025-01-01T00:00:00+00:00"))
    store.record([], event={**_failure_event("success", try_number=2), "ts": "2025-01-01T00:01:00+00:00"})
    since = datetime(2024, 12, 31, tzinfo=timezone.utc)
    assert store.reported_failure_attempts(since) == {("etl", "load", "run1", -1, 1)}
    assert store.reported_failure_attempts(datetime(2025, 1, 2, tzinfo=timezone.utc)) == set()


def test_store_remembers_when_it_started_watching(tmp_path):
    """The reconciler's floor: the store's creation time, recorded by the migration and kept across opens."""
    before = datetime.now(timezone.utc)
    created = Store(f"sqlite:///{tmp_path / 'new.db'}")
    after = datetime.now(timezone.utc)
    since = created.watching_since()
    assert since is not None and before <= since <= after
    created.dispose()
    assert Store(f"sqlite:///{tmp_path / 'new.db'}").watching_since() == since


def test_prune_drops_old_resolved_alerts_and_keeps_what_still_matters(store, clock):
    """Retention: old resolved alerts go with their occurrences and deliveries; open alerts, recent ones and a
    resolved alert whose resolve notice is still unsent stay."""

    def resolved(task_id: str, *, notice_sent: bool) -> None:
        alert = make_alert(task_id=task_id)
        sent = store.record([(alert, [slack()])]).queued_delivery_ids
        notice = store.record([(resolve_of(alert), ())]).queued_delivery_ids  # to the channel that got the alert
        claimed = store.claim("a", ids=sent + (notice if notice_sent else []))
        store.mark_sent([c.id for c in claimed], token=claimed[0].claim_token)

    resolved("old_done", notice_sent=True)
    resolved("old_notice_unsent", notice_sent=False)
    store.record([(make_alert(task_id="old_open"), [slack()])])
    store.record([], event=_failure_event("failed"))
    clock.advance(31 * 86400)
    resolved("recent_done", notice_sent=True)
    occurrences_before = store.occurrence_count()

    removed = store.prune(older_than=timedelta(days=30))

    assert {a["task_id"] for a in store.list_alerts()} == {"old_notice_unsent", "old_open", "recent_done"}
    assert store.occurrence_count() == occurrences_before - 1
    assert not any(d["alert_id"] not in {a["id"] for a in store.list_alerts()} for d in store.deliveries())
    assert store.events_for("etl", "run1", "load") == []  # the 31-day-old event
    # the event; old_done's occurrence, alert and its two sent messages; old_notice_unsent's sent alert message
    assert removed == 1 + (1 + 1 + 2) + 1
    store.optimize()  # refreshes SQLite's planner statistics; must not disturb the data
    assert len(store.list_alerts()) == 3


def test_send_slots_space_one_channel_and_never_move_a_block_earlier(store, clock):
    """take_send_slot hands out one slot per interval per channel; block_channel only pushes the slot later."""
    now = clock.now
    assert store.take_send_slot("slack", now=now, interval_s=1.0) == 0.0
    assert store.take_send_slot("slack", now=now, interval_s=1.0) == 1.0  # taken: wait a second
    assert store.take_send_slot("email", now=now, interval_s=1.0) == 0.0  # channels are independent
    store.block_channel("slack", until=now + timedelta(seconds=30))
    store.block_channel("slack", until=now + timedelta(seconds=5))  # an earlier Retry-After does not shorten it
    assert store.take_send_slot("slack", now=now + timedelta(seconds=2), interval_s=1.0) == 28.0
    assert store.take_send_slot("slack", now=now + timedelta(seconds=30), interval_s=1.0) == 0.0


def test_marks_write_only_rows_their_claim_still_owns(store, clock):
    """A dispatcher whose lease ran out and whose rows another one claimed cannot mark or release them: every mark
    reports them as lost and leaves them to the new owner."""
    store.record([(make_alert(), [slack(fallback_channels=("email",))])])
    (stale,) = store.claim("a", lease_s=60)
    clock.advance(61)
    (fresh,) = store.claim("b", lease_s=60)
    assert stale.id == fresh.id and stale.claim_token != fresh.claim_token
    assert store.renew([stale.id], token=stale.claim_token, lease_s=60) == []
    for mark in (
        lambda: store.mark_sent([stale.id], token=stale.claim_token),
        lambda: store.mark_failed([stale.id], token=stale.claim_token, error="x", next_attempt_at=clock.now),
        lambda: store.mark_dead([stale.id], token=stale.claim_token, error="x", fallback=[("email", "email")]),
        lambda: store.mark_cancelled([stale.id], token=stale.claim_token, reason="x"),
        lambda: store.release([stale.id], token=stale.claim_token, next_attempt_at=clock.now),
    ):
        assert mark().lost == (stale.id,)
    (row,) = store.deliveries()
    assert (row["state"], row["attempts"], row["claimed_by"]) == ("pending", 0, fresh.claim_token)
    assert store.mark_sent([fresh.id], token=fresh.claim_token).marked == (fresh.id,)
    assert store.deliveries()[0]["state"] == "sent"


def test_leases_run_on_the_database_clock_not_the_dispatchers(tmp_path):
    """A dispatcher whose host clock is an hour behind still holds its lease for lease_s of database time: a
    dispatcher with a correct clock cannot take its rows a moment later."""
    url = f"sqlite:///{tmp_path / 'clock.db'}"
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    Store(url, clock=lambda: two_hours_ago).record([(make_alert(), [slack()])])  # due since two hours ago
    store = Store(url)  # the real clock: leases on the database's
    try:
        behind = store.claim("behind", lease_s=60, now=datetime.now(timezone.utc) - timedelta(hours=1))
        assert len(behind) == 1
        assert store.claim("correct", lease_s=60, now=datetime.now(timezone.utc)) == []
        assert store.deliveries()[0]["claimed_by"] == behind[0].claim_token
    finally:
        store.dispose()


def test_prune_keeps_what_an_open_alert_still_needs(store, clock):
    """Retention never takes an old open alert's sent message, occurrences or the events of its task instance,
    so its resolve notice still goes to the channel that got it."""
    failure = make_alert()
    sent = store.record([(failure, [slack()])], event=_failure_event("failed")).queued_delivery_ids
    claimed = store.claim("a", ids=sent)
    store.mark_sent(sent, token=claimed[0].claim_token)
    clock.advance(40 * 86400)
    store.prune(older_than=timedelta(days=30))
    assert [d["state"] for d in store.deliveries()] == ["sent"]
    assert store.occurrence_count() == 1 and len(store.events_for("etl", "run1", "load")) == 1
    store.record([(resolve_of(failure), ())])
    assert [(d["channel"], d["kind"]) for d in store.deliveries()] == [("slack", "alert"), ("slack", "resolve")]


def test_an_escalation_channel_gets_an_alert_escalated_once(store, clock):
    """Even an alert that reads as still due (escalated_at lost) is not escalated again to a channel that already
    has its escalation (the concurrent case: tests/integration/test_store_postgres.py)."""
    store.record([(make_alert(), [slack(escalate_after_s=60, escalation_channels=("email",))])])
    clock.advance(60)
    assert len(store.queue_escalations()) == 1
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE tasklens_alerts SET escalated_at = NULL"))
    assert store.queue_escalations() == []
    assert [d["kind"] for d in store.deliveries()].count("escalation") == 1

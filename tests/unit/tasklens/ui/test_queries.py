"""Read-only queries of the tasklens UI (tasklens.ui.queries) on a real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.store import Store
from tasklens.ui import queries

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    created = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    yield created
    created.dispose()


def alert(dag_id: str = "dag_a", task_id: str = "t1", n: int = 1, **overrides: Any) -> Alert:
    values: dict[str, Any] = {
        "fingerprint": f"{dag_id}-{task_id}-{n}", "rule": "task_failed", "kind": AlertKind.FAILURE,
        "severity": Severity.CRITICAL, "title": f"{task_id} failed", "summary": "", "dag_id": dag_id,
        "task_id": task_id, "run_id": f"run_{n}", "try_number": 1, "exception_type": "ValueError",
        "exception_message": f"row {n} is bad",
    }
    values.update(overrides)
    return Alert(**values)


def record(store: Store, clock: Clock, item: Alert, at: datetime | None = None, deliveries: Any = ()) -> int:
    if at is not None:
        clock.now = at
    return store.record([(item, list(deliveries))]).alert_ids[0]


def event(store: Store, dag_id: str, name: str, ts: datetime, n: int, task_id: str = "t1") -> None:
    store.record([], event={"event": name, "dag_id": dag_id, "task_id": task_id, "run_id": f"run_{n}",
                            "try_number": 1, "ts": ts.isoformat()})


def test_list_is_newest_first_and_limited_to_readable_dags(store: Store, clock: Clock) -> None:
    """Alerts come newest last_seen first, and only those of the DAG ids the user may read."""
    first = record(store, clock, alert("dag_a", n=1), NOW)
    second = record(store, clock, alert("dag_b", n=2), NOW + timedelta(minutes=1))
    third = record(store, clock, alert("dag_a", n=3), NOW + timedelta(minutes=2))
    page = queries.list_alerts(store, queries.AlertFilter(), dag_ids=None)
    assert [a["id"] for a in page.alerts] == [third, second, first]
    page = queries.list_alerts(store, queries.AlertFilter(), dag_ids={"dag_a"})
    assert [a["id"] for a in page.alerts] == [third, first] and page.total == 2
    assert queries.list_alerts(store, queries.AlertFilter(), dag_ids=set()).alerts == []


def test_filters_combine(store: Store, clock: Clock) -> None:
    """status, severity, dag_id, task_id and the last_seen window narrow the list together."""
    a = record(store, clock, alert("dag_a", "t1", 1), NOW)
    b = record(store, clock, alert("dag_a", "t2", 2, severity=Severity.WARNING), NOW + timedelta(hours=1))
    c = record(store, clock, alert("dag_b", "t1", 3), NOW + timedelta(hours=2))
    store.acknowledge(a, by="me")

    def ids(**kwargs: Any) -> list[int]:
        return [r["id"] for r in queries.list_alerts(store, queries.AlertFilter(**kwargs), dag_ids=None).alerts]

    assert ids(status=("acknowledged",)) == [a]
    assert ids(status=("open",), severity=("critical",)) == [c]
    assert ids(dag_id="dag_a", task_id="t2") == [b]
    assert ids(since=NOW + timedelta(minutes=30), until=NOW + timedelta(hours=2)) == [b]


def test_text_search_is_case_insensitive_and_literal(store: Store, clock: Clock) -> None:
    """The text search matches title, exception, DAG, task and rule case-insensitively; % and _ are literal."""
    hit = record(store, clock, alert(n=1, exception_message="Disk 100% FULL on worker_3"))
    record(store, clock, alert(n=2, exception_message="Disk 1000 full on workerX3"))

    def ids(text: str) -> list[int]:
        return [r["id"] for r in queries.list_alerts(store, queries.AlertFilter(text=text), dag_ids=None).alerts]

    assert ids("100% full") == [hit]
    assert ids("worker_3") == [hit]
    assert len(ids("DISK")) == 2


def test_total_is_capped(store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting stops at COUNT_CAP and says so, so a huge store does not slow every page."""
    monkeypatch.setattr(queries, "COUNT_CAP", 3)
    for n in range(5):
        record(store, clock, alert(n=n))
    page = queries.list_alerts(store, queries.AlertFilter(), dag_ids=None, limit=2, offset=2)
    assert (page.total, page.total_capped, len(page.alerts)) == (3, True, 2)


def test_failures_per_hour_is_zero_filled_and_counts_failed_attempts_only(store: Store) -> None:
    """The series has one UTC-hour bucket per hour (oldest first) counting failed, up_for_retry and killed events
    of readable DAGs within the window."""
    event(store, "dag_a", "failed", NOW - timedelta(minutes=10), 1)
    event(store, "dag_a", "up_for_retry", NOW - timedelta(minutes=20), 2)
    event(store, "dag_a", "killed", NOW - timedelta(hours=2), 3)
    event(store, "dag_a", "success", NOW - timedelta(minutes=5), 4)
    event(store, "dag_b", "failed", NOW - timedelta(minutes=5), 5)
    event(store, "dag_a", "failed", NOW - timedelta(hours=30), 6)  # outside a 24 h window
    series = queries.failures_per_hour(store, dag_ids={"dag_a"}, hours=24, now=NOW)
    assert len(series) == 24
    assert series[-1] == {"hour": "2026-03-10T12:00:00+00:00", "failures": 2}
    assert series[-3]["failures"] == 1
    assert sum(p["failures"] for p in series) == 3
    assert sum(p["failures"] for p in queries.failures_per_hour(store, dag_ids=None, hours=24, now=NOW)) == 4
    assert sum(p["failures"] for p in queries.failures_per_hour(store, dag_ids=set(), hours=24, now=NOW)) == 0


def test_summary_counts_by_status_severity_and_dag(store: Store, clock: Clock) -> None:
    """Summary counts every status and severity, unresolved severities, and ranks DAGs by unresolved alerts."""
    a = record(store, clock, alert("dag_a", n=1))
    record(store, clock, alert("dag_a", n=2, severity=Severity.WARNING))
    c = record(store, clock, alert("dag_b", n=3))
    store.resolve(a, by="me")
    store.resolve(c, by="me")
    result = queries.summary(store, dag_ids=None, hours=2, now=NOW)
    assert result["by_status"] == {"open": 1, "resolved": 2} and result["total"] == 3
    assert result["by_severity"] == {"critical": 2, "warning": 1}
    assert result["unresolved_by_severity"] == {"warning": 1}
    assert result["by_dag"] == [{"dag_id": "dag_a", "alerts": 2, "unresolved": 1},
                                {"dag_id": "dag_b", "alerts": 1, "unresolved": 0}]
    assert queries.summary(store, dag_ids={"dag_b"}, hours=2, now=NOW)["total"] == 1


def test_alert_detail_has_occurrences_and_deliveries(store: Store, clock: Clock) -> None:
    """An alert's detail lists its occurrences (newest first) and its outbox rows."""
    slack = Delivery(route="default", channel="slack", channel_type="slack", group_key="g")
    alert_id = record(store, clock, alert(n=1), deliveries=[slack])
    record(store, clock, alert(n=1, try_number=2, run_id="run_1"), NOW + timedelta(minutes=1))
    detail = queries.alert_detail(store, alert_id)
    assert detail is not None
    assert [o["try_number"] for o in detail["occurrence_list"]] == [2, 1]
    assert [(d["channel"], d["state"]) for d in detail["deliveries"]] == [("slack", "pending")]
    assert detail["routes"] == [{"route": "default", "channel": "slack", "channel_type": "slack"}]
    assert queries.alert_detail(store, 999) is None


def test_task_instance_view_shows_only_that_task_instance(store: Store, clock: Clock) -> None:
    """The tab shows the events and the alerts raised by one (dag, run, task, map index), not its neighbours."""
    mine = record(store, clock, alert("dag_a", "t1", 1, run_id="run_x", map_index=2))
    record(store, clock, alert("dag_a", "t1", 2, run_id="run_x", map_index=3))
    record(store, clock, alert("dag_a", "t1", 3, run_id="run_y", map_index=2))
    store.record([], event={"event": "failed", "dag_id": "dag_a", "task_id": "t1", "run_id": "run_x",
                            "map_index": 2, "try_number": 1, "ts": NOW.isoformat()})
    view = queries.task_instance_view(store, "dag_a", "run_x", "t1", 2)
    assert [a["id"] for a in view["alerts"]] == [mine]
    assert [e["event"] for e in view["events"]] == ["failed"]
    assert queries.task_instance_view(store, "dag_a", "run_z", "t1", -1)["alerts"] == []


@pytest.mark.parametrize(
    ("readable", "expected_dags", "form"),
    [
        ({"dag_a", "dag_b", "dag_c", "dag_other"}, {"dag_a", "dag_b", "dag_c"}, None),  # everything: no filter
        ({"dag_a", "dag_b"}, {"dag_a", "dag_b"}, "NOT IN"),  # one hidden DAG: exclude it
        ({"dag_a"}, {"dag_a"}, "IN"),  # one visible DAG: include it
        ({"dag_other"}, set(), "false"),  # nothing readable is in the store
    ],
)
def test_permission_filter_takes_the_cheapest_exact_form(
    store: Store, clock: Clock, readable: set[str], expected_dags: set[str], form: str | None
) -> None:
    """The per-DAG filter is dropped, inverted or kept depending on the DAGs present, and stays exact."""
    for n, dag_id in enumerate(("dag_a", "dag_b", "dag_c")):
        record(store, clock, alert(dag_id, n=n))
        event(store, dag_id, "failed", NOW - timedelta(minutes=5), n)
    page = queries.list_alerts(store, queries.AlertFilter(), dag_ids=readable)
    assert {a["dag_id"] for a in page.alerts} == expected_dags and page.total == len(expected_dags)
    summary = queries.summary(store, dag_ids=readable, hours=1, now=NOW)
    assert summary["total"] == len(expected_dags)
    assert {row["dag_id"] for row in summary["by_dag"]} == expected_dags
    assert sum(p["failures"] for p in summary["failures_per_hour"]) == len(expected_dags)
    with store.engine.connect() as conn:
        condition = queries._dag_condition(conn, queries.alerts_table.c.dag_id, readable)
    if form is None:
        assert condition is None
    else:
        sql = str(condition.compile(compile_kwargs={"literal_binds": True})).upper()
        assert ("NOT IN" in sql) == (form == "NOT IN") and (form != "false" or sql in {"0", "FALSE", "1 != 1"})

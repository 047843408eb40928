"""Incidents: error signatures and dependencies, correlation across DAGs in the store, and the dispatcher's one
message per incident (updates, resolve, thousands of members) through the real renderers."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tasklens import incident_store, messages
from tasklens.alerts import Alert, AlertKind, Notification, Severity, fingerprint
from tasklens.incidents import error_signature, external_dependency
from tasklens.store import Store
from tests.unit.tasklens.test_dispatch import FakeChannels, make_dispatcher
from tests.unit.tasklens.test_messages import snapshot
from tests.unit.tasklens.test_store import FakeClock, slack

PG_DOWN = ('could not connect to server: Connection refused\n\tIs the server running on host "wh.internal" ({ip}) '
           "and accepting\n\tTCP/IP connections on port {port}?")


def failure(dag_id: str, task_id: str, exception_type: str, message: str, failure_class: str,
            run_id: str = "run1") -> Alert:
    return Alert(
        fingerprint=fingerprint(dag_id, task_id, "task_failed", exception_type), rule="task_failed",
        kind=AlertKind.FAILURE, severity=Severity.CRITICAL, title=f"Task failed: {dag_id}.{task_id}",
        summary=f"{exception_type}: {message.splitlines()[0]}", dag_id=dag_id, task_id=task_id, run_id=run_id,
        try_number=1, exception_type=exception_type, exception_message=message,
        labels={"failure_class": failure_class},
    )


def db_down(dag_id: str, task_id: str, ip: str = "10.0.0.5", port: int = 5432, run_id: str = "run1") -> Alert:
    return failure(dag_id, task_id, "OperationalError", PG_DOWN.format(ip=ip, port=port), "dependency", run_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'tasklens.db'}", clock=clock)
    yield s
    s.dispose()


def record(store: Store, *alerts: Alert) -> list[int]:
    ids = []
    for alert in alerts:
        ids += store.record([(alert, [slack(group_key=f"route=default;dag={alert.dag_id}")])]).alert_ids
    return ids


# --------------------------------------------------------------------------- signature and dependency


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (PG_DOWN.format(ip="10.0.0.5", port=5432), PG_DOWN.format(ip="10.1.2.3", port=6543)),
        ("No such file: /data/2026-11-27/part-0001.parquet", "No such file: /lake/raw/2026-11-28/part-0042.parquet"),
        ("job 3f9a2b7c1d failed at 2026-11-27T02:03:04Z after 17 tries",
         "job 0a1b2c3d4e5f failed at 2026-11-28 14:00:00 after 3 tries"),
        ("GET https://api.example.com/v1/orders?id=17 answered 503", "GET https://api.example.com/v2/x answered 502"),
        ("request 123e4567-e89b-12d3-a456-426614174000 timed out", "request 00000000-0000-4000-8000-000000000000 "
                                                                   "timed out"),
    ],
)
def test_the_signature_masks_numbers_ids_paths_hosts_and_timestamps(first, second):
    """Two messages of one cause that differ only in numbers, ids, paths, hosts, URLs or times: one signature."""
    assert error_signature("E", first) == error_signature("E", second)


def test_different_causes_keep_different_signatures():
    """Another exception type or another message is another signature."""
    assert error_signature("KeyError", "'customer_id'") != error_signature("KeyError", "'order_id'")
    assert error_signature("OperationalError", "x") != error_signature("InterfaceError", "x")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (PG_DOWN.format(ip="10.0.0.5", port=5432), "host:wh.internal"),
        ("The conn_id `warehouse_pg` isn't defined", "conn:warehouse_pg"),
        ("HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded", "host:api.example.com"),
        ("503 Server Error: Service Unavailable for url: https://API.example.com/v1/x", "host:api.example.com"),
        ("'customer_id'", None),
        (None, None),
    ],
)
def test_the_external_dependency_is_the_connection_or_host_the_error_names(message, expected):
    assert external_dependency(message) == expected


# --------------------------------------------------------------------------- correlation in the store


def test_failures_across_dags_sharing_a_signature_or_a_dependency_form_one_incident(store, clock):
    """Same masked error in three DAGs, or another error naming the same host: one incident; a KeyError stays out;
    past the window the same error opens a new incident."""
    first = record(store, db_down("sales", "load"), db_down("finance", "load", ip="10.0.0.6"))
    clock.advance(120)
    via_host = record(store, failure("crm", "sync", "InterfaceError", 'connection to server at "wh.internal" '
                                     "(10.0.0.5), port 5432 failed: timeout expired", "dependency"))
    unrelated = record(store, failure("ml", "train", "KeyError", "'customer_id'", "code"))
    found = incident_store.correlate(store, first + via_host + unrelated, window_s=900)
    incidents = {alert_id: incident.id for alert_id, incident in found.items()}
    assert len({incidents[i] for i in first + via_host}) == 1
    assert incidents[unrelated[0]] != incidents[first[0]]
    incident = found[first[0]]
    assert (incident.members, incident.dags, incident.dependency) == (3, 3, "host:wh.internal")
    assert incident.title == ("wh.internal unreachable (OperationalError: could not connect to server: Connection "
                              "refused)")

    clock.advance(3600)
    store.resolve(first[0], by="test")  # the same task fails again later: a new alert
    later = record(store, db_down("sales", "load", port=5433, run_id="run2"))
    again = incident_store.correlate(store, later, window_s=900)
    assert again[later[0]].id not in set(incidents.values())
    assert incident_store.correlate(store, first, window_s=900)[first[0]].id == incident.id  # stays where it was


# --------------------------------------------------------------------------- the dispatcher


def test_one_message_per_incident_then_updates_then_one_resolve(store, clock, monkeypatch):
    """Two DAGs fail from one cause and a third differently: an incident message and a separate alert. A later
    member is held for the update interval and goes out as a short update; the incident's resolve notice goes out
    once, when its last member resolves."""
    channels = FakeChannels()
    monkeypatch.setattr("tasklens.config.incident_window_s", lambda: 900.0)
    monkeypatch.setattr("tasklens.config.incident_update_interval_s", lambda: 60.0)
    dispatcher = make_dispatcher(store, clock, channels)
    record(store, db_down("sales", "load"), db_down("finance", "load"),
           failure("ml", "train", "KeyError", "'customer_id'", "code"))
    dispatcher.drain()
    incident_message, separate = sorted(channels.sent, key=lambda n: n.incident is None)
    assert incident_message.incident["members"] == 2 and incident_message.incident["dags"] == 2
    assert {i.alert.dag_id for i in incident_message.items} == {"sales", "finance"}
    assert separate.incident is None and separate.items[0].alert.dag_id == "ml"
    text = json.dumps(messages.render_slack(incident_message, base_url="http://airflow", templates_dir=None))
    assert "wh.internal unreachable" in text and "2 tasks in 2 DAGs" in text
    assert "sales.load" in text and "finance.load" in text

    clock.advance(5)
    record(store, db_down("crm", "load"))
    dispatcher.drain(max_passes=1)
    assert len(channels.sent) == 2  # held: the incident's last message is 5 s old
    clock.advance(60)
    dispatcher.drain(max_passes=1)
    update = channels.sent[-1]
    assert update.incident["is_update"] and update.incident["members"] == 3 and len(update.items) == 1
    assert "Update: wh.internal unreachable" in messages.render_email(update, base_url="http://airflow",
                                                                       templates_dir=None)[0]

    sent_before = len(channels.sent)
    members = [a for a in store.list_alerts() if a["dag_id"] != "ml"]
    for alert in members[:-1]:
        store.resolve(alert["id"], by="someone")
    clock.advance(61)
    dispatcher.drain()
    assert len(channels.sent) == sent_before  # folded: the incident still has an open member
    store.resolve(members[-1]["id"], by="someone")
    clock.advance(1)
    dispatcher.drain()
    (resolved,) = channels.sent[sent_before:]
    assert resolved.kind == "resolve" and resolved.incident["members"] == 3
    slack_text = json.dumps(messages.render_slack(resolved, base_url="http://airflow", templates_dir=None))
    assert "Resolved: wh.internal unreachable" in slack_text
    (incident,) = [i for i in incident_store.list_incidents(store) if i.members == 3]
    assert incident.status == "resolved"


def test_an_incident_of_thousands_fits_one_message_within_slack_and_email_limits(store, clock, monkeypatch):
    """1,250 members in one pass: one message listing at most digest_max_items and counting the rest."""
    channels = FakeChannels()
    monkeypatch.setattr("tasklens.config.incident_window_s", lambda: 900.0)
    batch = [(db_down(f"dag{i % 12}", f"task{i}"), [slack(group_key=f"route=default;dag=dag{i % 12}")])
             for i in range(1250)]
    store.record(batch)
    dispatcher = make_dispatcher(store, clock, channels, claim_limit=5000)  # one pass claims the whole storm
    report = dispatcher.drain()
    assert report.messages_sent == 1 and report.deliveries_sent == 1250
    (message,) = channels.sent
    payload = messages.render_slack(message, base_url="http://airflow", templates_dir=None)
    assert len(payload["blocks"]) <= messages.SLACK_LIMITS["blocks"]
    assert all(len(json.dumps(b)) < 3500 for b in payload["blocks"])
    text = json.dumps(payload)
    assert "1,250 tasks in 12 DAGs" in text and "and 1,200 more" in text
    subject, html, text_body = messages.render_email(message, base_url="http://airflow", templates_dir=None)
    assert "1,250 tasks in 12 DAGs" in subject and "and 1,200 more" in text_body and len(html) < 200_000


def test_incidents_off_sends_alerts_as_before(store, clock, monkeypatch):
    """incident_window_s = 0: no incident, the route's digests as before."""
    channels = FakeChannels()
    monkeypatch.setattr("tasklens.config.incident_window_s", lambda: 0.0)
    record(store, db_down("sales", "load"), db_down("finance", "load"))
    make_dispatcher(store, clock, channels).drain()
    assert [n.incident for n in channels.sent] == [None, None]
    assert incident_store.list_incidents(store) == []


def test_acting_on_an_incident_acts_on_its_members(store, clock):
    """Acknowledging or resolving an incident acknowledges or resolves every member alert."""
    ids = record(store, db_down("sales", "load"), db_down("finance", "load"))
    (incident_id,) = {i.id for i in incident_store.correlate(store, ids, window_s=900).values()}
    assert incident_store.acknowledge(store, incident_id, by="alice") == 2
    assert {store.get_alert(i)["acked_by"] for i in ids} == {"alice"}
    incident, members = incident_store.get_incident(store, incident_id)
    assert incident.acked_by == "alice" and len(members) == 2
    assert incident_store.resolve(store, incident_id, by="alice") == 2
    assert {store.get_alert(i)["status"] for i in ids} == {"resolved"}
    assert incident_store.get_incident(store, incident_id)[0].status == "resolved"


def test_an_incident_message_and_its_cascade_are_in_the_readers_language(store, clock, monkeypatch):
    """A French route gets the incident in French (the headline, the counts, "injoignable", the update and resolve
    wording, numbers written the French way) and a German one the cascade under a failure; the user's data (host,
    error, task names) stays as it was."""
    channels = FakeChannels()
    monkeypatch.setattr("tasklens.config.incident_window_s", lambda: 900.0)
    record(store, db_down("sales", "load"), db_down("finance", "load"))
    make_dispatcher(store, clock, channels).drain()
    (message,) = channels.sent
    french = dataclasses.replace(message, locale="fr", timezone="Europe/Paris")
    text = json.dumps(messages.render_slack(french, base_url="http://airflow", templates_dir=None), ensure_ascii=False)
    assert "wh.internal injoignable (OperationalError: could not connect to server: Connection refused)" in text
    assert "2 tâches dans 2 DAG, première à" in text and "Incident 1 (dependency) : 2 tâches en échec" in text
    assert "unreachable" not in text and "tasks in" not in text
    big = dataclasses.replace(french, incident={**french.incident, "members": 3912, "more": 3910, "is_update": True})
    subject, _, body = messages.render_email(big, base_url="http://airflow", templates_dir=None)
    assert "Mise à jour : wh.internal injoignable" in subject and "3\u202f912 tâches" in subject
    assert "nouvelles depuis le dernier message" in body and "(…et 3\u202f910 de plus dans tasklens)" in body
    resolved = dataclasses.replace(french, kind="resolve")
    assert "Résolu : wh.internal injoignable" in messages.render_email(resolved, base_url="http://airflow",
                                                                       templates_dir=None)[0]

    cascade = failure("ml", "train", "KeyError", "'customer_id'", "code")
    cascade = dataclasses.replace(cascade, data={"upstream_failed": ["publish", "report"],
                                                 "will_not_run": ["lakehouse_datamart", "lakehouse_ml"]})
    german = messages.render_slack(Notification(kind="alert", channel="slack", items=(snapshot(cascade),), locale="de"),
                                   base_url="http://airflow", templates_dir=None)
    text = json.dumps(german, ensure_ascii=False)
    assert "Nicht gelaufen (Upstream fehlgeschlagen): publish und report." in text
    assert "lakehouse_datamart und lakehouse_ml werden nicht laufen." in text

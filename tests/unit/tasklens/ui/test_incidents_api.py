"""The incidents API in-process with Airflow's real security dependencies and the fake auth manager of
tests/unit/tasklens/ui/test_app.py: per-DAG visibility, acting on an incident acts on its members, trends."""

from __future__ import annotations

from tasklens import incident_store
from tasklens.ui.auth import CSRF_HEADER
from tests.unit.tasklens.ui.test_app import auth_manager, bearer, client, seed, store  # noqa: F401 - fixtures

WAREHOUSE = "could not connect to server: Connection refused (host wh.internal)"


def _incident(store, *dag_ids, message=WAREHOUSE, run_id="run_1"):  # noqa: F811 - the fixture
    ids = [seed(store, dag_id, n=i, exception_type="OperationalError", exception_message=message, run_id=run_id,
                fingerprint=f"{dag_id}-{i}-{run_id}",
                labels={"failure_class": "dependency", "owner": "data-eng"}) for i, dag_id in enumerate(dag_ids)]
    (incident,) = {i.id for i in incident_store.correlate(store, ids, window_s=900).values()}
    return incident, ids


def test_incidents_are_listed_with_their_members_for_readers_of_their_dags(client, store):  # noqa: F811
    """A viewer sees an incident touching a readable DAG, only the members in readable DAGs, and the timeline."""
    incident_id, _ = _incident(store, "dag_a", "dag_b", "dag_secret")
    listed = client.get("/tasklens/api/incidents", headers=bearer("viewer")).json()["incidents"]
    assert [(i["id"], i["members"], i["dags"]) for i in listed] == [(incident_id, 3, 3)]
    detail = client.get(f"/tasklens/api/incidents/{incident_id}", headers=bearer("viewer")).json()
    assert {m["dag_id"] for m in detail["member_list"]} == {"dag_a", "dag_b"} and detail["hidden_members"] == 1
    assert detail["headline"].startswith("wh.internal unreachable")
    assert detail["timeline"][0]["what"] == "first failure"

    only_secret, _ = _incident(store, "dag_secret", "dag_secret", message="disk full on /data/secret")
    assert client.get(f"/tasklens/api/incidents/{only_secret}", headers=bearer("viewer")).status_code == 404
    assert client.get("/tasklens/api/incidents", headers={}).status_code in (401, 403)


def test_acting_on_an_incident_acts_on_every_member_and_needs_edit_access_to_all(client, store):  # noqa: F811
    """The admin may edit dag_a and dag_b: acknowledging acknowledges both members and records who; a viewer, or an
    incident with a member in a DAG the admin may not edit, is refused."""
    incident_id, ids = _incident(store, "dag_a", "dag_b")
    assert client.post(f"/tasklens/api/incidents/{incident_id}/ack", json={},
                       headers=bearer("viewer")).status_code == 403
    answer = client.post(f"/tasklens/api/incidents/{incident_id}/ack", json={}, headers=bearer("admin"))
    assert answer.status_code == 200 and answer.json()["acked_by"] == "admin"
    assert {store.get_alert(i)["acked_by"] for i in ids} == {"admin"}
    timeline = client.get(f"/tasklens/api/incidents/{incident_id}", headers=bearer("admin")).json()["timeline"]
    assert ("incident acknowledged", "admin") in [(e["what"], e["by"]) for e in timeline]
    assert client.post(f"/tasklens/api/incidents/{incident_id}/resolve", json={},
                       headers=bearer("admin")).json()["status"] == "resolved"
    assert {store.get_alert(i)["status"] for i in ids} == {"resolved"}

    mixed, _ = _incident(store, "dag_a", "dag_secret", message="disk full on /data/mixed", run_id="run_2")
    assert client.post(f"/tasklens/api/incidents/{mixed}/resolve", json={},
                       headers=bearer("admin")).status_code == 403
    assert client.post(f"/tasklens/api/incidents/{mixed}/resolve", json={},
                       cookies={"_token": "admin"}).status_code == 403  # cookie writes need the CSRF header
    _ = CSRF_HEADER


def test_trends_give_mtta_mttr_per_dag_and_owner_noisiest_and_classes(client, store):  # noqa: F811
    """MTTA/MTTR per DAG and owner from acknowledgements and resolutions; failures by class per day."""
    incident_id, _ = _incident(store, "dag_a", "dag_b")
    client.post(f"/tasklens/api/incidents/{incident_id}/ack", json={}, headers=bearer("admin"))
    trends = client.get("/tasklens/api/trends", headers=bearer("viewer")).json()
    assert {row["name"] for row in trends["by_dag"]} == {"dag_a", "dag_b"}
    assert all(row["alerts_acknowledged"] == 1 and row["mtta_s"] is not None for row in trends["by_dag"])
    (owner,) = trends["by_owner"]
    assert owner["name"] == "data-eng" and owner["alerts_acknowledged"] == 2
    assert [day["classes"] for day in trends["failures_by_class"]] == [{"dependency": 2}]
    assert len(trends["noisiest"]) == 2


def test_incidents_page_shows_incidents_members_charts_and_actions_by_permission(client, store):  # noqa: F811
    """The page lists the incident with its readable members, the class chart and MTTA/MTTR bars; the buttons are
    there for the admin (who may edit every member's DAG), not for the viewer."""
    incident_id, _ = _incident(store, "dag_a", "dag_b")
    admin = client.get("/tasklens/incidents", headers=bearer("admin"))
    assert admin.status_code == 200
    html = admin.text
    assert f"#{incident_id} wh.internal unreachable" in html and "2 tasks in 2 DAGs" in html
    assert 'class="bar class-dependency"' in html and "MTTR per owner" in html
    assert 'data-resource="incidents" data-action="resolve"' in html
    viewer = client.get("/tasklens/incidents", headers=bearer("viewer")).text
    assert f"#{incident_id}" in viewer and 'data-resource="incidents"' not in viewer


def test_the_alerts_and_incidents_pages_link_to_each_other(client, store):  # noqa: F811
    """Each page's nav links to the other, under the app's mount path."""
    alerts = client.get("/tasklens/alerts", headers=bearer("viewer")).text
    incidents = client.get("/tasklens/incidents", headers=bearer("viewer")).text
    assert '<nav class="small" data-testid="nav"><a href="/tasklens/incidents">Incidents</a>' in alerts
    assert '<nav class="small"><a href="/tasklens/alerts">Alerts</a>' in incidents

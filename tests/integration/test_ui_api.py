"""The tasklens JSON API inside a REAL api-server (scheduler + dag-processor + api-server, SimpleAuthManager).

Per-DAG filtering is proven with a real auth manager: :class:`DagScopedAuthManager` (below, loaded by the
api-server through ``AIRFLOW__CORE__AUTH_MANAGER``) is SimpleAuthManager with one rule added — the ``viewer`` may
not access DAGs whose id starts with ``restricted_``. The stock roles cannot restrict per DAG.
"""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

from tests.integration.stack import AirflowStack

pytestmark = pytest.mark.timeout(420)

OPEN_DAG = "ui_open_dag"
RESTRICTED_DAG = "restricted_ui_dag"
SECRET = "s3cr3t-alert-content"


class DagScopedAuthManager(SimpleAuthManager):
    """SimpleAuthManager in which the ``viewer`` may not access ``restricted_*`` DAGs (test-only)."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if details is not None and (details.id or "").startswith("restricted_") and user.username == "viewer":
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)


DAG_FILE = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

for dag_id in ({open!r}, {restricted!r}):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        EmptyOperator(task_id="extract")
    globals()[dag_id] = dag
"""


def _alert(dag_id: str, task_id: str, n: int, **overrides: Any) -> Any:
    from tasklens.alerts import Alert, AlertKind, Severity

    values: dict[str, Any] = {
        "fingerprint": f"{dag_id}-{task_id}-{n}",
        "rule": "task_failed",
        "kind": AlertKind.FAILURE,
        "severity": Severity.CRITICAL,
        "title": f"{dag_id}.{task_id} failed ({n})",
        "summary": "seeded by test_ui_api",
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": f"manual__{n}",
        "try_number": 1,
        "exception_type": "ValueError",
        "exception_message": f"bad row {n}",
    }
    values.update(overrides)
    return Alert(**values)


GOOD_RULES = "version: 1\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("ui-api-home")
    dags = tmp_path_factory.mktemp("ui-api-dags")
    (dags / "ui_dags.py").write_text(textwrap.dedent(DAG_FILE.format(open=OPEN_DAG, restricted=RESTRICTED_DAG)))
    # A valid rules file, which test_a_bad_rules_file_deployed_while_running_is_reported_once breaks for a while.
    (home / "rules.yml").write_text(GOOD_RULES)
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": f"{__name__}.DagScopedAuthManager",
        "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "0.5",
        "AIRFLOW__TASKLENS__RULES_FILE": str(home / "rules.yml"),
        "AIRFLOW__TASKLENS__CONFIG_CHECK_INTERVAL_S": "1",
    }
    with AirflowStack(home, dags, env) as running:
        running.wait_for_dag(OPEN_DAG)
        running.wait_for_dag(RESTRICTED_DAG)
        yield running


@pytest.fixture(scope="module")
def seeded(stack: AirflowStack) -> dict[str, int]:
    """Alerts written with the Store API straight into the api-server's store file."""
    from tasklens.alerts import Delivery, Severity
    from tasklens.store import Store

    store = Store(f"sqlite:///{stack.home / 'tasklens.db'}")
    slack = Delivery(route="default", channel="slack", channel_type="slack", group_key="g")
    ids: dict[str, int] = {}
    result = store.record([(_alert(OPEN_DAG, "extract", 1, title=f"extract failed {SECRET}"), [slack])])
    ids["open_critical"] = result.alert_ids[0]
    result = store.record([(_alert(OPEN_DAG, "load", 2, severity=Severity.WARNING,
                                   exception_message="Timeout talking to warehouse"), [])])
    ids["open_warning"] = result.alert_ids[0]
    result = store.record([(_alert(OPEN_DAG, "report", 3, severity=Severity.INFO), [])])
    ids["to_mute"] = result.alert_ids[0]
    result = store.record([(_alert(OPEN_DAG, "publish", 4), [])])
    ids["to_resolve"] = result.alert_ids[0]
    result = store.record([(_alert(RESTRICTED_DAG, "extract", 5, title="restricted failure"), [])])
    ids["restricted"] = result.alert_ids[0]
    store.record([], event={"event": "failed", "dag_id": OPEN_DAG, "task_id": "extract", "run_id": "manual__1",
                            "try_number": 1, "ts": datetime.now(timezone.utc).isoformat()})
    store.record([], event={"event": "failed", "dag_id": RESTRICTED_DAG, "task_id": "extract",
                            "run_id": "manual__5", "try_number": 1, "ts": datetime.now(timezone.utc).isoformat()})
    store.dispose()
    return ids


def _raw(stack: AirflowStack, method: str, path: str, *, headers: dict[str, str], body: Any = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{stack.api_url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_every_route_but_health_needs_an_airflow_user(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """Anonymous requests to the API and the pages get 401; /tasklens/health answers without a user, with the
    status only; a real Airflow token (the viewer's) gets the details."""
    alert_id = seeded["open_critical"]
    for method, path, body in (
        ("GET", "/tasklens/api/alerts", None),
        ("GET", f"/tasklens/api/alerts/{alert_id}", None),
        ("GET", "/tasklens/api/summary", None),
        ("POST", f"/tasklens/api/alerts/{alert_id}/ack", {}),
        ("GET", "/tasklens/alerts", None),
        ("GET", f"/tasklens/alerts/{alert_id}", None),
        ("GET", f"/tasklens/ti?dag_id={OPEN_DAG}&run_id=manual__1&task_id=extract", None),
    ):
        status, _ = stack.request(method, path, body, user=None)
        assert status == 401, (method, path, status)
    status, payload = stack.request("GET", "/tasklens/health", user=None)
    assert status == 200 and set(payload) == {"status"}
    status, payload = stack.request("GET", "/tasklens/health", user="viewer")
    assert status == 200 and payload["store"]["reachable"] is True and payload["config"] == {"ok": True, "errors": []}


def test_lists_only_alerts_of_dags_the_user_may_read(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """The viewer (denied restricted_* by the auth manager) never sees those alerts; the admin sees all."""
    _, as_viewer = stack.request("GET", "/tasklens/api/alerts?limit=500", user="viewer")
    _, as_admin = stack.request("GET", "/tasklens/api/alerts?limit=500", user="admin")
    viewer_dags = {a["dag_id"] for a in as_viewer["alerts"]}
    admin_dags = {a["dag_id"] for a in as_admin["alerts"]}
    assert viewer_dags == {OPEN_DAG}
    assert admin_dags == {OPEN_DAG, RESTRICTED_DAG}
    assert as_admin["total"] == as_viewer["total"] + 1
    status, _ = stack.request("GET", f"/tasklens/api/alerts/{seeded['restricted']}", user="viewer")
    assert status == 403
    status, _ = stack.request(
        "GET", f"/tasklens/ti?dag_id={RESTRICTED_DAG}&run_id=manual__5&task_id=extract", user="viewer"
    )
    assert status == 403
    _, summary = stack.request("GET", "/tasklens/api/summary", user="viewer")
    assert {row["dag_id"] for row in summary["by_dag"]} == {OPEN_DAG}
    assert sum(p["failures"] for p in summary["failures_per_hour"]) == 1
    _, summary = stack.request("GET", "/tasklens/api/summary", user="admin")
    assert sum(p["failures"] for p in summary["failures_per_hour"]) == 2


def test_filters_search_and_pagination(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """status, severity, dag_id, task_id, text search and limit/offset narrow the list; total counts all pages."""
    _, warning = stack.request("GET", "/tasklens/api/alerts?severity=warning", user="admin")
    assert [a["id"] for a in warning["alerts"]] == [seeded["open_warning"]]
    _, found = stack.request("GET", "/tasklens/api/alerts?q=WAREHOUSE", user="admin")
    assert [a["id"] for a in found["alerts"]] == [seeded["open_warning"]]
    _, by_task = stack.request("GET", f"/tasklens/api/alerts?dag_id={OPEN_DAG}&task_id=report", user="admin")
    assert [a["id"] for a in by_task["alerts"]] == [seeded["to_mute"]]
    _, page = stack.request("GET", f"/tasklens/api/alerts?dag_id={OPEN_DAG}&limit=2&offset=2", user="admin")
    assert len(page["alerts"]) == 2 and page["total"] == 4 and page["total_capped"] is False
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _, none_since = stack.request("GET", f"/tasklens/api/alerts?since={future}", user="admin")
    assert none_since["alerts"] == []
    status, _ = stack.request("GET", "/tasklens/api/alerts?status=bogus", user="admin")
    assert status == 422


def test_alert_detail_has_occurrences_deliveries_and_a_log_link(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """GET /api/alerts/{id} returns the alert with its occurrences, delivery attempts and its Airflow log path."""
    status, alert = stack.request("GET", f"/tasklens/api/alerts/{seeded['open_critical']}", user="viewer")
    assert status == 200
    assert len(alert["occurrence_list"]) == 1 and alert["occurrence_list"][0]["run_id"] == "manual__1"
    assert [d["channel"] for d in alert["deliveries"]] == ["slack"]
    assert alert["log_url"] == f"dags/{OPEN_DAG}/runs/manual__1/tasks/extract?try_number=1"
    status, _ = stack.request("GET", "/tasklens/api/alerts/999999", user="admin")
    assert status == 404


def test_viewer_cannot_act_admin_can_and_actions_are_recorded(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """ack/resolve/mute need edit access to the DAG's task instances (403 for the viewer) and record who/when."""
    alert_id = seeded["open_critical"]
    for action, body in (("ack", {}), ("resolve", {}), ("mute", {"duration_minutes": 60})):
        status, _ = stack.request("POST", f"/tasklens/api/alerts/{alert_id}/{action}", body, user="viewer")
        assert status == 403, action
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    status, acked = stack.request("POST", f"/tasklens/api/alerts/{alert_id}/ack", {}, user="admin")
    assert status == 200
    assert acked["status"] == "acknowledged" and acked["acked_by"] == "admin"
    assert datetime.fromisoformat(acked["acked_at"]) >= before
    status, _ = stack.request("POST", f"/tasklens/api/alerts/{alert_id}/ack", {}, user="admin")
    assert status == 409

    status, muted = stack.request("POST", f"/tasklens/api/alerts/{seeded['to_mute']}/mute",
                                  {"duration_minutes": 120}, user="admin")
    assert status == 200 and muted["status"] == "muted" and muted["acked_by"] == "admin"
    assert datetime.fromisoformat(muted["acked_at"]) >= before  # when it was muted
    until = datetime.fromisoformat(muted["muted_until"])
    assert timedelta(minutes=119) < until - datetime.now(timezone.utc) <= timedelta(minutes=120)
    status, _ = stack.request("POST", f"/tasklens/api/alerts/{seeded['to_mute']}/mute", {}, user="admin")
    assert status == 422  # a mute needs a duration

    status, resolved = stack.request("POST", f"/tasklens/api/alerts/{seeded['to_resolve']}/resolve", {}, user="admin")
    assert status == 200 and resolved["status"] == "resolved" and resolved["resolved_by"] == "admin"
    status, _ = stack.request("POST", f"/tasklens/api/alerts/{seeded['restricted']}/ack", {}, user="admin")
    assert status == 200


def test_cookie_authenticated_writes_need_the_tasklens_header(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """With the UI's _token cookie, a POST without X-Tasklens-Request (a forged cross-site form) is refused."""
    cookie = {"Cookie": f"_token={stack.token('admin')}", "Content-Type": "application/json"}
    path = f"/tasklens/api/alerts/{seeded['open_warning']}/ack"
    assert _raw(stack, "GET", "/tasklens/api/alerts", headers=cookie) == 200
    assert _raw(stack, "POST", path, headers=cookie, body={}) == 403
    assert _raw(stack, "POST", path, headers={**cookie, "X-Tasklens-Request": "1", "Origin": "http://evil.test"},
                body={}) == 403
    assert _raw(stack, "POST", path, headers={**cookie, "X-Tasklens-Request": "1", "Origin": stack.api_url},
                body={}) == 200


def test_pages_render_for_a_logged_in_user(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """The Alerts page, an alert page and the task-instance tab render HTML for the viewer."""
    status, html = stack.request("GET", "/tasklens/alerts?status=all", user="viewer")
    assert status == 200 and "<svg" in html and "restricted failure" not in html
    status, html = stack.request("GET", f"/tasklens/alerts/{seeded['open_warning']}", user="viewer")
    assert status == 200 and "Timeout talking to warehouse" in html
    status, html = stack.request(
        "GET", f"/tasklens/ti?dag_id={OPEN_DAG}&run_id=manual__1&task_id=extract&map_index=%7BMAP_INDEX%7D",
        user="viewer",
    )
    assert status == 200 and "bad row 1" in html


def test_health_reports_dispatcher_and_outbox_without_alert_content(
    stack: AirflowStack, seeded: dict[str, int]
) -> None:
    """Health shows store, dispatcher, outbox and per-channel errors, and no alert title or message."""
    import time

    deadline = time.monotonic() + 60
    payload: dict[str, Any] = {}
    while time.monotonic() < deadline:  # the dispatcher fails the Slack delivery (no connection configured)
        _, payload = stack.request("GET", "/tasklens/health")
        if payload["last_delivery_error_by_channel"]:
            break
        time.sleep(1)
    assert payload["dispatcher"]["enabled"] is True and payload["dispatcher"]["running"] is True
    assert payload["outbox"]["by_state"]["failed"] + payload["outbox"]["by_state"]["dead"] >= 1
    assert "slack" in payload["last_delivery_error_by_channel"]
    assert SECRET not in json.dumps(payload)


def test_openapi_schema_is_published(stack: AirflowStack) -> None:
    """FastAPI publishes the app's OpenAPI schema with the alert routes."""
    status, schema = stack.request("GET", "/tasklens/openapi.json", user=None)
    assert status == 200
    assert {"/api/alerts", "/api/alerts/{alert_id}", "/api/alerts/{alert_id}/ack", "/api/alerts/{alert_id}/mute",
            "/api/summary"} <= set(schema["paths"])


def test_the_plugin_registers_the_nav_entry_and_task_instance_tab(stack: AirflowStack) -> None:
    """Airflow's plugins API lists the Alerts nav view and the task_instance tab of tasklens."""
    payload = stack.api("GET", "/api/v2/plugins")
    plugin = next(p for p in payload["plugins"] if p["name"] == "tasklens")
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["nav"]["href"] == "/tasklens/alerts"
    assert "{DAG_ID}" in views["task_instance"]["href"] and views["task_instance"]["url_route"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/tasklens"]


def test_a_bad_rules_file_deployed_while_running_is_reported_once(stack: AirflowStack, seeded: dict[str, int]) -> None:
    """A rules file broken while the api-server runs: health turns "degraded" (status only for anonymous callers,
    the file, key and fix for a user), the Alerts page shows a banner, and the store gets exactly one alert for
    it, however many checks run; fixed, health is "ok" again."""
    import time

    from tasklens.store import Store

    rules = stack.home / "rules.yml"
    rules.write_text("routes:\n  - name: r\n    channels: [slak]\n")
    try:
        deadline = time.monotonic() + 60
        while stack.request("GET", "/tasklens/health", user=None)[1] != {"status": "degraded"}:
            assert time.monotonic() < deadline, "health never reported the bad rules file"
            time.sleep(0.5)
        _, detailed = stack.request("GET", "/tasklens/health", user="viewer")
        (error,) = detailed["config"]["errors"]
        assert (error["source"], error["key"], error["kind"]) == (str(rules), "routes[0].channels[0]", "invalid_rules")
        status, page = stack.request("GET", "/tasklens/alerts", user="viewer")
        assert status == 200 and 'data-testid="config-errors"' in page and "slak" in page
        time.sleep(3)  # several more checks (every second) must not add a second alert
        store = Store(f"sqlite:///{stack.home / 'tasklens.db'}")
        try:
            config_alerts = [a for a in store.list_alerts() if a["dag_id"] == "tasklens"]
            assert len(config_alerts) == 1 and "slak" in config_alerts[0]["title"]
            assert store.occurrence_count(config_alerts[0]["id"]) == 1
        finally:
            store.dispose()
    finally:
        rules.write_text(GOOD_RULES)
    deadline = time.monotonic() + 60
    while stack.request("GET", "/tasklens/health", user=None)[1] == {"status": "degraded"}:
        assert time.monotonic() < deadline, "health still degraded after the fix"
        time.sleep(0.5)

"""The tasklens FastAPI app in-process, with Airflow's real security dependencies and a fake auth manager.

Only the auth manager is faked (tokens map to users; the viewer may read ``dag_a`` and ``dag_b`` and edit
nothing, the admin may do everything on ``dag_a`` and ``dag_b``; ``dag_secret`` is readable by nobody but
``root``); ``GetUserDep``, ``requires_access_dag`` and the list filtering run Airflow's code. The same rules
against a real api-server and a real auth manager: tests/integration/test_ui_api.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt import InvalidTokenError

from tasklens import config, configcheck, dispatch, reconcile
from tasklens.alerts import Alert, AlertKind, Delivery, Severity
from tasklens.store import Store, get_store, reset_stores

XSS = "<script>alert('xss')</script>"
REPO = Path(__file__).resolve().parents[4]


class User(BaseUser):
    def __init__(self, name: str) -> None:
        self.name = name

    def get_id(self) -> str:
        return self.name

    def get_name(self) -> str:
        return self.name


class FakeAuthManager:
    """Tokens are user names; ``readable``/``editable`` say which DAGs each user may read/edit."""

    readable = {"viewer": {"dag_a", "dag_b"}, "admin": {"dag_a", "dag_b"}, "root": {"dag_a", "dag_b", "dag_secret"}}
    editable = {"viewer": set(), "admin": {"dag_a", "dag_b"}, "root": {"dag_a", "dag_b", "dag_secret"}}

    def __init__(self) -> None:
        self.checks: list[tuple[str, str | None, Any]] = []

    async def get_user_from_token(self, token: str) -> User:
        if token not in self.readable:
            raise InvalidTokenError("unknown token")
        return User(token)

    def _allowed(self, user: User, method: str) -> set[str]:
        return self.readable[user.name] if method == "GET" else self.editable[user.name]

    def is_authorized_dag(self, *, method: str, user: User, access_entity: Any = None, details: Any = None) -> bool:
        self.checks.append((method, details.id if details else None, access_entity))
        return details is not None and details.id in self._allowed(user, method)

    def get_authorized_dag_ids(self, *, user: User, method: str = "GET", session: Any = None) -> set[str]:
        return set(self._allowed(user, method))


@pytest.fixture
def auth_manager(monkeypatch: pytest.MonkeyPatch) -> FakeAuthManager:
    import airflow.api_fastapi.app as airflow_app
    from airflow.api_fastapi.core_api import security
    from airflow.models.dag import DagModel

    fake = FakeAuthManager()
    monkeypatch.setattr(security, "get_auth_manager", lambda: fake)
    monkeypatch.setattr(airflow_app, "get_auth_manager", lambda: fake)
    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, session=None: None))
    return fake


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("AIRFLOW__TASKLENS__STORE_URL", f"sqlite:///{tmp_path / 'tasklens.db'}")
    monkeypatch.setenv("AIRFLOW__TASKLENS__DISPATCHER_ENABLED", "false")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW__TASKLENS__RULES_FILE", raising=False)
    config.reset()
    configcheck.reset()
    reset_stores()
    yield get_store(migrate=True)  # as `tasklens db upgrade` would
    reset_stores()
    config.reset()
    configcheck.reset()


@pytest.fixture
def client(store: Store, auth_manager: FakeAuthManager) -> Iterator[TestClient]:
    from tasklens.ui.app import create_app

    main = FastAPI()
    main.mount("/tasklens", create_app())
    with TestClient(main, base_url="http://airflow.test") as test_client:
        yield test_client


def seed(store: Store, dag_id: str = "dag_a", n: int = 1, **overrides: Any) -> int:
    values: dict[str, Any] = {
        "fingerprint": f"{dag_id}-{n}", "rule": "task_failed", "kind": AlertKind.FAILURE,
        "severity": Severity.CRITICAL, "title": f"t{n} failed", "summary": "", "dag_id": dag_id,
        "task_id": f"t{n}", "run_id": "run_1", "try_number": 1, "exception_type": "ValueError",
        "exception_message": f"row {n}",
    }
    values.update(overrides)
    slack = Delivery(route="default", channel="slack", channel_type="slack", group_key="g")
    return store.record([(Alert(**values), [slack])]).alert_ids[0]


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


def test_anonymous_and_bad_tokens_are_refused(client: TestClient, store: Store) -> None:
    """No credential is 401 on every API route and page; an invalid token is Airflow's 403."""
    alert_id = seed(store)
    for method, path in (("GET", "/tasklens/api/alerts"), ("GET", f"/tasklens/api/alerts/{alert_id}"),
                         ("POST", f"/tasklens/api/alerts/{alert_id}/ack"), ("GET", "/tasklens/api/summary"),
                         ("GET", "/tasklens/alerts"), ("GET", f"/tasklens/alerts/{alert_id}"),
                         ("GET", "/tasklens/ti?dag_id=dag_a&run_id=run_1&task_id=t1")):
        assert client.request(method, path, json={}).status_code == 401, path
    assert client.get("/tasklens/api/alerts", headers=bearer("nobody")).status_code == 403


def test_list_and_summary_only_cover_readable_dags(client: TestClient, store: Store) -> None:
    """A user sees only alerts of DAGs the auth manager lets them read, in the list and the summary."""
    seed(store, "dag_a", 1)
    seed(store, "dag_secret", 2)
    assert {a["dag_id"] for a in client.get("/tasklens/api/alerts", headers=bearer("viewer")).json()["alerts"]} == {
        "dag_a"}
    assert client.get("/tasklens/api/alerts", headers=bearer("root")).json()["total"] == 2
    summary = client.get("/tasklens/api/summary?hours=24", headers=bearer("viewer")).json()
    assert summary["total"] == 1 and len(summary["failures_per_hour"]) == 24


def test_reading_one_alert_needs_read_access_to_its_dag(
    client: TestClient, store: Store, auth_manager: FakeAuthManager
) -> None:
    """GET of an alert of an unreadable DAG is 403 (asked for the DAG's task instances); unknown ids are 404."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    hidden = seed(store, "dag_secret", 1)
    visible = seed(store, "dag_a", 2)
    assert client.get(f"/tasklens/api/alerts/{hidden}", headers=bearer("viewer")).status_code == 403
    assert ("GET", "dag_secret", DagAccessEntity.TASK_INSTANCE) in auth_manager.checks
    body = client.get(f"/tasklens/api/alerts/{visible}", headers=bearer("viewer")).json()
    assert body["deliveries"][0]["channel"] == "slack" and body["occurrence_list"][0]["try_number"] == 1
    assert client.get(f"/tasklens/alerts/{hidden}", headers=bearer("viewer")).status_code == 403
    assert client.get("/tasklens/api/alerts/4242", headers=bearer("viewer")).status_code == 404


def test_actions_need_edit_access_and_record_who(client: TestClient, store: Store) -> None:
    """ack/resolve/mute are 403 without edit access; with it they change the status and record the user."""
    alert_id = seed(store)
    assert client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("viewer")).status_code == 403
    acked = client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("admin"))
    assert acked.status_code == 200
    assert (acked.json()["status"], acked.json()["acked_by"]) == ("acknowledged", "admin")
    assert acked.json()["acked_at"] is not None
    assert client.post(f"/tasklens/api/alerts/{alert_id}/ack", json={}, headers=bearer("admin")).status_code == 409
    muted = client.post(f"/tasklens/api/alerts/{alert_id}/mute", json={"duration_minutes": 30},
                        headers=bearer("admin"))
    assert muted.json()["status"] == "muted" and muted.json()["muted_until"] is not None
    resolved = client.post(f"/tasklens/api/alerts/{alert_id}/resolve", json={}, headers=bearer("admin"))
    assert (resolved.json()["status"], resolved.json()["resolved_by"]) == ("resolved", "admin")
    assert store.get_alert(alert_id)["resolved_by"] == "admin"


@pytest.mark.parametrize("body", [{}, {"duration_minutes": 0}, {"duration_minutes": 60 * 24 * 31}, None])
def test_mute_needs_a_bounded_duration(client: TestClient, store: Store, body: Any) -> None:
    """A mute without a duration, or one outside 1 minute .. 30 days, is rejected with 422."""
    alert_id = seed(store)
    response = client.post(f"/tasklens/api/alerts/{alert_id}/mute", json=body, headers=bearer("admin"))
    assert response.status_code == 422


def test_cookie_writes_need_the_custom_header_and_same_origin(client: TestClient, store: Store) -> None:
    """With the _token cookie, POSTs need X-Tasklens-Request and a same-host Origin; forms with text bodies fail."""
    alert_id = seed(store)
    client.cookies.set("_token", "admin")
    path = f"/tasklens/api/alerts/{alert_id}/ack"
    assert client.get("/tasklens/api/alerts").status_code == 200
    assert client.post(path, json={}).status_code == 403
    assert client.post(path, json={}, headers={"X-Tasklens-Request": "1", "Origin": "https://evil.test"}
                       ).status_code == 403
    form_like = client.post(path, content=b"{}", headers={"X-Tasklens-Request": "1", "Content-Type": "text/plain"})
    assert form_like.status_code == 422
    ok = client.post(path, json={}, headers={"X-Tasklens-Request": "1", "Origin": "http://airflow.test"})
    assert ok.status_code == 200 and ok.json()["acked_by"] == "admin"


def test_exception_text_and_labels_are_escaped_on_every_page(client: TestClient, store: Store) -> None:
    """A <script> in title, exception, labels or event payload renders as text, and the CSP forbids inline script."""
    alert_id = seed(store, title=f"boom {XSS}", exception_message=XSS, labels={"team": XSS})
    store.record([], event={"event": "failed", "dag_id": "dag_a", "task_id": "t1", "run_id": "run_1",
                            "try_number": 1, "exception_message": XSS})
    pages = [
        client.get("/tasklens/alerts?status=all", headers=bearer("admin")),
        client.get(f"/tasklens/alerts/{alert_id}", headers=bearer("admin")),
        client.get("/tasklens/ti?dag_id=dag_a&run_id=run_1&task_id=t1&map_index={MAP_INDEX}", headers=bearer("admin")),
    ]
    for page in pages:
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'self'" in page.headers["content-security-policy"]


def test_alerts_page_shows_counts_chart_links_and_actions_by_permission(client: TestClient, store: Store) -> None:
    """The page has the counts, the SVG chart, a link to the Airflow task log, and action buttons only for editors."""
    seed(store, "dag_a", 1, map_index=3, try_number=2, run_id="manual__2026-01-01T00:00:00+00:00")
    store.record([], event={"event": "failed", "dag_id": "dag_a", "task_id": "t1", "run_id": "r", "try_number": 1})
    admin = client.get("/tasklens/alerts", headers=bearer("admin")).text
    viewer = client.get("/tasklens/alerts", headers=bearer("viewer")).text
    assert '<div class="n" data-count="open">1</div>' in admin
    assert "<rect class=\"bar\"" in admin and "1 in total" in admin
    assert 'href="/dags/dag_a/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/t1/mapped/3?try_number=2"' in admin
    assert 'data-action="ack"' in admin and 'data-action="ack"' not in viewer
    filtered = client.get("/tasklens/alerts?severity=warning", headers=bearer("admin")).text
    assert "No alerts match" in filtered


def test_task_instance_tab_needs_read_access_and_reads_map_index(client: TestClient, store: Store) -> None:
    """The tab is 403 for an unreadable DAG; an unfilled {MAP_INDEX} means an unmapped task instance."""
    seed(store, "dag_a", 1)
    seed(store, "dag_secret", 2)
    tab = client.get("/tasklens/ti?dag_id=dag_a&run_id=run_1&task_id=t1&map_index=%7BMAP_INDEX%7D",
                     headers=bearer("viewer"))
    assert tab.status_code == 200 and "t1 failed" in tab.text
    assert client.get("/tasklens/ti?dag_id=dag_secret&run_id=run_1&task_id=t2",
                      headers=bearer("viewer")).status_code == 403


def test_health_hides_alert_content_and_reports_an_unreachable_store(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Health shows an authenticated user the outbox and per-channel errors (first line only), 503 without a
    store."""
    alert_id = seed(store, title="secret title")
    claimed = store.claim("test")
    store.mark_failed([c.id for c in claimed], token=claimed[0].claim_token,
                      error="HTTP 500 from Slack\n[parameters: ('secret title',)]", next_attempt_at=store.clock())
    body = client.get("/tasklens/health", headers=bearer("viewer")).json()
    assert body["store"]["reachable"] is True and body["outbox"]["pending"] == 1
    assert body["last_delivery_error_by_channel"]["slack"]["error"] == "HTTP 500 from Slack"
    assert "secret" not in json.dumps(body) and alert_id
    monkeypatch.setattr(store, "outbox_stats", lambda: (_ for _ in ()).throw(RuntimeError("db gone secret")))
    down = client.get("/tasklens/health", headers=bearer("viewer"))
    assert down.status_code == 503
    assert down.json()["store"] == {"reachable": False, "error": "RuntimeError"}
    anonymous = client.get("/tasklens/health")
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "unhealthy"})


def test_health_shows_anonymous_callers_the_status_only(client: TestClient, store: Store) -> None:
    """Without a valid credential health is ``{"status": ...}`` and nothing else (no channel, error or path text);
    a valid Bearer token or the UI's cookie gets the details, an invalid token the status only."""
    seed(store)
    claimed = store.claim("test")
    store.mark_failed([c.id for c in claimed], token=claimed[0].claim_token, error="HTTP 500 from Slack",
                      next_attempt_at=store.clock())
    anonymous = client.get("/tasklens/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert client.get("/tasklens/health", headers=bearer("nobody")).json() == {"status": "ok"}
    for credentials in ({"headers": bearer("viewer")}, {"cookies": {"_token": "viewer"}}):
        detailed = client.get("/tasklens/health", **credentials).json()
        assert detailed["status"] == "ok" and detailed["config"] == {"ok": True, "errors": []}
        assert detailed["last_delivery_error_by_channel"]["slack"]["error"] == "HTTP 500 from Slack"


def test_health_and_alerts_page_report_a_bad_rules_file(
    client: TestClient, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rules file naming an unknown channel: health is "degraded" (status only when anonymous), the details name
    the file, the key and the fix, and the Alerts page shows them in a banner."""
    rules = tmp_path / "rules.yml"
    rules.write_text("routes:\n  - name: r\n    channels: [slak]\n")
    monkeypatch.setenv("AIRFLOW__TASKLENS__RULES_FILE", str(rules))
    config.reset()
    configcheck.reset()
    assert client.get("/tasklens/health").json() == {"status": "degraded"}
    detailed = client.get("/tasklens/health", headers=bearer("viewer")).json()
    (error,) = detailed["config"]["errors"]
    assert detailed["status"] == "degraded" and detailed["config"]["ok"] is False
    assert (error["source"], error["key"], error["kind"]) == (str(rules), "routes[0].channels[0]", "invalid_rules")
    assert "slak" in error["problem"] and error["fix"] and error["fallback"] == "the built-in rules"
    page = client.get("/tasklens/alerts", headers=bearer("viewer")).text
    assert 'data-testid="config-errors"' in page and str(rules) in page and "slak" in page
    rules.write_text("routes:\n  - name: r\n    channels: [slack]\n")
    configcheck.check(alert=False)
    assert 'data-testid="config-errors"' not in client.get("/tasklens/alerts", headers=bearer("viewer")).text


def test_lifespan_starts_and_stops_the_dispatcher(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """With dispatcher_enabled the app's lifespan starts the background dispatcher (and the killed-task
    reconciler and the configuration checker) and stops them on shutdown; routes of the lazily built app are
    installed first."""
    from tasklens.ui.app import create_app

    calls: list[str] = []
    monkeypatch.setenv("AIRFLOW__TASKLENS__DISPATCHER_ENABLED", "true")
    config.reset()
    monkeypatch.setattr(dispatch, "start_background_dispatcher", lambda **kw: calls.append("start") or True)
    monkeypatch.setattr(dispatch, "stop_background_dispatcher", lambda: calls.append("stop"))
    monkeypatch.setattr(reconcile, "start_background_reconciler", lambda: calls.append("reconciler") or None)
    monkeypatch.setattr(reconcile, "stop_background_reconciler", lambda: calls.append("reconciler stop"))
    monkeypatch.setattr(configcheck, "start_background_checker", lambda: calls.append("checker") or True)
    monkeypatch.setattr(configcheck, "stop_background_checker", lambda: calls.append("checker stop"))
    with TestClient(create_app(lazy=True)) as test_client:
        assert calls == ["checker", "start", "reconciler"]
        assert test_client.get("/openapi.json").json()["paths"].keys() >= {"/api/alerts", "/api/summary"}
    assert calls == ["checker", "start", "reconciler", "checker stop", "reconciler stop", "stop"]


def test_building_the_plugin_app_does_not_import_airflow_api_security() -> None:
    """Every Airflow process loads the plugin: fastapi_apps() must not import the api-server's modules (~2 s)."""
    code = (
        "import sys; from tasklens.ui import fastapi_apps, external_views; apps = fastapi_apps(); "
        "print(len(apps), apps[0]['url_prefix'], 'airflow.api_fastapi.core_api.security' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=REPO)
    assert out.stdout.split()[-3:] == ["1", "/tasklens", "False"]


def test_external_views_add_the_nav_page_and_task_instance_tab() -> None:
    """The plugin adds an Alerts nav entry and a task_instance tab whose href carries Airflow's placeholders."""
    from tasklens.ui import external_views

    nav, tab = external_views()
    assert (nav["destination"], nav["href"]) == ("nav", "/tasklens/alerts")
    assert tab["destination"] == "task_instance" and tab["url_route"] != nav["url_route"]
    assert all(p in tab["href"] for p in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"))


def test_hostile_text_renders_on_pages_and_in_the_json_api(client: TestClient, store: Store) -> None:
    """Lone surrogates, undecodable bytes and NULs in an alert's texts, ids, labels, traceback and event payload
    come out as U+FFFD: every page and API answer is 200 and valid UTF-8."""
    bad = b"\xff".decode("utf-8", "surrogateescape") + "\ud800\x00"
    alert_id = seed(store, title=f"boom {bad}", exception_message=f"message {bad}", labels={"team": bad},
                    data={"traceback": f'File "/dags/{bad}.py", line 3, in load\nValueError: {bad}'},
                    run_id=f"run_{bad}")
    run_id = store.get_alert(alert_id)["run_id"]
    store.record([], event={"event": "failed", "dag_id": "dag_a", "task_id": "t1", "run_id": f"run_{bad}",
                            "try_number": 1, "exception_message": bad})
    answers = [
        client.get("/tasklens/alerts?status=all", headers=bearer("admin")),
        client.get(f"/tasklens/alerts/{alert_id}", headers=bearer("admin")),
        client.get("/tasklens/ti", params={"dag_id": "dag_a", "run_id": run_id, "task_id": "t1"},
                   headers=bearer("admin")),
        client.get("/tasklens/api/alerts", headers=bearer("admin")),
        client.get(f"/tasklens/api/alerts/{alert_id}", headers=bearer("admin")),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        answer.content.decode("utf-8")  # strict
    assert "boom \ufffd\ufffd" in answers[1].text and "message \ufffd\ufffd" in answers[1].text
    assert "boom \ufffd\ufffd" in answers[2].text
    detail = answers[4].json()
    assert detail["title"] == "boom \ufffd\ufffd" and detail["labels"] == {"team": "\ufffd\ufffd"}

"""The tasklens pages inside the real Airflow UI, driven in headless Chromium (Playwright, Debian's chromium).

One Airflow stack (scheduler + dag-processor + api-server) runs a DAG whose task fails with ``<script>`` in its
exception; tasklens records it, and :mod:`tests.browser.demo` seeds a week of alerts around it. Screenshots go to
``tests/browser/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser import demo
from tests.integration.stack import USERS, AirflowStack

pytestmark = pytest.mark.timeout(600)

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    root = tmp_path_factory.mktemp("browser")
    demo.write_dags(root / "dags")
    with AirflowStack(root / "home", root / "dags", demo.stack_env()) as running:
        yield running


@pytest.fixture(scope="module")
def seeded(stack: AirflowStack) -> dict[str, Any]:
    from tasklens.store import Store

    run_id = stack.trigger(demo.FAILING_DAG)
    assert stack.wait_for_run(demo.FAILING_DAG, run_id, timeout=300) == "failed"
    for dag_id in demo.DEMO_DAGS[1:]:
        stack.wait_for_dag(dag_id)
    store = Store(f"sqlite:///{stack.home / 'tasklens.db'}")
    ids = demo.seed(store, run_id=run_id)
    store.dispose()
    return {"run_id": run_id, **ids}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _store(stack: AirflowStack) -> Any:
    from tasklens.store import Store

    return Store(f"sqlite:///{stack.home / 'tasklens.db'}")


def login(browser: Any, stack: AirflowStack, user: str, *, color_scheme: str = "light") -> Any:
    """A new page logged in through Airflow's own login page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=color_scheme)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{stack.api_url}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    return page


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions, with this module's patience (a loaded CI machine is slow)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(locator)


def open_alerts_from_nav(page: Any) -> Any:
    """Browse -> Alerts in Airflow's navigation; returns the iframe holding the tasklens page."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Alerts").click()
    frame = page.frame_locator("iframe")
    frame.locator("h1", has_text="Alerts").wait_for()
    return frame


def row(frame: Any, alert_id: int) -> Any:
    return frame.locator(f"tr[data-alert-id='{alert_id}']")


def test_alerts_page_filter_acknowledge_and_escaping(browser: Any, stack: AirflowStack,
                                                     seeded: dict[str, Any]) -> None:
    """From Airflow's nav the Alerts page lists alerts with counts and chart, filters, acknowledges an alert
    (recorded as the logged-in user), opens an alert's page, and shows a <script> exception as text without
    running it."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = login(browser, stack, "admin")
    frame = open_alerts_from_nav(page)
    assert "/plugin/tasklens" in page.url

    xss_row = row(frame, seeded["xss"])
    xss_row.wait_for()
    assert demo.XSS_MESSAGE in xss_row.locator(".exc").inner_text()
    assert frame.locator("script", has_text="alert(").count() == 0
    assert frame.locator("svg rect.bar").count() > 10
    assert int(frame.locator("[data-count='open']").inner_text()) >= 3
    page.screenshot(path=str(ARTIFACTS / "alerts-page.png"))

    frame.locator("select[name=severity]").select_option("warning")
    frame.get_by_role("button", name="Filter").click()
    expect(row(frame, seeded["warehouse"])).to_have_count(0)  # the filtered page has loaded
    row(frame, seeded["features"]).wait_for()
    severities = frame.locator("tbody tr td:first-child").all_inner_texts()
    assert severities and {s.strip().lower() for s in severities} == {"warning"}

    frame.locator("select[name=severity]").select_option("")
    frame.locator("input[name=q]").fill("connection refused")
    frame.get_by_role("button", name="Filter").click()
    target = row(frame, seeded["warehouse"])
    expect(frame.locator("tbody tr")).to_have_count(1)
    target.wait_for()

    target.get_by_role("button", name="Ack").click()
    frame.locator(f"tr[data-alert-id='{seeded['warehouse']}'] [data-testid=by]").wait_for()
    assert "acknowledged by admin" in target.inner_text()
    store = _store(stack)
    acked = store.get_alert(seeded["warehouse"])
    store.dispose()
    assert acked["status"] == "acknowledged" and acked["acked_by"] == "admin" and acked["acked_at"] is not None
    page.screenshot(path=str(ARTIFACTS / "alerts-page-acknowledged.png"))

    frame.get_by_role("link", name="Reset").click()
    row(frame, seeded["xss"]).get_by_role("link", name="Order validation rejected a batch").click()
    exception = frame.locator("[data-testid=exception]")
    exception.wait_for()
    assert demo.XSS_MESSAGE in exception.inner_text()
    assert frame.get_by_role("heading", name="Occurrences").count() == 1
    assert "slack" in frame.locator("body").inner_text()
    page.screenshot(path=str(ARTIFACTS / "alert-detail.png"))
    assert page.dialogs == []  # type: ignore[attr-defined]
    page.context.close()


def test_task_instance_tab_shows_attempts_alerts_and_deliveries(browser: Any, stack: AirflowStack,
                                                                seeded: dict[str, Any]) -> None:
    """The tasklens tab of the failed task instance shows its attempt, the alerts it raised and their
    deliveries, with the <script> exception as text."""
    page = login(browser, stack, "admin")
    run = quote(seeded["run_id"], safe="")
    page.goto(f"{stack.api_url}/dags/{demo.FAILING_DAG}/runs/{run}/tasks/validate_orders")
    page.get_by_role("link", name="tasklens", exact=True).click()
    frame = page.frame_locator("iframe")
    frame.locator("[data-testid=ti-events]").wait_for()
    assert "/plugin/tasklens-ti" in page.url
    assert row(frame, seeded["xss"]).count() == 1
    events = frame.locator("[data-testid=ti-events]").inner_text()
    assert "Failed" in events or "failed" in events
    assert demo.XSS_MESSAGE in frame.locator("body").inner_text()
    assert frame.locator("script", has_text="alert(").count() == 0
    assert frame.get_by_role("heading", name="Deliveries").count() == 1
    page.screenshot(path=str(ARTIFACTS / "task-instance-tab.png"))
    assert page.dialogs == []  # type: ignore[attr-defined]
    page.context.close()


def test_viewer_sees_alerts_without_actions_and_dark_mode_is_dark(browser: Any, stack: AirflowStack,
                                                                 seeded: dict[str, Any]) -> None:
    """A Viewer gets the page without action buttons; with a dark color scheme the page renders dark; the log link
    navigates Airflow's UI to the attempt."""
    page = login(browser, stack, "viewer", color_scheme="dark")
    frame = open_alerts_from_nav(page)
    row(frame, seeded["xss"]).wait_for()
    assert frame.get_by_role("button", name="Ack").count() == 0
    background = frame.locator("body").evaluate("el => getComputedStyle(el).backgroundColor")
    red, green, blue = (int(v) for v in background[background.index("(") + 1 : background.index(")")].split(",")[:3])
    assert red + green + blue < 150, background
    page.screenshot(path=str(ARTIFACTS / "alerts-page-dark.png"))

    row(frame, seeded["xss"]).locator("a[data-airflow]").click()  # opens in Airflow itself, not in the iframe
    page.wait_for_url(lambda url: "/tasks/validate_orders" in url and "try_number=1" in url)
    assert "/plugin/" not in page.url
    page.context.close()

"""Server-rendered pages (Jinja2, autoescape on): the Alerts page, an alert's page and the task-instance tab.

Pages load in Airflow's same-origin iframe, so the ``_token`` cookie authenticates them like the JSON API. The
Content-Security-Policy allows only this app's own script and styles: even a value that escaped escaping could not
run.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from tasklens import configcheck
from tasklens.foresight.checks import duration_outlook
from tasklens.store import get_store
from tasklens.text import format_duration
from tasklens.ui import auth, queries
from tasklens.ui.api import airflow_log_path

__all__ = ["render_error", "router"]

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
SEVERITIES = ("critical", "warning", "info")
STATUSES = ("open", "acknowledged", "muted", "resolved")
UNRESOLVED = ("open", "acknowledged", "muted")
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
MUTE_CHOICES = ((60, "1 hour"), (240, "4 hours"), (1440, "1 day"), (10080, "7 days"))


@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tasklens.ui", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = _format_ts
    env.filters["iso"] = lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    env.filters["first_line"] = lambda text, limit=160: _first_line(text, limit)
    env.filters["duration"] = format_duration
    return env


def _format_ts(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _first_line(text: Any, limit: int) -> str:
    if not text:
        return ""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _airflow_root() -> str:
    from airflow.api_fastapi.app import API_ROOT_PATH  # noqa: PLC0415 - Airflow's API-server app loads only when a request needs it

    return API_ROOT_PATH if API_ROOT_PATH.endswith("/") else API_ROOT_PATH + "/"


def _links(request: Request) -> dict[str, str]:
    """Paths of this app's pages and API as the browser sees them (under Airflow's base path)."""
    return {
        "alerts": request.url_for("alerts_page").path,
        "incidents": request.url_for("incidents_page").path,
        "api": request.url_for("list_alerts").path.removesuffix("/alerts"),
        "static": request.url_for("static", path="").path.rstrip("/"),
        "airflow": _airflow_root(),
    }


def _html(request: Request, template: str, **context: Any) -> HTMLResponse:
    body = _env().get_template(template).render(links=_links(request), **context)
    return HTMLResponse(body, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                       "X-Content-Type-Options": "nosniff"})


def render_error(request: Request, code: int, detail: str) -> str:
    """A small HTML error page (used for 401/403/404 of pages)."""
    login = None
    if code == status.HTTP_401_UNAUTHORIZED:
        login = _airflow_root()
    try:
        links = _links(request)
    except Exception:
        links = {"alerts": "", "incidents": "", "api": "", "static": "", "airflow": _airflow_root()}
    return _env().get_template("error.html").render(code=code, detail=detail, login=login, links=links)


def _alert_view(alert: dict[str, Any], root: str) -> dict[str, Any]:
    view = dict(alert)
    log_path = airflow_log_path(alert)
    view["log_href"] = root + log_path if log_path else None
    view["labels"] = dict(alert.get("labels") or {})
    return view


def _chart(series: list[dict[str, Any]], *, width: int = 840, height: int = 120) -> dict[str, Any]:
    """Geometry of the failures-per-hour bar chart (inline SVG)."""
    peak = max((p["failures"] for p in series), default=0)
    scale_max = max(1, peak)
    step = width / max(1, len(series))
    bars = []
    ticks = []
    for index, point in enumerate(series):
        hour = datetime.fromisoformat(point["hour"])
        if hour.hour == 0:
            ticks.append({"x": round(index * step, 1), "label": hour.strftime("%a %d")})
        if point["failures"]:
            h = max(1.5, point["failures"] / scale_max * (height - 4))
            bars.append({
                "x": round(index * step + 0.5, 1), "y": round(height - h, 1), "w": round(max(1.0, step - 1), 1),
                "h": round(h, 1), "title": f"{hour.strftime('%Y-%m-%d %H:00')} UTC: {point['failures']} failed",
            })
    grid = [round(height - (height - 4) * fraction, 1) for fraction in (0.5, 1)]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "peak": peak,
            "total": sum(p["failures"] for p in series), "grid": grid}


def _store() -> Any:
    return get_store()


@router.get("/", include_in_schema=False)
def index(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("alerts_page").path)


@router.get("/alerts", response_class=HTMLResponse, name="alerts_page")
def alerts_page(
    request: Request,
    user: GetUserDep,
    status_: Annotated[str, Query(alias="status", max_length=20)] = "unresolved",
    severity: Annotated[str, Query(max_length=20)] = "",
    dag_id: Annotated[str, Query(max_length=250)] = "",
    task_id: Annotated[str, Query(max_length=250)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    window: Annotated[str, Query(max_length=5)] = "",
    page: Annotated[int, Query(ge=1, le=20_000)] = 1,
) -> HTMLResponse:
    """The Alerts page: counts, the failures-per-hour chart over 7 days and the filtered, paginated list."""
    store = _store()
    readable = auth.readable_dag_ids(user)
    statuses = UNRESOLVED if status_ == "unresolved" else ((status_,) if status_ in STATUSES else ())
    filters = queries.AlertFilter(
        status=statuses,
        severity=(severity,) if severity in SEVERITIES else (),
        dag_id=dag_id or None,
        task_id=task_id or None,
        since=datetime.now(timezone.utc) - WINDOWS[window] if window in WINDOWS else None,
        text=q or None,
    )
    result = queries.list_alerts(store, filters, dag_ids=readable, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    summary = queries.summary(store, dag_ids=readable, hours=168)
    editable = auth.readable_dag_ids(user, "PUT") if result.alerts else set()
    root = _airflow_root()
    params = {"status": status_, "severity": severity, "dag_id": dag_id, "task_id": task_id, "q": q,
              "window": window}
    kept = {k: v for k, v in params.items() if v}

    def page_href(number: int) -> str:
        return "?" + urlencode({**kept, "page": number})

    pages = max(1, math.ceil(result.total / PAGE_SIZE))
    return _html(
        request,
        "alerts.html",
        alerts=[_alert_view(a, root) for a in result.alerts],
        editable=editable,
        total=result.total,
        total_capped=result.total_capped,
        params=params,
        page=page,
        pages=pages,
        prev_href=page_href(page - 1) if page > 1 else None,
        next_href=page_href(page + 1) if page < pages else None,
        summary=summary,
        chart=_chart(summary["failures_per_hour"]),
        severities=SEVERITIES,
        statuses=STATUSES,
        windows=tuple(WINDOWS),
        mute_choices=MUTE_CHOICES,
        user=auth.user_name(user),
        config_errors=_config_errors(),
    )


def _config_errors() -> list[dict[str, str]]:
    """The configuration errors tasklens works around, for the Alerts page banner."""

    try:
        return configcheck.problem_views(configcheck.current_problems())
    except Exception:  # the page still renders; the banner says the check itself failed
        return [{"message": "the tasklens configuration check failed; see the api-server log"}]


@router.get("/alerts/{alert_id}", response_class=HTMLResponse, name="alert_page")
def alert_page(request: Request, user: GetUserDep, alert_id: Annotated[int, Path(ge=1)]) -> HTMLResponse:
    """One alert: its record, exception, occurrences and delivery attempts."""
    store = _store()
    row = store.get_alert(alert_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    auth.require_dag_access(request, user, row["dag_id"], "GET")
    detail = queries.alert_detail(store, alert_id) or {}
    try:
        auth.require_dag_access(request, user, row["dag_id"], "PUT")
        can_edit = True
    except HTTPException:
        can_edit = False
    return _html(request, "alert.html", alert=_alert_view(detail, _airflow_root()), can_edit=can_edit,
                 mute_choices=MUTE_CHOICES, user=auth.user_name(user))


def _map_index(raw: str | None) -> int:
    try:
        return int(raw) if raw not in (None, "") else -1
    except ValueError:  # an unmapped task instance leaves the literal "{MAP_INDEX}" in the tab's href
        return -1


def _outlook(dag_id: str, task_id: str) -> dict[str, Any] | None:
    """The running-too-long check's view of the task ("learning" or its usual duration); None when unavailable."""
    try:
        return duration_outlook(dag_id, task_id)
    except Exception:  # an extra line of the tab: never worth failing the page
        return None


@router.get(
    "/ti",
    response_class=HTMLResponse,
    name="task_instance_tab",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))],
)
def task_instance_tab(
    request: Request,
    user: GetUserDep,
    dag_id: Annotated[str, Query(min_length=1, max_length=250)],
    run_id: Annotated[str, Query(min_length=1, max_length=250)],
    task_id: Annotated[str, Query(min_length=1, max_length=250)],
    map_index: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """The tasklens tab of a task instance: its attempts' events, the alerts they raised and their deliveries."""
    index = _map_index(map_index)
    view = queries.task_instance_view(_store(), dag_id, run_id, task_id, index)
    root = _airflow_root()
    try:
        auth.require_dag_access(request, user, dag_id, "PUT")
        can_edit = True
    except HTTPException:
        can_edit = False
    events = []
    for event in view["events"]:
        payload = event.get("payload") or {}
        events.append({**event, "exception_type": payload.get("exception_type"),
                       "exception_message": payload.get("exception_message"), "reason": payload.get("reason"),
                       "hostname": payload.get("hostname")})
    return _html(
        request,
        "ti.html",
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=index,
        outlook=_outlook(dag_id, task_id),
        events=events,
        occurrences=view["occurrences"],
        alerts=[_alert_view(a, root) for a in view["alerts"]],
        deliveries=view["deliveries"],
        can_edit=can_edit,
        editable={dag_id} if can_edit else set(),
        mute_choices=MUTE_CHOICES,
    )

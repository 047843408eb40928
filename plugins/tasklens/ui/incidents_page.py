"""The Incidents page (``/tasklens/incidents``): open and recent incidents with their members, and trends as charts
(failures by class per day, MTTA/MTTR per DAG and owner, the noisiest fingerprints). Same auth and per-DAG
filtering as the Alerts page; the buttons call the incidents API, which acts on every member."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tasklens import incident_store
from tasklens.failures import FAILURE_CLASSES
from tasklens.store import get_store
from tasklens.ui import auth
from tasklens.ui.pages import _html

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
MEMBERS_SHOWN = 20
_CLASS_ORDER = (*FAILURE_CLASSES, "unclassified")


def _class_chart(days: list[dict[str, Any]], *, width: int = 840, height: int = 120) -> dict[str, Any]:
    """Stacked bars: failures per day, one colour per class (inline SVG geometry)."""
    peak = max((sum(d["classes"].values()) for d in days), default=0)
    step = width / max(1, len(days))
    bars = []
    for index, day in enumerate(days):
        y = float(height)
        for name in _CLASS_ORDER:
            count = day["classes"].get(name, 0)
            if not count:
                continue
            h = count / max(1, peak) * (height - 4)
            y -= h
            bars.append({"x": round(index * step + 0.5, 1), "y": round(y, 1), "w": round(max(1.0, step - 2), 1),
                         "h": round(h, 1), "cls": name, "title": f"{day['day']}: {count} {name}"})
    return {"width": width, "height": height, "bars": bars, "peak": peak, "classes": _CLASS_ORDER,
            "first": days[0]["day"] if days else "", "last": days[-1]["day"] if days else ""}


def _bars(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Horizontal bars (percent of the longest) for MTTA or MTTR rows."""
    values = [row[key] for row in rows if row[key] is not None]
    longest = max(values, default=0) or 1
    return [{**row, "pct": round(100 * row[key] / longest, 1) if row[key] is not None else 0,
             "text": _duration(row[key])} for row in rows]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@router.get("/incidents", response_class=HTMLResponse, name="incidents_page")
def incidents_page(
    request: Request,
    user: GetUserDep,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    page: Annotated[int, Query(ge=1, le=20_000)] = 1,
) -> HTMLResponse:
    store = get_store()
    readable = auth.readable_dag_ids(user)
    found = incident_store.list_incidents(store, dag_ids=sorted(readable), limit=PAGE_SIZE,
                                          offset=(page - 1) * PAGE_SIZE)
    editable = auth.readable_dag_ids(user, "PUT") if found else set()
    incidents = []
    for incident in found:
        detail = incident_store.get_incident(store, incident.id, member_limit=MEMBERS_SHOWN)
        members = [m for m in (detail[1] if detail else []) if m["dag_id"] in readable]
        incidents.append({"incident": incident, "members": members,
                          "more": max(0, incident.members - len(members)),
                          "can_act": incident_store.member_dags(store, incident.id) <= editable})
    trends = incident_store.trends(store, dag_ids=sorted(readable),
                                   since=datetime.now(timezone.utc) - timedelta(days=days))
    return _html(
        request, "incidents.html", incidents=incidents, days=days, page=page,
        next_page=page + 1 if len(found) == PAGE_SIZE else None, prev_page=page - 1 if page > 1 else None,
        class_chart=_class_chart(trends["failures_by_class"]), noisiest=trends["noisiest"],
        mtta_by_dag=_bars(trends["by_dag"], "mtta_s"), mttr_by_dag=_bars(trends["by_dag"], "mttr_s"),
        mtta_by_owner=_bars(trends["by_owner"], "mtta_s"), mttr_by_owner=_bars(trends["by_owner"], "mttr_s"),
    )

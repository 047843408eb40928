"""JSON API of the tasklens UI (``/tasklens/api``). Every route needs an authenticated Airflow user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from tasklens.channels import mirrors_acknowledge
from tasklens.store import get_store
from tasklens.ui import auth, message_sync, queries

__all__ = ["airflow_log_path", "router"]

StatusName = Literal["open", "acknowledged", "muted", "resolved"]
SeverityName = Literal["info", "warning", "critical"]
MAX_MUTE_MINUTES = 30 * 24 * 60

router = APIRouter(prefix="/api", tags=["alerts"])


class AlertOut(BaseModel):
    """One alert record (its latest occurrence and the record's state)."""

    id: int
    fingerprint: str
    rule: str
    kind: str
    severity: str
    status: str
    title: str
    summary: str | None = None
    dag_id: str
    task_id: str | None = None
    run_id: str | None = None
    map_index: int = -1
    try_number: int | None = None
    max_tries: int | None = None
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    exception_type: str | None = None
    exception_message: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    acked_by: str | None = None
    acked_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    muted_until: datetime | None = None
    undelivered: bool = False
    last_error: str | None = None
    log_url: str | None = Field(None, description="Path of the attempt's log in the Airflow UI")


class AlertList(BaseModel):
    alerts: list[AlertOut]
    total: int = Field(description=f"Matching alerts, counted up to {queries.COUNT_CAP}")
    total_capped: bool = Field(description=f"True when more than {queries.COUNT_CAP} alerts match")
    limit: int
    offset: int


class OccurrenceOut(BaseModel):
    id: int
    rule: str
    kind: str
    severity: str
    dag_id: str
    task_id: str | None = None
    run_id: str | None = None
    map_index: int
    try_number: int | None = None
    occurred_at: str
    recorded_at: datetime
    exception_type: str | None = None
    exception_message: str | None = None


class DeliveryOut(BaseModel):
    id: int
    kind: str
    route: str
    channel: str
    channel_type: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    sent_at: datetime | None = None


class AlertDetail(AlertOut):
    data: dict[str, Any] = Field(default_factory=dict)
    routes: list[dict[str, Any]] = Field(default_factory=list)
    occurrence_list: list[OccurrenceOut] = Field(description="Newest first, at most 200")
    deliveries: list[DeliveryOut] = Field(description="Delivery attempts (outbox rows), oldest first")


class DagCount(BaseModel):
    dag_id: str
    alerts: int
    unresolved: int


class HourCount(BaseModel):
    hour: datetime
    failures: int


class Summary(BaseModel):
    total: int
    by_status: dict[str, int]
    by_severity: dict[str, int]
    unresolved_by_severity: dict[str, int]
    by_dag: list[DagCount] = Field(description="DAGs with the most unresolved alerts (top 20)")
    failures_per_hour: list[HourCount] = Field(
        description="Failed attempts (events failed, up_for_retry, killed) per UTC hour, oldest first"
    )


class MuteBody(BaseModel):
    duration_minutes: int = Field(ge=1, le=MAX_MUTE_MINUTES, description="How long to silence the alert")


class ActionBody(BaseModel):
    """Actions take a JSON object (may be empty): a cross-site HTML form cannot send one."""

    model_config = {"extra": "forbid"}


def airflow_log_path(alert: dict[str, Any]) -> str | None:
    """Path of an alert's attempt (its log tab) in the Airflow UI, relative to Airflow's base URL."""

    if not alert.get("task_id") or not alert.get("run_id") or alert.get("run_id") == "unknown":
        return None
    path = f"dags/{quote(alert['dag_id'], safe='')}/runs/{quote(alert['run_id'], safe='')}/tasks/" + quote(
        alert["task_id"], safe=""
    )
    map_index = alert.get("map_index")
    if map_index is not None and map_index >= 0:
        path += f"/mapped/{map_index}"
    if alert.get("try_number"):
        path += f"?try_number={int(alert['try_number'])}"
    return path


def _with_links(alert: dict[str, Any]) -> dict[str, Any]:
    alert = dict(alert)
    alert["log_url"] = airflow_log_path(alert)
    alert["labels"] = dict(alert.get("labels") or {})
    return alert


def _store() -> Any:
    return get_store()


def alert_filter(
    status_: Annotated[list[StatusName] | None, Query(alias="status", description="Repeat for several")] = None,
    severity: Annotated[list[SeverityName] | None, Query(description="Repeat for several")] = None,
    dag_id: Annotated[str | None, Query(max_length=250)] = None,
    task_id: Annotated[str | None, Query(max_length=250)] = None,
    since: Annotated[datetime | None, Query(description="last_seen at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="last_seen before (ISO 8601)")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in title, exception, DAG, task or rule")] = None,
) -> queries.AlertFilter:
    """The list filters, shared by the API and the Alerts page."""

    def aware(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    return queries.AlertFilter(
        status=tuple(status_ or ()), severity=tuple(severity or ()), dag_id=dag_id or None,
        task_id=task_id or None, since=aware(since), until=aware(until), text=q or None,
    )


AlertFilterDep = Annotated[queries.AlertFilter, Depends(alert_filter)]


@router.get("/alerts", response_model=AlertList, summary="Alerts of the DAGs you may read, newest first")
def list_alerts(
    user: GetUserDep,
    filters: AlertFilterDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    page = queries.list_alerts(_store(), filters, dag_ids=auth.readable_dag_ids(user), limit=limit, offset=offset)
    return {
        "alerts": [_with_links(a) for a in page.alerts],
        "total": page.total,
        "total_capped": page.total_capped,
        "limit": page.limit,
        "offset": page.offset,
    }


def _readable_alert(request: Request, user: Any, alert_id: int) -> dict[str, Any]:
    row = _store().get_alert(alert_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    auth.require_dag_access(request, user, row["dag_id"], "GET")
    return row


@router.get("/alerts/{alert_id}", response_model=AlertDetail, summary="An alert with occurrences and deliveries")
def get_alert(request: Request, user: GetUserDep, alert_id: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
    _readable_alert(request, user, alert_id)
    detail = queries.alert_detail(_store(), alert_id)
    if detail is None:  # deleted between the two reads
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    return _with_links(detail)


def _act(request: Request, user: Any, alert_id: int, action: str, **kwargs: Any) -> dict[str, Any]:
    auth.check_write_origin(request)
    row = _readable_alert(request, user, alert_id)
    auth.require_dag_access(request, user, row["dag_id"], "PUT")
    store = _store()
    changed = getattr(store, action)(alert_id, by=auth.user_name(user), **kwargs)
    if not changed:
        current = store.get_alert(alert_id) or row
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"alert {alert_id} is {current['status']}; cannot {action} it"
        )
    message_sync.follow_status(store, [alert_id])  # Slack shows it too (a resolve goes through the outbox)
    current = store.get_alert(alert_id) or row
    return _with_links(queries._row(current))


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut, summary="Acknowledge an open alert")
def acknowledge(
    request: Request, user: GetUserDep, alert_id: Annotated[int, Path(ge=1)], body: ActionBody
) -> dict[str, Any]:
    return _act(request, user, alert_id, "acknowledge", mirror_to=mirrors_acknowledge)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut, summary="Resolve an alert by hand")
def resolve(
    request: Request, user: GetUserDep, alert_id: Annotated[int, Path(ge=1)], body: ActionBody
) -> dict[str, Any]:
    return _act(request, user, alert_id, "resolve")


@router.post("/alerts/{alert_id}/mute", response_model=AlertOut, summary="Silence an unresolved alert for a while")
def mute(request: Request, user: GetUserDep, alert_id: Annotated[int, Path(ge=1)], body: MuteBody) -> dict[str, Any]:
    until = datetime.now(timezone.utc) + timedelta(minutes=body.duration_minutes)
    return _act(request, user, alert_id, "mute", until=until)


@router.get("/summary", response_model=Summary, summary="Counts by status, severity and DAG; failures per hour")
def get_summary(
    user: GetUserDep, hours: Annotated[int, Query(ge=1, le=24 * 31, description="Length of the series")] = 168
) -> dict[str, Any]:
    return queries.summary(_store(), dag_ids=auth.readable_dag_ids(user), hours=hours)

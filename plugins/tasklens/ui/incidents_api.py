"""Incidents in the tasklens JSON API (``/tasklens/api/incidents``, ``/tasklens/api/trends``), with the Alerts
API's auth: every route needs an Airflow user, lists cover the DAGs the user may read, and acting on an incident
(acknowledge, resolve) acts on every member alert, which needs edit access to every member's DAG."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from tasklens import incident_store
from tasklens.incident_store import Incident
from tasklens.store import get_store
from tasklens.ui import auth, message_sync
from tasklens.ui.api import ActionBody

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["incidents"])
MAX_PAGE = 500


class IncidentOut(BaseModel):
    """One incident: failures across DAGs sharing a cause."""

    id: int
    title: str
    headline: str
    status: str
    failure_class: str | None = None
    dependency: str | None = None
    signature: str
    members: int
    dags: int
    first_seen: datetime
    last_seen: datetime
    acked_by: str | None = None
    acked_at: datetime | None = None
    resolved_at: datetime | None = None


class IncidentList(BaseModel):
    incidents: list[IncidentOut]
    limit: int
    offset: int


class MemberOut(BaseModel):
    alert_id: int
    dag_id: str
    task_id: str | None = None
    run_id: str | None = None
    status: str
    title: str
    summary: str | None = None
    first_seen: datetime
    last_seen: datetime
    acked_by: str | None = None
    acked_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None


class TimelineEntry(BaseModel):
    at: datetime
    what: str
    by: str | None = None


class IncidentDetail(IncidentOut):
    member_list: list[MemberOut] = Field(description="A page of the members in DAGs you may read, oldest first")
    hidden_members: int = Field(description="Members on this page in DAGs you may not read (not listed)")
    timeline: list[TimelineEntry]
    limit: int
    offset: int


def _out(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id, "title": incident.title, "headline": incident.headline, "status": incident.status,
        "failure_class": incident.failure_class, "dependency": incident.dependency, "signature": incident.signature,
        "members": incident.members, "dags": incident.dags, "first_seen": incident.first_seen,
        "last_seen": incident.last_seen, "acked_by": incident.acked_by, "acked_at": incident.acked_at,
        "resolved_at": incident.resolved_at,
    }


@router.get("/incidents", response_model=IncidentList, summary="Incidents touching DAGs you may read, newest first")
def list_incidents(
    user: GetUserDep,
    status_: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    found = incident_store.list_incidents(get_store(), dag_ids=sorted(auth.readable_dag_ids(user)), status=status_,
                                          limit=limit, offset=offset)
    return {"incidents": [_out(i) for i in found], "limit": limit, "offset": offset}


def _timeline(incident: Incident, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = [{"at": incident.first_seen, "what": "first failure", "by": None}]
    for member in members:
        entries.append({"at": member["first_seen"], "what": f"{member['dag_id']}.{member['task_id']} failed",
                        "by": None})
        if member["acked_at"] is not None:
            entries.append({"at": member["acked_at"], "what": f"{member['dag_id']}.{member['task_id']} acknowledged",
                            "by": member["acked_by"]})
        if member["resolved_at"] is not None:
            entries.append({"at": member["resolved_at"], "what": f"{member['dag_id']}.{member['task_id']} resolved",
                            "by": member["resolved_by"]})
    if incident.acked_at is not None:
        entries.append({"at": incident.acked_at, "what": "incident acknowledged", "by": incident.acked_by})
    if incident.resolved_at is not None:
        entries.append({"at": incident.resolved_at, "what": "incident resolved", "by": None})
    return sorted(entries, key=lambda e: e["at"])


def _readable(user: Any, incident_id: int, limit: int = 100, offset: int = 0) -> tuple[Incident, list[dict[str, Any]],
                                                                                         int]:
    found = incident_store.get_incident(get_store(), incident_id, member_limit=limit, member_offset=offset)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} not found")
    incident, members = found
    readable = auth.readable_dag_ids(user)
    if not incident_store.touches_dags(get_store(), incident_id, readable):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} not found")
    visible = [m for m in members if m["dag_id"] in readable]
    return incident, visible, len(members) - len(visible)


@router.get("/incidents/{incident_id}", response_model=IncidentDetail,
            summary="An incident: its members (a page), the timeline, who acknowledged it")
def get_incident(
    user: GetUserDep,
    incident_id: Annotated[int, Path(ge=1)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    incident, members, hidden = _readable(user, incident_id, limit, offset)
    return {**_out(incident), "member_list": members, "hidden_members": hidden,
            "timeline": _timeline(incident, members), "limit": limit, "offset": offset}


def _act(request: Request, user: Any, incident_id: int, action: str) -> dict[str, Any]:
    auth.check_write_origin(request)
    _readable(user, incident_id)
    store = get_store()
    editable = auth.readable_dag_ids(user, "PUT")
    if not incident_store.member_dags(store, incident_id) <= editable:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"acting on incident {incident_id} acts on every member: you may not edit all their DAGs")
    getattr(incident_store, action)(store, incident_id, by=auth.user_name(user))
    if action == "acknowledge":  # its Slack messages and the members' own show it (resolves go through the outbox)
        message_sync.follow_incident(store, incident_id)
        message_sync.follow_status(store, incident_store.member_alert_ids(store, incident_id,
                                                                          limit=message_sync.MAX_MESSAGES))
    found = incident_store.get_incident(store, incident_id, member_limit=1)
    if found is None:  # removed meanwhile (retention)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} not found")
    return _out(found[0])


@router.post("/incidents/{incident_id}/ack", response_model=IncidentOut,
             summary="Acknowledge an incident and every open member alert")
def acknowledge(request: Request, user: GetUserDep, incident_id: Annotated[int, Path(ge=1)],
                body: ActionBody) -> dict[str, Any]:
    return _act(request, user, incident_id, "acknowledge")


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentOut,
             summary="Resolve an incident: every member alert is resolved")
def resolve(request: Request, user: GetUserDep, incident_id: Annotated[int, Path(ge=1)],
            body: ActionBody) -> dict[str, Any]:
    return _act(request, user, incident_id, "resolve")


@router.get("/trends", summary="MTTA/MTTR per DAG and owner, noisiest fingerprints, failures by class per day")
def get_trends(user: GetUserDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
    since = datetime.now(timezone.utc) - timedelta(days=days)
    return incident_store.trends(get_store(), dag_ids=sorted(auth.readable_dag_ids(user)), since=since)

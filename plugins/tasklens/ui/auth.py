"""Who may see and change which alerts, decided by Airflow's auth manager.

Plugin apps are not protected by Airflow automatically. Every tasklens route depends on Airflow's
``GetUserDep`` (a Bearer token, or the ``_token`` cookie the UI's same-origin iframe sends), then:

- listing: only alerts of DAGs the user may read (``auth_manager.get_authorized_dag_ids(method="GET")``);
- reading one alert / a task instance's tab: read access to that DAG's task instances;
- acknowledge / resolve / mute: edit access (``PUT``) to that DAG's task instances.

Per-DAG checks go through Airflow's ``requires_access_dag`` so team ownership is honoured like in Airflow's
own API. Cookie-authenticated writes must also carry the ``X-Tasklens-Request`` header (a cross-site form cannot
set it without a CORS preflight, which the api-server does not grant) and a same-origin ``Origin``, on top of the
cookie's ``SameSite=Lax``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status

from tasklens import config

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

__all__ = ["CSRF_HEADER", "check_write_origin", "readable_dag_ids", "require_dag_access", "user_name"]

#: Header the tasklens pages send with every POST (value ignored); required when the cookie authenticates.
CSRF_HEADER = "X-Tasklens-Request"


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager  # noqa: PLC0415 - Airflow's API-server app loads only when a request needs it

    return get_auth_manager()


def readable_dag_ids(user: BaseUser, method: str = "GET") -> set[str]:
    """DAG ids ``user`` may access with ``method`` (Airflow's list-filtering API, as its own endpoints use)."""
    return set(_auth_manager().get_authorized_dag_ids(user=user, method=method))


def require_dag_access(request: Request, user: BaseUser, dag_id: str, method: str) -> None:
    """Raise 403 unless ``user`` may ``method`` the task instances of ``dag_id``."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity  # noqa: PLC0415 - Airflow's API-server app loads only when a request needs it
    from airflow.api_fastapi.core_api.security import requires_access_dag  # noqa: PLC0415 - Airflow's API-server app loads only when a request needs it

    requires_access_dag(method, DagAccessEntity.TASK_INSTANCE, param_dag_id=dag_id)(request, user)  # type: ignore[arg-type]


def user_name(user: BaseUser) -> str:
    """The name recorded on an alert for an action (``acked_by``, ``resolved_by``)."""
    try:
        return str(user.get_name())
    except Exception:  # a third-party user class without a name still gets its action recorded
        return str(getattr(user, "username", None) or user.get_id())


def check_write_origin(request: Request) -> None:
    """Refuse cookie-authenticated writes that a cross-site page could forge.

    Requests with an ``Authorization: Bearer`` header are API clients (a browser never adds one on its own).
    """
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return
    if request.headers.get(CSRF_HEADER) is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing {CSRF_HEADER} header")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc not in _own_hosts(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin request refused")


def _own_hosts(request: Request) -> set[str]:
    # Host only, not scheme: behind a TLS-terminating proxy the api-server sees http while the browser says https.
    hosts = {urlsplit(str(request.base_url)).netloc}
    try:
        hosts.add(urlsplit(config.base_url()).netloc)
    except Exception:  # noqa: S110 - an unreadable base_url only narrows what is accepted
        pass
    return hosts - {""}

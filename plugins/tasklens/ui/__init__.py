"""tasklens in the Airflow UI: a FastAPI app mounted by the plugin at ``/tasklens``.

- JSON API under ``/tasklens/api`` (alerts list/detail/actions, summary) and ``/tasklens/health``;
- the **Alerts** page (``/tasklens/alerts``), added to Airflow's navigation;
- a **tasklens** tab on the task-instance view (``/tasklens/ti``).

The app's lifespan starts the outbox dispatcher inside the api-server (``[tasklens] dispatcher_enabled``).
Importing this package is cheap: Airflow loads the plugin in every process (workers too), so the app and its
routes are built only when :func:`fastapi_apps` is called and Airflow's API modules only when the app starts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALERTS_PATH", "TI_TAB_PATH", "URL_PREFIX", "external_views", "fastapi_apps"]

URL_PREFIX = "/tasklens"
ALERTS_PATH = f"{URL_PREFIX}/alerts"
TI_TAB_PATH = f"{URL_PREFIX}/ti"


def fastapi_apps() -> list[dict[str, Any]]:
    """The plugin's ``fastapi_apps`` entry (one app at :data:`URL_PREFIX`)."""
    from tasklens.ui.app import get_app  # noqa: PLC0415 - FastAPI loads only in the api-server

    return [{"app": get_app(), "url_prefix": URL_PREFIX, "name": "tasklens"}]


def external_views() -> list[dict[str, Any]]:
    """The Alerts nav entry and the task-instance tab. Airflow fills ``{DAG_ID}`` etc. into tab hrefs; an
    unmapped task instance leaves ``{MAP_INDEX}`` as is, which the tab reads as ``-1``."""
    return [
        {
            "name": "Alerts",
            "href": ALERTS_PATH,
            "destination": "nav",
            "category": "browse",
            "url_route": "tasklens",
            "icon": f"{URL_PREFIX}/static/bell.svg",
        },
        {
            "name": "tasklens",
            "href": f"{TI_TAB_PATH}?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "tasklens-ti",
        },
    ]

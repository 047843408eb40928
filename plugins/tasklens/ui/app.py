"""The FastAPI app behind ``/tasklens``: lifespan (dispatcher), health, and the API and page routers."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tasklens import config, configcheck, dispatch, pipeline, reconcile
from tasklens.store import get_store

__all__ = ["create_app", "get_app", "health", "install_routes", "is_authenticated"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_ERROR_TEXT_LIMIT = 200


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Install the routes (if the app was built lazily) and start the outbox dispatcher with the api-server
    (``[tasklens] dispatcher_enabled``); stop it on shutdown."""
    install_routes(app)
    started = False
    try:
        # The api-server is where the store is migrated: never a task, the scheduler or the dag-processor.

        get_store(migrate=True)
    except Exception:  # writers spool until a migration succeeds; /tasklens/health says so
        log.warning("tasklens: the alert store could not be migrated; run `tasklens db upgrade`", exc_info=True)
    try:
        # Bad configuration is reported from here (health, Alerts page banner, one alert per error).

        configcheck.start_background_checker()
    except Exception:
        log.warning("tasklens: the configuration checker did not start", exc_info=True)
    try:
        if config.dispatcher_enabled():
            started = dispatch.start_background_dispatcher(
                on_pass=functools.partial(pipeline.run_stage, "spool.ingest", pipeline.ingest_spool)
            )
    except Exception:  # the UI still serves when the dispatcher cannot start; /tasklens/health says so
        log.warning("tasklens: the background dispatcher did not start", exc_info=True)
    try:
        # Killed-task reconciler: the api-server may read Airflow's metadata DB, task processes may not.

        reconcile.start_background_reconciler()
    except Exception:
        log.warning("tasklens: the killed-task reconciler did not start", exc_info=True)
    try:
        yield
    finally:
        configcheck.stop_background_checker()
        reconcile.stop_background_reconciler()
        if started:
            dispatch.stop_background_dispatcher()


def _first_line(text: Any) -> str | None:
    """An error as health shows it: its first line only (SQLAlchemy appends the SQL and parameters, which may hold
    alert content), bounded."""
    if text is None:
        return None
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:_ERROR_TEXT_LIMIT]


def health(*, details: bool = True) -> tuple[int, dict[str, Any]]:
    """Store reachability, dispatcher state, pending outbox size, the last delivery error per channel and the
    configuration errors tasklens works around.

    Reveals no alert content: counts, timestamps, channel names and the first line of errors only. Without
    ``details`` (an unauthenticated caller) the body is ``{"status": ...}`` only; the HTTP code is the same.
    """

    body: dict[str, Any] = {"status": "ok"}
    try:
        stats = get_store().outbox_stats()
        body["store"] = {"reachable": True}
        body["outbox"] = {"pending": stats["pending"], "by_state": stats["by_state"]}
        errors = {
            channel: {"error": _first_line(info.get("error")), "at": info.get("at")}
            for channel, info in stats["last_error_by_channel"].items()
        }
    except Exception as exc:  # unreachable or unmigratable store
        log.warning("tasklens health: the store is unreachable", exc_info=True)
        body["status"] = "unhealthy"
        body["store"] = {"reachable": False, "error": type(exc).__name__}
        body["outbox"] = None
        errors = {}
    try:
        enabled = config.dispatcher_enabled()
    except Exception:
        enabled = False
    state = dispatch.dispatcher_state()
    for channel, error in (state.get("last_error_by_channel") or {}).items():
        errors.setdefault(channel, {"error": _first_line(error), "at": None})
    body["dispatcher"] = {
        "enabled": enabled,
        "running": bool(state.get("running")),
        "last_pass_at": state.get("last_pass_at"),
        "last_pass_error": _first_line(state.get("last_pass_error")),
        "messages_sent": state.get("messages_sent", 0),
    }
    body["last_delivery_error_by_channel"] = errors
    if body["status"] == "ok" and enabled and not body["dispatcher"]["running"]:
        body["status"] = "degraded"
    try:
        problems = configcheck.problem_views(configcheck.current_problems())
    except Exception:
        log.warning("tasklens health: the configuration check failed", exc_info=True)
        problems = [{"message": "the configuration check failed; see the api-server log"}]
    body["config"] = {"ok": not problems, "errors": problems}
    if body["status"] == "ok" and problems:
        body["status"] = "degraded"
    code = 503 if body["status"] == "unhealthy" else 200
    return code, (body if details else {"status": body["status"]})


async def is_authenticated(request: Request) -> bool:
    """Whether the request carries a valid Airflow credential (Bearer token or the UI's ``_token`` cookie),
    decided by Airflow's own ``get_user``; never raises."""
    # Airflow's API security module takes ~2 s to import: only the api-server, on the first health call, pays it.
    from airflow.api_fastapi.core_api import security  # noqa: PLC0415 - see above

    try:
        credentials = await security.bearer_scheme(request)
        await security.get_user(request=request, _oauth_token=None, bearer_credentials=credentials)
    except HTTPException:
        return False
    except Exception:
        log.warning("tasklens health: could not check the caller's credentials", exc_info=True)
        return False
    return True


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return "/api/" not in path and not path.endswith("/health") and "text/html" in request.headers.get("accept", "")


def install_routes(app: FastAPI) -> None:
    """Add the API and page routers (they import Airflow's API security module, ~2 s: api-server only)."""
    from tasklens.ui.api import router as api_router  # noqa: PLC0415 - Airflow's API security module (~2 s) loads only in the api-server
    from tasklens.ui.incident_webhooks import router as incident_router  # noqa: PLC0415 - as above
    from tasklens.ui.incidents_api import router as incidents_api_router  # noqa: PLC0415 - as above
    from tasklens.ui.incidents_page import router as incidents_page_router  # noqa: PLC0415 - as above
    from tasklens.ui.pages import router as pages_router  # noqa: PLC0415 - Airflow's API security module (~2 s) loads only in the api-server
    from tasklens.ui.slack_actions import router as slack_router  # noqa: PLC0415 - as above

    if getattr(app.state, "tasklens_routes", False):
        return

    app.include_router(api_router)
    app.include_router(incidents_api_router)
    app.include_router(incidents_page_router)
    app.include_router(pages_router)
    app.include_router(slack_router)  # Slack, PagerDuty and Opsgenie sign their requests (no Airflow login)
    app.include_router(incident_router)
    app.openapi_schema = None
    app.state.tasklens_routes = True


def create_app(*, lazy: bool = False) -> FastAPI:
    """A new tasklens app. ``lazy`` defers the routes to the app's lifespan, so that building the app in
    processes that never serve it (workers, the scheduler: every process loads the plugin) stays cheap."""
    app = FastAPI(
        title="tasklens",
        description="Task-level alerts of Airflow: list, inspect, acknowledge, resolve and mute. Every route except "
        "`/health` needs an authenticated Airflow user (Bearer token or the UI's `_token` cookie); `/health` shows "
        "anonymous callers the status only.",
        version="1",
        lifespan=lifespan,
    )

    @app.get("/health", tags=["health"],
             summary="Health: status only for anonymous callers; store, dispatcher, outbox and configuration errors "
                     "for an authenticated Airflow user (no alert content)")
    async def get_health(request: Request) -> JSONResponse:
        details = await is_authenticated(request)
        code, body = await run_in_threadpool(functools.partial(health, details=details))
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_html(request):
            from tasklens.ui.pages import render_error  # noqa: PLC0415 - Airflow's API security module (~2 s) loads only in the api-server

            return HTMLResponse(render_error(request, exc.status_code, str(exc.detail)), status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if not lazy:
        install_routes(app)
    return app


@functools.cache
def get_app() -> FastAPI:
    """The process's app, the one the plugin mounts (routes installed by its lifespan)."""
    return create_app(lazy=True)

"""Real Airflow components for integration tests, bound to 127.0.0.1 and stopped by PID.

``AirflowStack`` runs ``airflow db migrate`` in its own AIRFLOW_HOME, then starts a scheduler
(LocalExecutor), a dag-processor and an api-server with SimpleAuthManager users ``admin`` and
``viewer``; tests talk to it through the public REST API. ``dags_test`` runs ``airflow dags test``
in a subprocess with the same kind of isolated home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
USERS = {"admin": "admin", "viewer": "viewer"}
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, dags_folder: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of an isolated Airflow installation rooted at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{u}:{'admin' if u == 'admin' else 'viewer'}" for u in USERS
            ),
            # SQLite serialises writers even in WAL mode: with the scheduler, the dag-processor and the api-server
            # writing at once on a loaded 2-core machine, a write can wait past sqlite3's default 5 s busy timeout,
            # and the api-server answers HTTP 500 "Database error" (an unpausing PATCH, in CI). PostgreSQL would
            # wait on the row lock; timeout=60 (SQLAlchemy passes it to sqlite3.connect) gives SQLite that patience.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__TASKLENS__STORE_URL": f"sqlite:///{home / 'tasklens.db'}",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        }
    )
    env.update(extra or {})
    return env


def run_airflow(env: Mapping[str, str], *args: str, timeout: float = 600) -> float:
    """Run ``airflow <args>`` in ``env``; returns its seconds. Raises with the command's last output when it fails."""
    started = time.monotonic()
    result = subprocess.run([AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def _template_db(timeout: float) -> Path:
    """A freshly migrated metadata DB, made once per machine and Airflow version and copied per home.

    ``airflow db migrate`` takes ~13 s; copying the result takes milliseconds.
    """
    from airflow import __version__

    template = Path(tempfile.gettempdir()) / f"tasklens-airflow-{__version__}-migrated.db"
    with open(f"{template}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            with tempfile.TemporaryDirectory(prefix="tasklens-migrate-") as tmp:
                run_airflow(airflow_env(Path(tmp), Path(tmp)), "db", "migrate", timeout=timeout)
                shutil.copyfile(Path(tmp) / "airflow.db", f"{template}.tmp")
                os.replace(f"{template}.tmp", template)
    return template


def migrate(env: Mapping[str, str], timeout: float = 180, *, store: bool = True) -> None:
    """Give ``env``'s AIRFLOW_HOME a migrated SQLite metadata DB, the SimpleAuthManager passwords and (``store``)
    a migrated tasklens store."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
    shutil.copyfile(_template_db(timeout), home / "airflow.db")
    # WAL (a setting stored in the file): readers no longer block writers, as with the PostgreSQL of a real deployment.
    # In SQLite's default rollback journal the api-server, scheduler and dag-processor writing at once could wait out
    # the 5 s busy timeout ("database is locked" -> HTTP 500 on a trigger).
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")
    if store:
        migrate_tasklens_store(env)


def migrate_tasklens_store(env: Mapping[str, str]) -> None:
    """What a deployment does once with ``tasklens db upgrade``: tasks and the scheduler never migrate the store."""
    from tasklens.store import Store

    url = env.get("AIRFLOW__TASKLENS__STORE_URL")
    if url:
        Store(url).dispose()


def dags_test(
    dag_id: str,
    *,
    home: Path,
    dags_folder: Path,
    env: Mapping[str, str] | None = None,
    conf: Mapping[str, Any] | None = None,
    timeout: float = 300,
    migrate_first: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow dags test DAG_ID`` in a subprocess with an isolated home; returns the finished process."""
    full_env = airflow_env(home, dags_folder, env)
    if migrate_first and not (home / "airflow.db").exists():
        migrate(full_env)
    cmd = [AIRFLOW, "dags", "test", dag_id]
    if conf:
        cmd += ["--conf", json.dumps(dict(conf))]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


class AirflowStack:
    """Scheduler + dag-processor + api-server on 127.0.0.1 in an isolated AIRFLOW_HOME.

    >>> with AirflowStack(tmp_path, dags_folder) as stack:
    ...     run_id = stack.trigger("my_dag")
    ...     assert stack.wait_for_run("my_dag", run_id) == "success"
    """

    def __init__(
        self, home: Path, dags_folder: Path, env: Mapping[str, str] | None = None, *, migrate_store: bool = True,
        python: Path | None = None,
    ) -> None:
        self.home = Path(home)
        # Another venv's interpreter (the overhead benchmark's baseline without tasklens); default: this one.
        self.command = [str(python), "-m", "airflow"] if python else [AIRFLOW]
        self.migrate_store = migrate_store  # False: the api-server's start is what migrates the tasklens store
        self.dags_folder = Path(dags_folder)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.env = airflow_env(
            self.home,
            self.dags_folder,
            {
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                # Components must share the JWT secret (task tokens), and each stack needs its own log-server port.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                **(env or {}),
            },
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._tokens: dict[str, str] = {}

    # lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 240) -> None:
        migrate(self.env, store=self.migrate_store)
        logs = self.home / "component-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("api-server", "scheduler", "dag-processor"):
            out = open(logs / f"{name}.log", "wb")
            self.processes[name] = subprocess.Popen(
                [*self.command, name], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"api-server did not become healthy in {timeout}s; logs in {logs}")

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                log = (self.home / "component-logs" / f"{name}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{log}")

    def stop(self, grace: float = 20) -> None:
        """SIGTERM each component's process group (it owns its task subprocesses), then SIGKILL."""
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        self.processes.clear()

    def component_log(self, name: str) -> str:
        return (self.home / "component-logs" / f"{name}.log").read_text(errors="replace")

    # REST API --------------------------------------------------------------------------------
    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            body = json.dumps({"username": user, "password": USERS[user]}).encode()
            req = urllib.request.Request(
                f"{self.api_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._tokens[user] = json.loads(resp.read())["access_token"]
        return self._tokens[user]

    def request(
        self, method: str, path: str, body: Any = None, *, user: str | None = "admin", timeout: float = 30
    ) -> tuple[int, Any]:
        """Call the api-server; returns (status, parsed JSON or text). ``user=None`` sends no token."""
        headers = {"Content-Type": "application/json"}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: Any = None, *, user: str = "admin") -> Any:
        status, payload = self.request(method, path, body, user=user)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {payload}")
        return payload

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            status, _ = self.request("GET", f"/api/v2/dags/{dag_id}")
            if status == 200:
                return
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout}s")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, timeout: float = 120) -> str:
        """Unpause and trigger ``dag_id``; returns the run_id."""
        self.wait_for_dag(dag_id, timeout)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} still {self.run_state(dag_id, run_id)} after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        payload = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(payload["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

"""The production compose stack, checked without a Docker engine.

``docker-compose config`` (Debian's docker-compose 1.29 validates offline) resolves the file with ``.env.example``;
PyYAML checks what the resolved stack wires together; the PostgreSQL init script runs against a real server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.integration.postgres import PostgresServer, postgres_server

pytestmark = pytest.mark.integration

__all__ = ["postgres_server"]  # the fixture, re-exported for pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
POSTGRES_INIT = REPO / "include" / "docker" / "postgres" / "10-tasklens-databases.sh"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
SERVICES = AIRFLOW_SERVICES | {
    "postgres",
    "redis",
    "statsd-exporter",
    "prometheus",
    "grafana",
    "mailpit",
    "spark-master",
    "spark-worker",
}
ONE_SHOT = {"airflow-init"}
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?])?")


def _docker_compose(*args: str, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose missing: run `make system-deps` (Debian package docker-compose)"
    # Only the environment a fresh shell would have: no stack variable may leak in from the test run.
    variables = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text())}
    env = {k: v for k, v in os.environ.items() if k not in variables}
    env_args = ["--env-file", str(env_file)] if env_file else []
    return subprocess.run(
        [binary, *env_args, "--project-directory", str(REPO), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=REPO,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The stack as docker-compose resolves it with .env.example (interpolated, anchors merged)."""
    result = _docker_compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def test_docker_compose_validates_the_file() -> None:
    """``docker-compose config -q`` accepts the file with the documented .env.example."""
    result = _docker_compose("config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    """With no .env, resolving the stack fails and names the missing secret: no default password exists."""
    (tmp_path / "empty.env").write_text("")
    result = _docker_compose("config", "-q", env_file=tmp_path / "empty.env")
    assert result.returncode != 0
    assert "in .env" in result.stderr


def test_every_required_variable_is_documented_in_env_example() -> None:
    """Each ${VAR} the compose file uses without a default has a line in .env.example, and no line is unused."""
    text = COMPOSE.read_text()
    required = {m["name"] for m in VARIABLE.finditer(text) if m["op"] in (None, ":?", "?")}
    example = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"^#?\s?[A-Z0-9_]+=", line)
    }
    assert required <= example
    assert example <= {m["name"] for m in VARIABLE.finditer(text)}


def test_no_secret_is_written_in_the_compose_file(raw: dict[str, Any]) -> None:
    """Every password, key, secret or credentialed URL in an environment block comes from a ${VARIABLE}."""
    secretive = re.compile(r"PASSWORD(?!S_FILE)|SECRET|FERNET|_KEY$|_AUTH$")  # a path to a passwords file is fine
    credentialed_url = re.compile(r"://[^/@\s]*:[^/@\s]+@")
    leaks = []
    blocks = [("x-airflow-common", raw["x-airflow-common"]), *raw["services"].items()]
    for name, service in blocks:
        for key, value in _env(service).items():
            if (secretive.search(key) or credentialed_url.search(value)) and "${" not in value:
                leaks.append((name, key))
            if credentialed_url.search(value):
                password = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
                assert password.startswith("${") and password.endswith("}"), (name, key)
    assert leaks == []
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=REPO, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == ""


def test_stack_has_every_service(resolved: dict[str, Any]) -> None:
    """Airflow's five components, the init job, and the database, broker, monitoring, mail and Spark services."""
    assert set(resolved["services"]) == SERVICES


def test_published_ports_bind_to_loopback_only(resolved: dict[str, Any]) -> None:
    """Every published port is bound to 127.0.0.1; nothing is reachable from other hosts by default."""
    published = []
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            published.append((name, host_ip))
    assert published, "no ports published at all"
    assert {ip for _, ip in published} == {"127.0.0.1"}, published


def test_mounted_files_exist(resolved: dict[str, Any]) -> None:
    """Every bind mount's source exists in the repository; every other volume is a declared named volume."""
    named = set(resolved.get("volumes") or {})
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith(("/", ".")):
                assert Path(source).exists(), f"{name}: {source} does not exist"
                assert Path(source).resolve().is_relative_to(REPO), f"{name}: {source} is outside the repository"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_dependencies_exist_and_wait_for_health(resolved: dict[str, Any]) -> None:
    """depends_on names real services; it waits for a healthcheck or for the one-shot init job to succeed."""
    services = resolved["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency in ONE_SHOT:
                assert spec["condition"] == "service_completed_successfully", (name, dependency)
            else:
                assert spec["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    for name in AIRFLOW_SERVICES - ONE_SHOT:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert {"postgres", "redis"} <= set(services[name]["depends_on"])


def test_long_running_services_have_healthchecks_and_restart(resolved: dict[str, Any]) -> None:
    """Every service but the init job has a healthcheck and restarts unless stopped; the init job never restarts."""
    for name, service in resolved["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
            continue
        assert service["healthcheck"]["test"], name
        assert service.get("restart") == "unless-stopped", name


def test_airflow_runs_celery_with_statsd_spark_and_the_postgres_store(resolved: dict[str, Any]) -> None:
    """Airflow uses CeleryExecutor on Redis, PostgreSQL for metadata and the tasklens store, StatsD to the exporter's
    UDP port, the Spark master's port, and a plain-SMTP connection to Mailpit."""
    services = resolved["services"]
    exporter_flags = services["statsd-exporter"]["command"]
    udp_port = next(f.rsplit(":", 1)[1] for f in exporter_flags if f.startswith("--statsd.listen-udp="))
    master_command = services["spark-master"]["command"]
    master_port = master_command[master_command.index("--port") + 1]
    secrets = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{secrets['REDIS_PASSWORD']}@redis:6379/0", name
        metadata = sa.make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (metadata.drivername, metadata.host) == ("postgresql+psycopg2", "postgres"), name
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; every URL names the driver the image has.
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://airflow:"), name
        store = sa.make_url(env["AIRFLOW__TASKLENS__STORE_URL"])
        assert (store.drivername, store.host, store.database, store.username) == (
            "postgresql+psycopg2", "postgres", "tasklens", "tasklens"
        ), name
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "true", name
        assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == (
            "statsd-exporter", udp_port
        ), name
        assert env["AIRFLOW__TASKLENS__SPARK_MASTER"] == f"spark://spark-master:{master_port}", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"], name
        smtp = json.loads(env["AIRFLOW_CONN_TASKLENS_SMTP"])
        assert (smtp["conn_type"], smtp["host"], smtp["port"]) == ("smtp", "mailpit", 1025), name
        assert smtp["extra"]["disable_ssl"] is True and smtp["extra"]["disable_tls"] is True, name
    assert services["airflow-worker"]["command"] in ("celery worker", ["celery", "worker"])


def test_init_scripts_exist_and_are_executable(raw: dict[str, Any]) -> None:
    """The init job's script and the PostgreSQL init scripts are in the repository and executable."""
    scripts = [REPO / "include" / "docker" / "airflow-init.sh", *sorted(POSTGRES_INIT.parent.glob("*.sh"))]
    assert POSTGRES_INIT in scripts
    for script in scripts:
        assert os.access(script, os.X_OK), script
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_dockerfile_builds_on_the_pinned_airflow_image_with_locked_deps() -> None:
    """The Dockerfile starts from the official image of the Airflow version and Python minor the lock file was made
    with, installs requirements.txt under constraints.txt, installs tasklens, and copies only existing paths."""
    text = DOCKERFILE.read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    assert airflow_pin
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"ARG AIRFLOW_IMAGE=apache/airflow:{airflow_pin[1]}-python{python}" in text
    assert f"ARG AIRFLOW_VERSION={airflow_pin[1]}" in text
    assert re.search(r"-r /opt/tasklens/requirements.txt -c /opt/tasklens/constraints.txt", text)
    assert "pip install --no-cache-dir --no-deps /opt/tasklens" in text
    for match in re.finditer(r"^COPY (?:--\S+ )*(?P<paths>.+)$", text, re.M):
        *sources, _target = match["paths"].split()
        for source in sources:
            assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)


def test_postgres_init_script_creates_the_store_database(postgres_server: PostgresServer) -> None:
    """The compose PostgreSQL init script, run against a real server, creates the tasklens and lakehouse roles and
    databases (idempotently), the tasklens role can create the store's schema, and other roles cannot connect."""
    env = {
        **os.environ,
        "PATH": f"{postgres_server.bindir}{os.pathsep}{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        "POSTGRES_USER": "pgadmin",
        "POSTGRES_DB": "postgres",
        "TASKLENS_DB_PASSWORD": "pa'ss word",  # quotes and spaces must not break the SQL
        "LAKEHOUSE_DB_PASSWORD": "lakehouse-secret",
    }
    for _ in range(2):
        result = subprocess.run(["bash", str(POSTGRES_INIT)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    from tasklens.store import HEAD_REVISION, Store

    store = Store(postgres_server.url("tasklens").replace("pgadmin@", "tasklens@"))
    try:
        assert store.schema_revision() == HEAD_REVISION
    finally:
        store.dispose()
    outsider = sa.create_engine(postgres_server.url("tasklens").replace("pgadmin@", "lakehouse@"))
    try:
        with pytest.raises(sa.exc.OperationalError, match="permission denied"):
            outsider.connect().close()
    finally:
        outsider.dispose()


# -- the compose stack's Airflow configuration, run for real without Docker ---------------------------------------

CELERY_DAG = '''
from airflow.sdk import dag, task


@dag(dag_id="tl_celery_stack", schedule=None, catchup=False, default_args={"retries": 0})
def tl_celery_stack():
    @task
    def extract() -> int:
        return 42

    @task
    def load(rows: int) -> None:
        raise ValueError(f"load failed after {rows} rows")

    load(extract())


tl_celery_stack()
'''

EMAIL_RULES = """
version: 1
defaults:
  group_wait: 0s
channels:
  email:
    type: email
    conn_id: tasklens_smtp
    to: [oncall@example.com]
routes:
  - name: everything
    match: {severity: info}
    channels: [email]
"""


class RedisServer:
    """redis-server on 127.0.0.1 with a password, no persistence, stopped by PID."""

    password = "celery-broker-secret"

    def __init__(self, workdir: Path) -> None:
        from tests.integration.stack import free_port

        binary = shutil.which("redis-server")
        assert binary, "redis-server missing: run `make system-deps` (Debian package redis-server)"
        self.port = free_port()
        self.workdir = workdir
        self.command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password,
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while b"+PONG" not in answer:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    answer += chunk
                return True
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        import time

        self.process = subprocess.Popen(
            self.command, stdout=open(self.workdir / "redis.log", "wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        try:
            while not self.ping():
                assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not answer PING"
                time.sleep(0.2)
        except BaseException:
            self.__exit__()  # never leave a server behind when it fails to come up
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def test_celery_executor_stack_runs_a_dag_and_alerts_by_email(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The compose stack's Airflow setup without Docker -- CeleryExecutor on a real Redis broker, metadata DB and
    tasklens store on PostgreSQL (databases made by the init script), api-server, scheduler, dag-processor and a
    Celery worker -- runs a DAG; the failed task's alert lands in the PostgreSQL store and goes out by plain SMTP."""
    import time

    from tasklens.store import Store
    from tasklens.testing import SmtpSink
    from tests.integration.stack import AIRFLOW, USERS, AirflowStack, free_port

    airflow_db = postgres_server.create_database("airflow_celery")
    init = subprocess.run(
        ["bash", str(POSTGRES_INIT)],
        env={**os.environ, "PATH": f"{postgres_server.bindir}{os.pathsep}{os.environ['PATH']}",
             "PGHOST": "127.0.0.1", "PGPORT": str(postgres_server.port), "POSTGRES_USER": "pgadmin",
             "POSTGRES_DB": "postgres", "TASKLENS_DB_PASSWORD": "x", "LAKEHOUSE_DB_PASSWORD": "y"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert init.returncode == 0 or "already exists" in init.stderr, init.stderr  # the other test may have run it
    store_url = postgres_server.url("tasklens").replace("pgadmin@", "tasklens@")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "tl_celery_stack.py").write_text(CELERY_DAG)
    rules = tmp_path / "rules.yml"
    rules.write_text(EMAIL_RULES)

    with RedisServer(tmp_path) as redis, SmtpSink() as smtp:
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__TASKLENS__STORE_URL": store_url,
            "AIRFLOW__TASKLENS__RULES_FILE": str(rules),
            "AIRFLOW__TASKLENS__DISPATCH_INTERVAL_S": "1",
            "AIRFLOW_CONN_TASKLENS_SMTP": smtp.conn_json(),
        }
        stack = AirflowStack(tmp_path / "home", dags, env)
        home = stack.home
        home.mkdir(parents=True)
        migrated = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=stack.env, capture_output=True, text=True, timeout=600, check=False
        )
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
        logs = home / "component-logs"
        logs.mkdir()
        # What the compose file runs in its Airflow containers (the worker without its log server here).
        commands = {
            "api-server": [AIRFLOW, "api-server"],
            "scheduler": [AIRFLOW, "scheduler"],
            "dag-processor": [AIRFLOW, "dag-processor"],
            "celery-worker": [AIRFLOW, "celery", "worker", "--skip-serve-logs"],
        }
        try:
            for name, command in commands.items():
                stack.processes[name] = subprocess.Popen(
                    command, env=stack.env, stdout=open(logs / f"{name}.log", "wb"),
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            deadline = time.monotonic() + 240
            while True:
                stack._check_alive()
                try:
                    if stack.request("GET", "/api/v2/monitor/health", user=None)[0] == 200:
                        break
                except OSError:  # not listening yet
                    pass
                assert time.monotonic() < deadline, "api-server did not become healthy"
                time.sleep(1)
            health = stack.api("GET", "/api/v2/monitor/health")
            run_id = stack.trigger("tl_celery_stack", timeout=180)
            assert stack.wait_for_run("tl_celery_stack", run_id, timeout=300) == "failed"
            states = stack.task_states("tl_celery_stack", run_id)
            messages = smtp.wait_for(1, timeout_s=60)
            worker_log = stack.component_log("celery-worker")
        finally:
            stack.stop()

    assert health["metadatabase"]["status"] == "healthy"
    assert states == {"extract": "success", "load": "failed"}
    assert "tl_celery_stack" in worker_log  # the tasks ran in the Celery worker, not in the scheduler
    store = Store(store_url)
    try:
        alerts = store.list_alerts(dag_id="tl_celery_stack")
    finally:
        store.dispose()
    assert [(a["task_id"], a["kind"], a["status"]) for a in alerts] == [("load", "failure", "open")]
    assert any("load" in (m["Subject"] or "") for m in messages), [m["Subject"] for m in messages]

"""A deployment that is not this repository: a venv of its own, the built wheel, ``airflow standalone``.

    wheel = build_wheel(tmp / "dist")
    make_venv(tmp / "venv", adoption_requirements())         # apache-airflow==3.3.2 + providers, from constraints.txt
    install(tmp / "venv", [wheel], CONSTRAINTS)
    with Standalone(tmp / "venv", tmp / "home", dags_folder, env={...}) as airflow:
        run_id = airflow.trigger("example_bash_decorator")

Nothing of the repository is on the venv's path: tasklens is there only as the installed wheel, found by Airflow
through its entry points, as after ``pip install tasklens``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
CACHE = REPO / ".airflow" / "compat"
#: The last release before Airflow 3.1/3.2 support and the built wheel (``tasklens db upgrade`` from it must keep
#: every alert).
PREVIOUS_RELEASE = "9c27a21"
#: What a platform team installs next to tasklens: Airflow and the providers tasklens uses.
ADOPTION_PACKAGES = (
    "apache-airflow",
    "apache-airflow-providers-slack",
    "apache-airflow-providers-smtp",
    "apache-airflow-providers-pagerduty",
    "apache-airflow-providers-opsgenie",
    "apache-airflow-providers-standard",
)
ADMIN = ("admin", "admin")
PIP = ("-m", "pip", "--disable-pip-version-check", "-q")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locked_version(package: str, constraints: Path = CONSTRAINTS) -> str:
    """``package``'s exact version in a lock file."""
    for line in constraints.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("_", "-") == package.lower():
            return version.strip()
    raise LookupError(f"{package} is not in {constraints}")


def adoption_requirements(constraints: Path = CONSTRAINTS) -> list[str]:
    """``apache-airflow==<locked>`` and the locked providers tasklens uses."""
    return [f"{package}=={locked_version(package, constraints)}" for package in ADOPTION_PACKAGES]


def _run(cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def build_wheel(outdir: Path, source: Path = REPO, python: str = sys.executable, *, check_deps: bool = True) -> Path:
    """The wheel ``make dist`` builds from ``source`` (a checkout), into ``outdir``.

    ``check_deps=False`` skips the check of the source's declared build requirements (an older release still
    declares ``wheel``, which the locked setuptools no longer needs).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    flags = [] if check_deps else ["--skip-dependency-check"]
    _run([python, "-m", "build", "--wheel", "--no-isolation", *flags, "--outdir", str(outdir), str(source)],
         timeout=300)
    wheels = sorted(outdir.glob("tasklens-*.whl"), key=lambda path: path.stat().st_mtime)
    return wheels[-1]


def _clean_env() -> dict[str, str]:
    """This process's environment without anything pointing at the project's venv, code or Airflow config."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }


def make_venv(venv: Path, requirements: Iterable[str], constraints: Path = CONSTRAINTS,
              python: str | None = None, timeout: float = 900) -> Path:
    """A fresh venv at ``venv`` with exactly ``requirements`` (and what they need) pinned by ``constraints``."""
    base = python or getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], timeout=120)
    install(venv, requirements, constraints, timeout=timeout)
    return venv / "bin" / "python"


def install(venv: Path, requirements: Iterable[str | Path], constraints: Path | None = CONSTRAINTS,
            timeout: float = 900, *, upgrade: bool = False) -> None:
    """``pip install`` into ``venv`` (pip's cache is used; the lock pins every version).

    ``--no-compile``: Python compiles what it imports on first use; compiling all of Airflow up front is a third of
    the install time.
    """
    cmd = [str(venv / "bin" / "python"), *PIP, "install", "--no-compile"]
    if upgrade:
        cmd.append("--upgrade")
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    _run([*cmd, *map(str, requirements)], timeout=timeout, env=_clean_env())


def build_release_wheel(commit: str, outdir: Path) -> Path:
    """The wheel of ``commit``'s tree (``git archive``: nothing is checked out or registered in this repository)."""
    source = outdir / f"src-{commit}"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True,
                             timeout=120, check=False)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed (a shallow clone?): {archive.stderr.decode()[-2000:]}")
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=120)
    return build_wheel(outdir / f"dist-{commit}", source, check_deps=False)


def cached_venv(name: str, requirements: Sequence[str], constraints: Path = CONSTRAINTS) -> Path:
    """A venv under ``.airflow/compat/`` with ``requirements``, rebuilt only when they or the lock change (for tests
    that need a foreign installation but do not time its install)."""
    venv = CACHE / name
    digest = hashlib.sha256("\n".join([*requirements, constraints.read_text()]).encode()).hexdigest()
    stamp = venv / ".tasklens-compat"
    if not (stamp.exists() and stamp.read_text() == digest and (venv / "bin" / "python").exists()):
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        make_venv(venv, requirements, constraints)
        stamp.write_text(digest)
    return venv


def install_tasklens(venv: Path, wheel: Path, constraints: Path = CONSTRAINTS) -> None:
    """Exactly ``wheel`` as tasklens in ``venv``, whatever an earlier run left there (an older or a rebuilt wheel of
    the same version); its dependencies from the lock."""
    _run([str(venv / "bin" / "python"), *PIP, "uninstall", "-y", "tasklens"], timeout=120, env=_clean_env())
    install(venv, [wheel], constraints)


def installed_version(venv: Path, package: str = "tasklens") -> str:
    """The version of ``package`` installed in ``venv`` (read there, nothing of this process's path leaking in)."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, env=_clean_env())
    return done.stdout.strip()


class Standalone:
    """``airflow standalone`` from ``venv`` in its own AIRFLOW_HOME, on 127.0.0.1, stopped by PID.

    Users: SimpleAuthManager ``admin``/``admin``. ``env`` adds or overrides variables (connections,
    ``[tasklens]`` keys). The triggerer leaves standalone's process group: every descendant is stopped too.
    """

    def __init__(self, venv: Path, home: Path, dags_folder: Path, env: Mapping[str, str] | None = None) -> None:
        self.venv = Path(venv)
        self.home = Path(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **_clean_env(),
            # standalone starts its components as `airflow ...` from PATH.
            "PATH": os.pathsep.join([str(self.venv / "bin"), os.environ.get("PATH", "")]),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN[0]}:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "standalone.log"
        self._token: str | None = None

    def __enter__(self) -> Standalone:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """One ``airflow`` (or, with ``args[0] == "tasklens"``, ``tasklens``) command with this installation's env."""
        program = "tasklens" if args and args[0] == "tasklens" else "airflow"
        argv = list(args[1:]) if program == "tasklens" else list(args)
        return subprocess.run([str(self.venv / "bin" / program), *argv], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, timeout: float = 300) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({ADMIN[0]: ADMIN[1]}))
        log = open(self.log_path, "ab")  # the child keeps its own descriptor
        self.process = subprocess.Popen([str(self.venv / "bin" / "airflow"), "standalone"], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"airflow standalone was not healthy after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT, SIGTERM, then SIGKILL standalone's group (it can hang while shutting down); then any survivor."""
        if self.process is None:
            return
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=grace)
        survivors = [proc for proc in descendants if proc.is_running()]
        for proc in survivors:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(survivors, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # REST API ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        """Call the api-server as ``admin`` (``auth=False``: anonymous); returns (status, parsed JSON or text)."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": ADMIN[0], "password": ADMIN[1]}).encode()
            req = urllib.request.Request(f"{self.url}/auth/token", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._token = str(json.loads(resp.read())["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.request(method, path, body)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {payload}")
        return payload

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, timeout: float = 180) -> str:
        """Wait until ``dag_id`` is parsed, unpause and trigger it; returns the run id."""
        deadline = time.monotonic() + timeout
        while self.request("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} was not parsed within {timeout}s:\n{self.log_tail()}")
            time.sleep(1)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": dict(conf or {})})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id}/{run_id} did not finish within {timeout}s:\n{self.log_tail()}")


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)

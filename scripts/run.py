"""`make run`: Airflow standalone on 127.0.0.1 with tasklens, the DAGs and a local SMTP sink.

Everything lives under .airflow/ (git-ignored). Ctrl-C stops everything this script started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from email import message_from_bytes
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".airflow"
HOST = "127.0.0.1"
PORT = int(os.environ.get("TASKLENS_RUN_PORT", "8080"))
SMTP_PORT = int(os.environ.get("TASKLENS_SMTP_PORT", "8025"))
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def fail(message: str) -> None:
    print(f"make run: {message}", file=sys.stderr)
    sys.exit(1)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def preflight() -> None:
    for port, what, var in ((PORT, "Airflow UI", "TASKLENS_RUN_PORT"), (SMTP_PORT, "SMTP sink", "TASKLENS_SMTP_PORT")):
        if port_in_use(port):
            fail(
                f"port {HOST}:{port} for the {what} is already in use (another `make run` or Airflow?). "
                f"Stop that process, or pick another port: {var}=<port> make run"
            )
    if shutil.which("java") is None:
        print(
            "make run: warning: Java was not found, so the lakehouse Spark DAGs will fail. "
            "Install a JRE 17 (apt-get install openjdk-17-jre-headless) and run make run again.",
            file=sys.stderr,
        )


def admin_password() -> str:
    """Reuse the generated password across runs; create one the first time."""
    path = HOME / "simple_auth_manager_passwords.json.generated"
    if path.exists():
        passwords = json.loads(path.read_text() or "{}")
        if passwords.get("admin"):
            return str(passwords["admin"])
    passwords = {"admin": secrets.token_urlsafe(12)}
    path.write_text(json.dumps(passwords))
    path.chmod(0o600)
    return passwords["admin"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    base_url = f"http://{HOST}:{PORT}"
    smtp_conn = {
        "conn_type": "smtp",
        "host": HOST,
        "port": SMTP_PORT,
        "extra": {
            "disable_ssl": True,
            "disable_tls": True,
            "from_email": "tasklens@localhost",
            "to": "oncall@localhost",
        },
    }
    env.update(
        {
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW_CONN_TASKLENS_SMTP": json.dumps(smtp_conn),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "plugins"), str(REPO), env.get("PYTHONPATH")) if p),
            # standalone starts its components as `airflow ...` from PATH: make it this venv's.
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
        }
    )
    # Without Slack, route every alert to the local mail sink instead of failing over from a missing connection.
    if "AIRFLOW__TASKLENS__RULES_FILE" not in os.environ and "AIRFLOW_CONN_TASKLENS_SLACK" not in os.environ:
        env["AIRFLOW__TASKLENS__RULES_FILE"] = str(REPO / "include" / "tasklens_rules.local.yml")
    return env


class MailDir:
    """aiosmtpd handler: every message received is written to .airflow/mail/<n>.eml."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}.eml"
        (self.folder / name).write_bytes(envelope.content)
        subject = message_from_bytes(envelope.content).get("Subject", "")
        print(f"[smtp] mail to {', '.join(envelope.rcpt_tos)}: {subject} -> .airflow/mail/{name}", flush=True)
        return "250 Message accepted for delivery"


def wait_until_ready(proc: subprocess.Popen[bytes], timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{PORT}/api/v2/monitor/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


def main() -> None:
    preflight()
    HOME.mkdir(exist_ok=True)
    password = admin_password()
    env = environment()

    from aiosmtpd.controller import Controller

    smtp = Controller(MailDir(HOME / "mail"), hostname=HOST, port=SMTP_PORT)
    smtp.start()
    standalone = subprocess.Popen([AIRFLOW, "standalone"], env=env, start_new_session=True)

    def stop(*_: object) -> None:
        # Some components (the triggerer) leave standalone's process group: remember every descendant first.
        try:
            descendants = psutil.Process(standalone.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        # standalone can hang in "Shutting down components" after its children exit: escalate.
        for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if standalone.poll() is not None:
                break
            try:
                os.killpg(standalone.pid, sig)
                standalone.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        survivors = [p for p in descendants if p.is_running()]
        for proc in survivors:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(survivors, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        smtp.stop()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stopping_requested = False
    try:
        ready = threading.Event()
        if wait_until_ready(standalone):
            ready.set()
            print(
                "\n"
                f"  tasklens is up:   http://{HOST}:{PORT}   (login: admin / {password})\n"
                f"  Alerts page:      http://{HOST}:{PORT}/tasklens/alerts\n"
                f"  alert store:      {HOME / 'tasklens.db'}\n"
                f"  event stream:     {HOME / 'logs' / 'tasklens' / 'events.jsonl'}\n"
                f"  mail (SMTP sink): {HOME / 'mail'}/  (smtp://{HOST}:{SMTP_PORT}, connection tasklens_smtp)\n"
                f"  rules:            {env.get('AIRFLOW__TASKLENS__RULES_FILE', 'built-in (Slack + email)')}\n"
                "  Slack:            set AIRFLOW_CONN_TASKLENS_SLACK to a webhook connection to get Slack messages\n"
                "  Ctrl-C stops everything.\n",
                flush=True,
            )
        else:
            print("make run: Airflow did not become healthy; see the output above.", file=sys.stderr)
        standalone.wait()
    except KeyboardInterrupt:
        stopping_requested = True
        print("\nmake run: stopping Airflow and the SMTP sink...", flush=True)
    finally:
        stop()
    # Stopped by Ctrl-C / SIGTERM (ours) is a clean exit; standalone failing on its own is not.
    sys.exit(0 if stopping_requested or standalone.returncode in (0, None) else 1)


if __name__ == "__main__":
    main()

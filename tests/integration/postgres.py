"""A throwaway PostgreSQL server for integration tests: ``initdb`` + ``pg_ctl`` from the Debian packages.

The cluster lives in a temp dir (data and unix socket), listens on 127.0.0.1 on a free port, trusts local
connections and is stopped with ``pg_ctl stop -m fast`` (then its postmaster PID is killed if it is still up).
PostgreSQL refuses to run as root, so when the tests run as root the server runs as the ``postgres`` system
user (``runuser``), which the Debian ``postgresql`` package creates.

>>> with PostgresServer() as pg:
...     engine = sqlalchemy.create_engine(pg.url("tasklens"))
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "pgadmin"


def find_bindir() -> Path:
    """Bin dir of the newest PostgreSQL in ``/usr/lib/postgresql/<major>/bin``, else the one of ``pg_ctl`` on PATH."""
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        majors = sorted((p for p in root.iterdir() if (p / "bin" / "pg_ctl").exists()), key=lambda p: int(p.name))
        if majors:
            return majors[-1] / "bin"
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("PostgreSQL server binaries not found: install them with `apt-get install -y postgresql`")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp dir on 127.0.0.1, stopped by PID when the block ends."""

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self.bindir = find_bindir()
        self.start_timeout = start_timeout
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tasklens-pg-"))
        self.datadir = self.root / "data"
        self.socketdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.pid: int | None = None
        self._run_as = "postgres" if os.geteuid() == 0 else None

    # -- helpers ------------------------------------------------------------------------------------------

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *cmd] if self._run_as else cmd

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._cmd(*args), capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of ``database`` over TCP on 127.0.0.1."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq DSN of ``database`` (for psycopg2.connect)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database} connect_timeout=10"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        self.socketdir.mkdir(parents=True)
        if self._run_as:
            user = pwd.getpwnam(self._run_as)
            for path in (self.root, self.socketdir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socketdir} "
            # Throwaway cluster: durability off, small footprint on a shared 2-core machine.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100 -c shared_buffers=32MB"
        )
        self._run(
            "pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options,
            "-w", "-t", str(int(self.start_timeout)),
            timeout=self.start_timeout + 10,
        )
        self.pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        self._wait_ready()

    def pause(self) -> None:
        """Stop the server but keep its data (clients get "connection refused") until :meth:`resume`."""
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", timeout=40)

    def resume(self) -> None:
        """Start the server again on the same port with the same data."""
        self._pg_ctl_start()

    def _wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                psycopg2.connect(self.dsn()).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections:\n{self.log_tail()}") from None
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (as the compose init script does); returns its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(self.dsn())
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def is_running(self) -> bool:
        if self.pid is None:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a stopped postmaster may linger as a zombie

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; SIGKILL the postmaster by PID if it survives; remove the temp dir."""
        try:
            if self.pid is not None and self.is_running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", timeout=40)
                if self.is_running():
                    os.kill(self.pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by one test module."""
    with PostgresServer() as server:
        yield server

"""`make run` fails with one clear sentence on bad input instead of a traceback wall."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import REPO


def test_port_in_use_is_one_clear_sentence():
    """A busy UI port ends `make run` before anything starts, naming the port and the fix."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "run.py")],
            env={"TASKLENS_RUN_PORT": str(port), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert "TASKLENS_RUN_PORT=" in result.stderr
    assert "Traceback" not in result.stderr

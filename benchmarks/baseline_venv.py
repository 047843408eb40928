"""The overhead benchmarks' baseline: Airflow exactly as in ``.venv``, without tasklens.

A copy of the project's ``.venv`` with tasklens uninstalled (its ``airflow.plugins`` and ``airflow.policy`` entry
points go with it), kept under ``.airflow/bench/`` and rebuilt when the lock changes. Processes of both variants run
with an empty plugins folder and no ``plugins/`` on ``PYTHONPATH``: tasklens is present only as the installed
package, as after ``pip install tasklens``. :func:`baseline_python` checks that ``import tasklens`` fails there and
that ``airflow plugins`` lists nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
BASELINE = REPO / ".airflow" / "bench" / "baseline-venv"


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("constraints.txt", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()


def baseline_python() -> Path:
    """The baseline venv's interpreter, built (copy + ``pip uninstall tasklens``) when missing or stale."""
    stamp = BASELINE / ".tasklens-baseline"
    python = BASELINE / "bin" / "python"
    if not (stamp.exists() and stamp.read_text() == _lock_digest() and python.exists()):
        shutil.rmtree(BASELINE, ignore_errors=True)
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the baseline venv (a copy of .venv without tasklens) in {BASELINE} ...", flush=True)
        shutil.copytree(VENV, BASELINE, symlinks=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "tasklens"], check=True)
        stamp.write_text(_lock_digest())
    return python


def clean_env(env: Mapping[str, str], plugins_folder: Path) -> dict[str, str]:
    """``env`` with tasklens reachable only as an installed package: no repo paths, an empty plugins folder."""
    plugins_folder.mkdir(parents=True, exist_ok=True)
    cleaned = dict(env)
    cleaned["PYTHONPATH"] = str(REPO / "include")  # the DAGs' own helpers only; tasklens is not there
    cleaned["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder)
    return cleaned


def check_baseline(python: Path, env: Mapping[str, str]) -> None:
    """Fail loudly unless the baseline really has no tasklens: no import, no plugin."""
    probe = subprocess.run([str(python), "-c", "import tasklens"], env=dict(env), capture_output=True, text=True,
                           timeout=120, check=False)
    if probe.returncode == 0:
        raise SystemExit(f"baseline venv {BASELINE} still imports tasklens")
    plugins = subprocess.run([str(python), "-m", "airflow", "plugins", "--output", "json"], env=dict(env),
                             capture_output=True, text=True, timeout=300, check=False)
    listed = json.loads(plugins.stdout or "[]") if plugins.returncode == 0 and plugins.stdout.strip().startswith(
        "[") else None
    if listed is None:
        # `airflow plugins` prints "No plugins loaded" (not JSON) when there are none.
        if "No plugins loaded" not in plugins.stdout + plugins.stderr:
            raise SystemExit(f"`airflow plugins` in the baseline failed:\n{plugins.stdout}\n{plugins.stderr}")
    elif listed:
        raise SystemExit(f"the baseline still loads plugins: {[p.get('name') for p in listed]}")

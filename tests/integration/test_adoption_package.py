"""What ``make dist`` ships: the wheel and sdist that ``python -m build`` makes, their metadata and their files."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import tasklens
from tests.integration.stack import REPO

pytestmark = pytest.mark.integration

PACKAGE = REPO / "plugins" / "tasklens"
SUPPORTED_AIRFLOW = ["3.1.8", "3.2.2", "3.3.2"]
UNSUPPORTED_AIRFLOW = ["2.11.0", "3.0.6", "3.4.0"]


def build_dist(outdir: Path) -> tuple[Path, Path]:
    """``python -m build`` as ``make dist`` runs it (sdist, then the wheel built from that sdist)."""
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = outdir.glob("tasklens-*.whl")
    (sdist,) = outdir.glob("tasklens-*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> tuple[Path, Path]:
    return build_dist(tmp_path_factory.mktemp("dist"))


def package_files(root: Path) -> set[str]:
    """Every file the package ships, relative to plugins/ (sources, templates, migrations, UI static files)."""
    return {
        str(path.relative_to(root.parent))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_wheel_metadata_is_trustworthy(dist):
    """Name, the version from tasklens.__version__, the SPDX license with its text, Python and Airflow ranges as
    dependency specifiers that admit 3.1.8, 3.2.2 and 3.3.2 only, and classifiers including Typing :: Typed."""
    wheel, _ = dist
    assert wheel.name == f"tasklens-{tasklens.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        info = f"tasklens-{tasklens.__version__}.dist-info"
        meta = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        assert f"{info}/licenses/LICENSE" in archive.namelist()
    assert meta["Name"] == "tasklens"
    assert meta["Version"] == tasklens.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    requirements = {req.name: req for req in map(Requirement, meta.get_all("Requires-Dist"))}
    airflow = requirements["apache-airflow"].specifier
    assert all(airflow.contains(version) for version in SUPPORTED_AIRFLOW), airflow
    assert not any(airflow.contains(version) for version in UNSUPPORTED_AIRFLOW), airflow
    assert {"apache-airflow-providers-slack", "apache-airflow-providers-smtp", "structlog"} <= requirements.keys()
    classifiers = meta.get_all("Classifier")
    assert {"Framework :: Apache Airflow", "Typing :: Typed", "Programming Language :: Python :: 3.12"} <= set(
        classifiers
    )
    assert "tasklens gives every task" in meta.get_payload()  # the README is the long description


def test_wheel_declares_both_airflow_entry_points_and_the_cli(dist):
    """Airflow finds the plugin (``airflow.plugins``) and the cluster policy (``airflow.policy``) of an installed
    wheel, and both entry points name objects that exist in the package."""
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"tasklens-{tasklens.__version__}.dist-info/entry_points.txt").decode()
    assert "[airflow.plugins]\ntasklens = tasklens.plugin:TasklensPlugin" in entry_points
    assert "[airflow.policy]\ntasklens = tasklens.policy" in entry_points
    assert "[console_scripts]\ntasklens = tasklens.__main__:main" in entry_points


def test_wheel_ships_every_package_file(dist):
    """Every file of plugins/tasklens (py.typed, message templates, Alembic migrations, UI templates and static
    files) is in the wheel, and nothing outside the package is (no tests, DAGs or drop-in plugin module)."""
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if not name.startswith("tasklens-")}
    expected = package_files(PACKAGE)
    assert expected - shipped == set()
    assert shipped - expected == set()
    for must in ("tasklens/py.typed", "tasklens/templates/failure.j2", "tasklens/migrations/env.py",
                 "tasklens/migrations/versions/0001_initial.py", "tasklens/ui/static/tasklens.js",
                 "tasklens/ui/templates/alerts.html"):
        assert must in shipped


def test_sdist_rebuilds_the_same_package(dist):
    """The sdist carries the license, the README, pyproject.toml and every package file under plugins/."""
    _, sdist = dist
    root = f"tasklens-{tasklens.__version__}"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{root}/") for name in archive.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    assert {f"plugins/{name}" for name in package_files(PACKAGE)} <= names

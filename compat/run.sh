#!/usr/bin/env bash
# make test-compat: the compatibility suite on each older supported Airflow minor (default: 3.1 and 3.2), each in a
# venv of its own built from the committed locks (compat/requirements-<minor>.txt + compat/constraints-<minor>.txt)
# with the wheel `make dist` builds. Airflow 3.3 is the project's own .venv: `make test` runs the same suite there.
# A stamp skips the venv install when its lock did not change. Prints the seconds each minor took.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "tasklens test-compat: $*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
MINORS=${TASKLENS_COMPAT_MINORS:-3.1 3.2}
SUITE=(tests/integration/test_compat_scheduler.py tests/unit/tasklens/test_airflow_compat.py)
ROOT=.airflow/compat

BUILD_PYTHON=${BUILD_PYTHON:-.venv/bin/python}  # the project venv (make setup): it has build and the locked setuptools
rm -rf "$ROOT/dist"
"$BUILD_PYTHON" -m build --wheel --no-isolation --outdir "$ROOT/dist" . >/dev/null 2>&1 \
  || die "building the wheel failed (run make dist to see why)."
rm -rf build
wheel=$(ls "$ROOT"/dist/tasklens-*.whl)

status=0
for minor in $MINORS; do
  requirements=compat/requirements-$minor.txt
  constraints=compat/constraints-$minor.txt
  [ -f "$requirements" ] && [ -f "$constraints" ] || die "no lock for Airflow $minor ($requirements, $constraints)."
  venv=$ROOT/venv-$minor
  stamp=$venv/.tasklens-compat
  want=$(cat "$requirements" "$constraints" | sha256sum | cut -d' ' -f1)
  started=$(date +%s)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c 'import airflow' >/dev/null 2>&1; then
    echo "tasklens test-compat: building the Airflow $minor venv in $venv ..."
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" || die "could not create $venv."
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile -c "$constraints" -r "$requirements" \
      || die "installing $requirements with $constraints failed (see pip's message above)."
    echo "$want" > "$stamp"
  fi
  # tasklens itself as users get it: the wheel, its dependencies checked against this Airflow's lock.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel" \
    || die "installing $wheel into $venv failed."
  "$venv/bin/python" -m pip check >/dev/null || die "$("$venv/bin/python" -m pip check)"
  installed=$(date +%s)
  echo "== Airflow $("$venv/bin/python" -c 'import airflow; print(airflow.__version__)' 2>/dev/null): compatibility suite"
  if ! PYTHONPATH= "$venv/bin/python" -m pytest "${SUITE[@]}" -p no:cacheprovider -q ${PYTEST_ARGS:-}; then
    status=1
  fi
  echo "tasklens test-compat: Airflow $minor took $((installed - started)) s to set up, $(($(date +%s) - installed)) s to test"
done
exit $status

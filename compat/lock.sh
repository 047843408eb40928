#!/usr/bin/env bash
# make lock-compat: resolve compat/requirements-<minor>.txt in a fresh venv per minor and freeze the result into
# compat/constraints-<minor>.txt (what make test-compat installs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
for requirements in compat/requirements-*.txt; do
  minor=${requirements#compat/requirements-}; minor=${minor%.txt}
  venv=$(mktemp -d)/venv
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  { echo "# Locked from a working venv with: pip freeze --all (make lock-compat). Install with: pip install -c compat/constraints-$minor.txt -r compat/requirements-$minor.txt"
    "$venv/bin/python" -m pip freeze --all | grep -v '^-e\|^tasklens\|^pip=='; } > "compat/constraints-$minor.txt"
  rm -rf "$(dirname "$venv")"
  echo "compat/constraints-$minor.txt: $(grep -c == "compat/constraints-$minor.txt") pins"
done

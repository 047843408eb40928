#!/usr/bin/env bash
# Create .venv and install the locked Python dependencies when they are missing or stale.
# Used by every make target; safe to run again (a stamp skips work when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "tasklens setup: $*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "python3 was not found. Install Python 3.10-3.12 (e.g. apt-get install python3 python3-venv) and run make again."
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' \
  || die "$("$PYTHON" -V 2>&1) is not supported; Airflow 3.3 here needs Python 3.10-3.12. Set PYTHON=/path/to/python3.11 and run make again."

if [ -d .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  echo "tasklens setup: .venv is broken (its Python does not start); recreating it." >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || die "could not create .venv. On Debian/Ubuntu install python3-venv (apt-get install python3-venv) and run make again."
fi

stamp=.venv/.tasklens-installed
want=$(cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c 'import airflow, tasklens' >/dev/null 2>&1; then
  exit 0
fi

echo "tasklens setup: installing locked dependencies into .venv (a few minutes the first time)..."
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24" \
  || die "pip could not upgrade itself; check network access to PyPI."
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt \
  || die "installing requirements-dev.txt with constraints.txt failed (see pip's message above)."
# The Spark provider requires pyspark-client (Spark Connect only, newest 4.2.0), which ships files of the same
# `pyspark` package and can overwrite pyspark 4.3.0's (Python UDFs then break): reinstall pyspark last.
if [ "$(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)' 2>/dev/null)" != "$(sed -n 's/^pyspark==//p' constraints.txt)" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall -c constraints.txt pyspark \
    || die "reinstalling pyspark over pyspark-client's files failed (see pip's message above)."
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . \
  || die "installing the tasklens package (pip install -e .) failed."
echo "$want" > "$stamp"

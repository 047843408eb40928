#!/usr/bin/env bash
# The compose stack's one-shot init job: migrate Airflow's metadata DB, set the UI admin password, migrate and
# check the tasklens store. Every step is idempotent; the other Airflow services start after it exits 0.
set -euo pipefail

: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD (see .env.example)}"

echo "tasklens init: airflow db migrate"
airflow db migrate

# SimpleAuthManager reads passwords from this file (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE) and only
# generates one for users missing from it; writing it here makes the admin password the one from .env.
passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-/opt/airflow/auth/passwords.json}"
mkdir -p "$(dirname "${passwords_file}")"
python - "${passwords_file}" <<'PY'
import json, os, sys
path = sys.argv[1]
with open(path + ".tmp", "w") as handle:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
os.chmod(path + ".tmp", 0o600)
os.replace(path + ".tmp", path)
PY

# Migrates the alert store (tasks, the scheduler and the dag-processor never do; the api-server also does at start),
# then validates [tasklens] and the rules file.
echo "tasklens init: python -m tasklens db upgrade"
python -m tasklens db upgrade
echo "tasklens init: python -m tasklens check-config"
python -m tasklens check-config

mkdir -p /opt/airflow/logs/tasklens /opt/lakehouse
echo "tasklens init: done"

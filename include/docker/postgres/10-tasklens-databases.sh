#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data directory (docker-entrypoint-initdb.d).
# Airflow's metadata DB (POSTGRES_DB, owned by POSTGRES_USER) is created by the image itself; this adds:
#   tasklens   - the tasklens alert store, owned by role "tasklens"   ([tasklens] store_url)
#   lakehouse  - where the lakehouse DAGs publish gold tables, role "lakehouse" (connection lakehouse_sql)
# Passwords come from the environment (.env); psql variables keep them out of the SQL text.
set -euo pipefail

: "${TASKLENS_DB_PASSWORD:?set TASKLENS_DB_PASSWORD (see .env.example)}"
: "${LAKEHOUSE_DB_PASSWORD:?set LAKEHOUSE_DB_PASSWORD (see .env.example)}"

create_database() {
  local name="$1" password="$2"
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB:-${POSTGRES_USER}}" \
    -v name="${name}" -v password="${password}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
  echo "tasklens init: database ${name} ready"
}

create_database tasklens "${TASKLENS_DB_PASSWORD}"
create_database lakehouse "${LAKEHOUSE_DB_PASSWORD}"

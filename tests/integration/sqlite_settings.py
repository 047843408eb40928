"""Connection arguments for the integration stacks' SQLite metadata DBs, imported by Airflow through
``[database] sql_alchemy_connect_args``.

SQLite serialises writers even in WAL mode. With the scheduler, the dag-processor and the api-server writing
at once on a loaded 2-core machine, a write can wait longer than sqlite3's default 5 s busy timeout, and the
api-server then answers HTTP 500 "Database error" (a PATCH that unpauses a DAG, seen in CI). PostgreSQL waits
on a row lock instead; 60 s gives SQLite the same patience.
"""

CONNECT_ARGS = {"timeout": 60}

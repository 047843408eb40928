"""Fixtures of the fault suite: a Slack sink, PID markers, and real stacks (SQLite store; PostgreSQL store)."""

from __future__ import annotations

from itertools import count

import pytest

from tasklens.testing import SlackSink
from tests.faults.harness import StallingProxy
from tests.faults.scenarios import DAGS, stack_env
from tests.integration.observability import StatsdSink
from tests.integration.postgres import PostgresServer
from tests.integration.stack import AirflowStack


@pytest.fixture(scope="module")
def slack():
    with SlackSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def statsd():
    sink = StatsdSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory, slack, markers, statsd):
    """Scheduler, dag-processor and api-server with the default SQLite store; StatsD to ``statsd``."""
    env = stack_env(slack, markers, {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
    })
    with AirflowStack(tmp_path_factory.mktemp("faults-sqlite"), DAGS, env) as stack:
        yield stack


_databases = count()


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_proxy(postgres):
    with StallingProxy(postgres.port) as proxy:
        yield proxy


@pytest.fixture
def postgres_stack(tmp_path_factory, slack, markers, postgres, postgres_proxy):
    """A stack whose tasklens store is a fresh PostgreSQL database, reached through a proxy that can stop answering.

    One per test: a store that kept the previous test's open alerts would fold this test's failures into them (one
    more occurrence, no new message)."""
    database = f"tasklens_{next(_databases)}"
    postgres.create_database(database)
    store_url = f"postgresql+psycopg2://pgadmin@127.0.0.1:{postgres_proxy.port}/{database}"
    env = stack_env(slack, markers, {"AIRFLOW__TASKLENS__STORE_URL": store_url})
    with AirflowStack(tmp_path_factory.mktemp("faults-postgres"), DAGS, env) as stack:
        yield stack

"""Integration DAGs (incidents): two DAGs fail from one warehouse outage, a third with an unrelated KeyError; the
first has an upstream_failed chain whose last task produces an asset another DAG is scheduled on."""

from __future__ import annotations

from airflow.sdk import Asset, dag, task

SALES_MART = Asset("tl_incident_sales_mart", uri="file:///tmp/tl_incident/sales_mart")
WAREHOUSE_DOWN = ('could not connect to server: Connection refused\n\tIs the server running on host "wh.internal" '
                  "({ip}) and accepting\n\tTCP/IP connections on port {port}?")


class OperationalError(Exception):
    """Stands in for psycopg2.OperationalError (no warehouse here): same type name, same message."""


@dag(dag_id="tl_incident_sales", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_incident_sales():
    @task
    def load() -> None:
        raise OperationalError(WAREHOUSE_DOWN.format(ip="10.0.0.5", port=5432))

    @task
    def transform() -> None:
        pass

    @task(outlets=[SALES_MART])
    def publish() -> None:
        pass

    load() >> transform() >> publish()


@dag(dag_id="tl_incident_finance", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_incident_finance():
    @task
    def load() -> None:
        raise OperationalError(WAREHOUSE_DOWN.format(ip="10.0.0.6", port=6432))

    load()


@dag(dag_id="tl_incident_ml", schedule=None, catchup=False, tags=["tasklens-test"], default_args={"retries": 0})
def tl_incident_ml():
    @task
    def features() -> None:
        raise KeyError("customer_id")

    features()


@dag(dag_id="tl_incident_datamart", schedule=[SALES_MART], catchup=False, tags=["tasklens-test"])
def tl_incident_datamart():
    @task
    def build() -> None:
        pass

    build()


tl_incident_sales()
tl_incident_finance()
tl_incident_ml()
tl_incident_datamart()

"""Integration DAG (hostile exceptions): each task fails with an exception tasklens must still report whole."""

from __future__ import annotations

from airflow.sdk import dag, task


class UnprintableError(Exception):
    """Its ``__str__`` raises, as some library exceptions' do when their state is broken."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of UnprintableError exploded")


def _parse_rows(size: int) -> None:
    raise ValueError("row parse failed: " + "x" * size)


def _decode_path() -> None:
    undecodable = b"/data/\xff\xfe-orders.csv".decode("utf-8", errors="surrogateescape")
    raise OSError(f"cannot open {undecodable} \ud800 (lone surrogate)")


@dag(dag_id="tl_hostile_exceptions", schedule=None, catchup=False, tags=["tasklens-test"],
     default_args={"retries": 0})
def tl_hostile_exceptions():
    @task
    def str_raises() -> None:
        raise UnprintableError("state is broken")

    @task
    def megabyte_message() -> None:
        _parse_rows(1_000_000)

    @task
    def invalid_utf8() -> None:
        _decode_path()

    str_raises()
    megabyte_message()
    invalid_utf8()


tl_hostile_exceptions()

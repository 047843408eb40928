"""Declared schemas: what the upstream system promises to deliver, and what each layer holds.

Columns are declared as plain tuples ``(name, spark type, required)`` so that DAG files and the landing helper
can read them without importing PySpark; :func:`spark_schema` builds the ``StructType``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

__all__ = [
    "FLIGHTS",
    "FLIGHT_KEY",
    "REFERENCE",
    "column_names",
    "required_columns",
    "spark_schema",
]

Column = tuple[str, str, bool]

#: Monthly flights extract from the upstream system (one CSV per month). ``required`` columns may not be empty:
#: a row missing one of them is a broken delivery (truncation, misaligned columns), not a cancelled flight.
FLIGHTS: tuple[Column, ...] = (
    ("year", "int", True),
    ("month", "int", True),
    ("day", "int", True),
    ("dep_time", "int", False),  # empty for cancelled flights
    ("sched_dep_time", "int", True),
    ("dep_delay", "double", False),
    ("arr_time", "int", False),
    ("sched_arr_time", "int", True),
    ("arr_delay", "double", False),
    ("carrier", "string", True),
    ("flight", "int", True),
    ("tailnum", "string", False),
    ("origin", "string", True),
    ("dest", "string", True),
    ("air_time", "double", False),
    ("distance", "double", True),
    ("hour", "int", True),
    ("minute", "int", True),
    ("time_hour", "timestamp", True),
)

#: One flight: a carrier's flight number leaving an airport at a scheduled minute of a day.
FLIGHT_KEY: tuple[str, ...] = ("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time")

REFERENCE: dict[str, tuple[Column, ...]] = {
    "weather": (
        ("origin", "string", True),
        ("year", "int", True),
        ("month", "int", True),
        ("day", "int", True),
        ("hour", "int", True),
        ("temp", "double", False),
        ("dewp", "double", False),
        ("humid", "double", False),
        ("wind_dir", "double", False),
        ("wind_speed", "double", False),
        ("wind_gust", "double", False),
        ("precip", "double", False),
        ("pressure", "double", False),
        ("visib", "double", False),
        ("time_hour", "timestamp", True),
    ),
    "planes": (
        ("tailnum", "string", True),
        ("year", "int", False),
        ("type", "string", False),
        ("manufacturer", "string", False),
        ("model", "string", False),
        ("engines", "int", False),
        ("seats", "int", False),
        ("speed", "double", False),
        ("engine", "string", False),
    ),
    "airports": (
        ("faa", "string", True),
        ("name", "string", False),
        ("lat", "double", False),
        ("lon", "double", False),
        ("alt", "double", False),
        ("tz", "double", False),
        ("dst", "string", False),
        ("tzone", "string", False),
    ),
    "airlines": (
        ("carrier", "string", True),
        ("name", "string", False),
    ),
}


def column_names(columns: tuple[Column, ...]) -> list[str]:
    return [name for name, _, _ in columns]


def required_columns(columns: tuple[Column, ...]) -> list[str]:
    return [name for name, _, required in columns if required]


def spark_schema(columns: tuple[Column, ...]) -> StructType:
    """The ``StructType`` for ``columns`` (everything nullable: requiredness is checked, not trusted)."""
    from pyspark.sql import types as T

    by_name = {
        "int": T.IntegerType(),
        "double": T.DoubleType(),
        "string": T.StringType(),
        "timestamp": T.TimestampType(),
    }
    return T.StructType([T.StructField(name, by_name[kind], True) for name, kind, _ in columns])

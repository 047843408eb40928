"""Small file helpers shared by the jobs (atomic JSON state, reading reference tables)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse import Layout, schemas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["read_json", "read_reference", "typed", "write_json"]


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON so that readers see either the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(temporary, path)


def typed(frame: DataFrame, columns: tuple[schemas.Column, ...]) -> DataFrame:
    """Cast string columns to their declared types; a value that does not parse becomes null (``try_cast``)."""
    from pyspark.sql import functions as F

    return frame.select([F.col(name).try_cast(kind).alias(name) for name, kind, _ in columns])


def read_reference(spark: SparkSession, zones: Layout, name: str) -> DataFrame:
    """A reference table (weather, planes, airports, airlines) from the landing zone, typed."""
    columns = schemas.REFERENCE[name]
    raw = spark.read.csv(
        str(zones.reference / f"{name}.csv"),
        header=True,
        nullValue="NA",
        schema=", ".join(f"`{n}` string" for n, _, _ in columns),
    )
    return typed(raw, columns)

"""Feeder: landing CSVs -> bronze Parquet (partitioned by year/month), with schema validation and quarantine.

A landing file is ingested once; a re-delivered file (new size or modification time) is ingested again and
replaces its month. A file whose header differs from the declared schema (:data:`lakehouse.schemas.FLIGHTS`),
or that holds rows with an empty required column, an unparsable value or a date outside its month, is
moved to the quarantine zone with a ``.reason.json`` next to it, and none of its rows reach bronze.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse import Layout, layout, schemas
from lakehouse._io import read_json, write_json
from tasklens.spark import JobResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["LandingFile", "pending_files", "run", "validate_header", "validate_rows"]

_NAME = re.compile(r"^flights_(\d{4})-(\d{2})\.csv$")
DECLARED = schemas.column_names(schemas.FLIGHTS)


@dataclass(frozen=True)
class LandingFile:
    path: Path
    month: str  # YYYY-MM

    @property
    def fingerprint(self) -> dict[str, int]:
        stat = self.path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def pending_files(zones: Layout, month: str | None = None, *, include_late: bool = True) -> list[LandingFile]:
    """Landing files not ingested yet in their current version: ``month``'s, plus earlier late ones."""
    manifest = read_json(zones.manifest, {"files": {}})["files"]
    found = []
    for path in sorted(zones.landing.glob("flights_*.csv")):
        match = _NAME.match(path.name)
        if not match:
            continue
        candidate = LandingFile(path, f"{match[1]}-{match[2]}")
        if month and (candidate.month > month or (candidate.month < month and not include_late)):
            continue
        record = manifest.get(path.name)
        if record and {k: record.get(k) for k in ("size", "mtime_ns")} == candidate.fingerprint:
            continue
        found.append(candidate)
    return found


def validate_header(path: Path) -> str | None:
    """The reason ``path``'s header breaks the declared schema, or None when it matches exactly."""
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    if header == DECLARED:
        return None
    missing = [c for c in DECLARED if c not in header]
    unexpected = [c for c in header if c not in DECLARED]
    if missing or unexpected:
        return f"schema drift: missing columns {missing}, unexpected columns {unexpected}"
    return f"columns out of order: {header}"


def validate_rows(raw: DataFrame) -> DataFrame:
    """Typed rows plus ``_invalid``: a required value is missing, a value does not parse, or the row's date
    lies outside its file's month (``_file_month``). ``raw`` holds the declared columns as strings; any other
    ``_``-prefixed column is passed through.
    """
    from pyspark.sql import functions as F

    def any_of(conditions: list[Any]) -> Any:
        combined = conditions[0]
        for condition in conditions[1:]:
            combined = combined | condition
        return combined

    unparsable = any_of(
        [F.col(n).isNotNull() & F.col(n).try_cast(kind).isNull() for n, kind, _ in schemas.FLIGHTS if kind != "string"]
    )
    passthrough = [c for c in raw.columns if c.startswith("_")]
    staged = raw.select(
        *[F.col(n).try_cast(kind).alias(n) for n, kind, _ in schemas.FLIGHTS],
        *passthrough,
        unparsable.alias("_unparsable"),
    )
    broken = any_of([F.col(n).isNull() for n in schemas.required_columns(schemas.FLIGHTS)])
    misfiled = F.format_string("%04d-%02d", F.col("year"), F.col("month")) != F.col("_file_month")
    invalid = F.coalesce(broken | misfiled | F.col("_unparsable"), F.lit(True))
    return staged.withColumn("_invalid", invalid).drop("_unparsable")


def _quarantine(zones: Layout, landing: LandingFile, reason: str, rows: int) -> Path:
    zones.quarantine.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = zones.quarantine / f"{landing.path.stem}.{stamp}.csv"
    shutil.move(str(landing.path), target)
    write_json(
        target.with_suffix(".reason.json"),
        {"file": landing.path.name, "month": landing.month, "reason": reason, "rows": rows},
    )
    return target


def run(
    spark: SparkSession, *, root: str | None = None, month: str | None = None, include_late: bool = True
) -> JobResult:
    """Ingest ``month``'s landing file (and late files of earlier months) into bronze; quarantine bad files."""
    from pyspark.sql import functions as F

    zones = layout(root)
    candidates = pending_files(zones, month, include_late=include_late)
    manifest = read_json(zones.manifest, {"files": {}})
    quarantined: list[dict[str, Any]] = []
    records_in = records_rejected = 0

    readable: list[LandingFile] = []
    for candidate in candidates:
        reason = validate_header(candidate.path)
        if reason is None:
            readable.append(candidate)
            continue
        rows = max(0, sum(1 for _ in candidate.path.open(encoding="utf-8")) - 1)
        fingerprint = candidate.fingerprint
        target = _quarantine(zones, candidate, reason, rows)
        records_in += rows
        records_rejected += rows
        quarantined.append({"file": candidate.path.name, "month": candidate.month, "reason": reason, "rows": rows})
        manifest["files"][candidate.path.name] = {
            **fingerprint,
            "status": "quarantined",
            "reason": reason,
            "rows": rows,
            "moved_to": str(target),
        }

    ingested: dict[str, int] = {}
    if readable:
        fingerprints = {c.path.name: c.fingerprint for c in readable}
        raw = spark.read.csv(
            [str(c.path) for c in readable],
            header=True,
            nullValue="NA",
            schema=", ".join(f"`{name}` string" for name in DECLARED),
        )
        raw = raw.withColumn("_source_file", F.col("_metadata.file_name")).withColumn(
            "_file_month", F.regexp_extract(F.col("_metadata.file_name"), r"flights_(\d{4}-\d{2})\.csv$", 1)
        )
        checked = validate_rows(raw).cache()  # parsed once: counted per file, then written
        per_file = {
            row["_file_month"]: (int(row["rows"]), int(row["invalid"]))
            for row in checked.groupBy("_file_month")
            .agg(F.count("*").alias("rows"), F.sum(F.col("_invalid").cast("int")).alias("invalid"))
            .collect()
        }
        good = []
        for candidate in readable:
            rows, invalid = per_file.get(candidate.month, (0, 0))
            records_in += rows
            if invalid:
                reason = f"{invalid} of {rows} rows break the declared schema (truncated or corrupt delivery)"
                target = _quarantine(zones, candidate, reason, rows)
                records_rejected += rows
                quarantined.append(
                    {"file": candidate.path.name, "month": candidate.month, "reason": reason, "rows": rows}
                )
                manifest["files"][candidate.path.name] = {
                    **fingerprints[candidate.path.name],
                    "status": "quarantined",
                    "reason": reason,
                    "rows": rows,
                    "moved_to": str(target),
                }
            elif rows:
                good.append(candidate)
                ingested[candidate.month] = rows
        if good:
            (
                checked.filter(F.col("_file_month").isin([c.month for c in good]))
                .drop("_invalid", "_file_month")
                .withColumn("_ingested_at", F.current_timestamp())
                .write.mode("overwrite")
                .option("partitionOverwriteMode", "dynamic")
                .partitionBy("year", "month")
                .parquet(str(zones.bronze))
            )
            for candidate in good:
                manifest["files"][candidate.path.name] = {
                    **fingerprints[candidate.path.name],
                    "status": "ingested",
                    "rows": ingested[candidate.month],
                    "ingested_at": datetime.now(timezone.utc).isoformat(),
                }
        checked.unpersist()
    write_json(zones.manifest, manifest)
    return JobResult(
        records_in=records_in,
        records_out=sum(ingested.values()),
        records_rejected=records_rejected,
        outputs={"ingested": ingested, "quarantined": quarantined, "bronze": str(zones.bronze)},
    )

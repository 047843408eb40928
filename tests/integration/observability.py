"""Helpers for the observability integration tests: a StatsD UDP sink and event-stream readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parent / "dags"


from tasklens.testing import StatsdSink, parse_statsd_line  # noqa: E402 - moved to tasklens.testing

__all__ = ["DAGS", "StatsdSink", "parse_statsd_line", "read_stream"]


def read_stream(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of an event stream, rotated files included (oldest first)."""
    files = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    if path.exists():
        files.append(path)
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]

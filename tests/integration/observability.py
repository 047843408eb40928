"""Helpers for the observability integration tests: a StatsD UDP sink and event-stream readers."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parent / "dags"


def parse_statsd_line(line: str) -> tuple[str, dict[str, str], str, str]:
    """Parse a line the way statsd_exporter does with InfluxDB tags: ``name,k=v,k2=v2:value|type``."""
    name_part, _, rest = line.partition(":")
    name, *tags = name_part.split(",")
    labels = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        assert sep and key and value, f"statsd_exporter would reject tag {tag!r} in {line!r}"
        labels[key] = value
    value, stat_type = rest.split("|")[:2]
    return name, labels, value, stat_type


def _is_tasklens(line: str) -> bool:
    name = line.split(",")[0].split(":")[0]
    return name.startswith("tasklens.") or ".tasklens." in name


class StatsdSink:
    """A UDP socket on 127.0.0.1 (free port) collecting every StatsD line sent to it, until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._receive, name="statsd-sink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return
            if data == b"stop":
                return
            self.lines.extend(line for line in data.decode("utf-8").split("\n") if line)

    def drain(self) -> list[str]:
        """Every line received so far (a marker sent to ourselves makes sure earlier packets are read)."""
        done = threading.Event()
        marker = f"sink.marker.{id(done)}:1|c"
        self.sock.sendto(marker.encode(), ("127.0.0.1", self.port))
        for _ in range(1000):
            if marker in self.lines:
                break
            done.wait(0.01)
        return [line for line in self.lines if not line.startswith("sink.marker.")]

    def tasklens_lines(self) -> list[str]:
        """Raw tasklens lines received so far (with or without a ``statsd_prefix``)."""
        return [line for line in self.drain() if _is_tasklens(line)]

    def tasklens(self, dag_id: str | None = None) -> list[tuple[str, dict[str, str], str, str]]:
        """Parsed tasklens lines, optionally only those labelled with ``dag_id``."""
        parsed = [parse_statsd_line(line) for line in self.tasklens_lines()]
        return [p for p in parsed if dag_id is None or p[1].get("dag_id") == dag_id]

    def close(self) -> None:
        self.sock.sendto(b"stop", ("127.0.0.1", self.port))
        self._thread.join(5)
        self.sock.close()

    def env(self) -> dict[str, str]:
        """Airflow ``[metrics]`` settings pointing StatsD at this sink."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }


def read_stream(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of an event stream, rotated files included (oldest first)."""
    files = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    if path.exists():
        files.append(path)
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
